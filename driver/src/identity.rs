//! The CSI Identity service. `Probe` is ready only while the host API answers.

use std::sync::Arc;
use std::time::Duration;

use csi_proto::csi::v1 as csi;
use tonic::{Request, Response, Status};

use crate::metrics::Metrics;
use crate::names::DRIVER_NAME;

pub struct IdentityService {
    pub host_client: Option<kube::Client>,
    pub metrics: Arc<Metrics>,
    pub controller: bool,
}

#[tonic::async_trait]
impl csi_proto::Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _r: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: [("csi-spec".to_string(), csi_proto::CSI_SPEC_VERSION.to_string())].into(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _r: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        use csi::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
        let mut caps = vec![csi::PluginCapability {
            r#type: Some(Type::Service(Service { r#type: service::Type::VolumeAccessibilityConstraints as i32 })),
        }];
        if self.controller {
            caps.push(csi::PluginCapability {
                r#type: Some(Type::Service(Service { r#type: service::Type::ControllerService as i32 })),
            });
        }
        caps.push(csi::PluginCapability {
            r#type: Some(Type::VolumeExpansion(VolumeExpansion { r#type: volume_expansion::Type::Online as i32 })),
        });
        Ok(Response::new(csi::GetPluginCapabilitiesResponse { capabilities: caps }))
    }

    async fn probe(&self, _r: Request<csi::ProbeRequest>) -> Result<Response<csi::ProbeResponse>, Status> {
        let timer = self.metrics.start_rpc("Probe");
        let ready = match &self.host_client {
            None => true,
            Some(c) => crate::host::reachable(c, Duration::from_secs(5)).await,
        };
        if !ready {
            tracing::warn!("probe: the Harvester API is not reachable");
        }
        timer.finish(tonic::Code::Ok);
        Ok(Response::new(csi::ProbeResponse { ready: Some(ready) }))
    }
}
