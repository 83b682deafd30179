//! Every request the Identity and Controller services decode: the first byte
//! picks the RPC, the second which host features are on, the rest is the
//! protobuf body. A body that decodes runs through the service exactly as
//! tonic would hand it over, against a host that can never be reached: bad
//! input must be refused with a proper code (never a panic, never INTERNAL
//! or UNKNOWN), and good input ends in UNAVAILABLE from the host.

#![no_main]

use std::sync::Arc;
use std::time::Duration;

use csi_proto::csi::v1 as csi;
use csi_proto::{Controller as _, Identity as _};
use harvester_csi_driver::controller::{ControllerService, ControllerSettings, VmQueues};
use harvester_csi_driver::guard::VolumeLocks;
use harvester_csi_driver::host::{Feature, Host};
use harvester_csi_driver::identity::IdentityService;
use harvester_csi_driver::metrics::Metrics;
use harvester_csi_fuzz::{assert_proper_status, block_on, unreachable_host_client};
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// Host features the fuzzer switches on or off with the second byte: a feature
/// that is off makes the RPC probe the host again first.
const FEATURES: [Feature; 8] = [
    Feature::Rwx,
    Feature::HostStorageClasses,
    Feature::HostVolumeAttachments,
    Feature::LonghornVolumeStatus,
    Feature::OnlineExpansion,
    Feature::Snapshots,
    Feature::RemoteBackups,
    Feature::DeclarativeHotplug,
];

macro_rules! rpc {
    ($service:expr, $method:ident, $request:ty, $body:expr) => {{
        // What tonic refuses before the service sees it is not the driver's to judge.
        let Ok(request) = <$request>::decode($body) else { return };
        if let Err(status) = $service.$method(tonic::Request::new(request)).await {
            assert_proper_status(stringify!($method), &status);
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let [which, features, body @ ..] = data else { return };
    block_on(async {
        let metrics = Arc::new(Metrics::default());
        let client = unreachable_host_client();
        let host = Host::new(client.clone(), "guest-ns".into(), metrics.clone());
        for (bit, feature) in FEATURES.iter().enumerate() {
            host.features.set(*feature, features & (1 << bit) != 0, "switched off by the fuzzer");
        }
        let controller = ControllerService {
            host,
            guest: None,
            locks: VolumeLocks::default(),
            vm_queues: VmQueues::default(),
            settings: ControllerSettings {
                host_storage_class: None,
                cluster_id: Some("fuzz-cluster".into()),
                timeout: Duration::from_secs(30),
                max_volumes_per_node: 32,
                accessible_topology: [("topology.harvesterhci.io/host-cluster".to_string(), "fuzz".to_string())]
                    .into(),
            },
            metrics: metrics.clone(),
        };
        let identity = IdentityService { host_client: Some(client), metrics, controller: true };
        match which % 20 {
            0 => rpc!(controller, create_volume, csi::CreateVolumeRequest, body),
            1 => rpc!(controller, delete_volume, csi::DeleteVolumeRequest, body),
            2 => rpc!(controller, controller_publish_volume, csi::ControllerPublishVolumeRequest, body),
            3 => rpc!(controller, controller_unpublish_volume, csi::ControllerUnpublishVolumeRequest, body),
            4 => rpc!(controller, validate_volume_capabilities, csi::ValidateVolumeCapabilitiesRequest, body),
            5 => rpc!(controller, list_volumes, csi::ListVolumesRequest, body),
            6 => rpc!(controller, controller_list_volume_health, csi::ControllerListVolumeHealthRequest, body),
            7 => rpc!(controller, controller_get_volume_health, csi::ControllerGetVolumeHealthRequest, body),
            8 => rpc!(controller, get_capacity, csi::GetCapacityRequest, body),
            9 => rpc!(controller, controller_get_capabilities, csi::ControllerGetCapabilitiesRequest, body),
            10 => rpc!(controller, create_snapshot, csi::CreateSnapshotRequest, body),
            11 => rpc!(controller, delete_snapshot, csi::DeleteSnapshotRequest, body),
            12 => rpc!(controller, list_snapshots, csi::ListSnapshotsRequest, body),
            13 => rpc!(controller, get_snapshot, csi::GetSnapshotRequest, body),
            14 => rpc!(controller, controller_expand_volume, csi::ControllerExpandVolumeRequest, body),
            15 => rpc!(controller, controller_get_volume, csi::ControllerGetVolumeRequest, body),
            16 => rpc!(controller, controller_modify_volume, csi::ControllerModifyVolumeRequest, body),
            17 => rpc!(identity, get_plugin_info, csi::GetPluginInfoRequest, body),
            18 => rpc!(identity, get_plugin_capabilities, csi::GetPluginCapabilitiesRequest, body),
            _ => rpc!(identity, probe, csi::ProbeRequest, body),
        }
    });
});
