//! ControllerPublishVolume / ControllerUnpublishVolume: hotplug into the VM
//! (RWO) or enabling the NFS export (RWX), confirmed by watching the host.

use std::collections::HashMap;

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use tokio::time::Instant;

use super::ControllerService;
use crate::capabilities::shape_of;
use crate::contexts::publish as publish_context;
use crate::error::{Error, Result};
use crate::host::kubevirt::{Attachment, DiskSpec, Vm};
use crate::host::Feature;
use crate::names;

fn host_pv(pvc: &PersistentVolumeClaim) -> String {
    crate::host::pvc::host_pv_name(pvc).unwrap_or_default().to_string()
}

impl ControllerService {
    pub(super) async fn publish(
        &self,
        req: csi::ControllerPublishVolumeRequest,
        deadline: Instant,
    ) -> Result<csi::ControllerPublishVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        names::validate_node_id(&req.node_id)?;
        let cap = req
            .volume_capability
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("volume capability is required".into()))?;
        let shape = shape_of(cap)?;
        let (id, vm) = (req.volume_id.clone(), req.node_id.clone());
        // A publish bound to be refused must not take the volume's guard: the detach it waits
        // for would be ABORTED, and with both retried in step (one attacher, same backoff) the
        // detach could lose every time. Checked again under the guard below, on this same look
        // if no other operation on the volume ran since (it alone hot-plugs), else a fresh one.
        let early_look = if shape.shared {
            None
        } else {
            let quiet = self.locks.quiet(&id);
            let (attachments, vm_obj) = self.host.attachments_and_vm(&id, &vm).await?;
            self.refuse_if_attached_elsewhere(&id, &vm, &attachments)?;
            quiet.map(|q| (q, attachments, vm_obj))
        };
        // Publishes of one RWX volume to several VMs all ask for the same export: they
        // share the volume (and exclude an unpublish that might disable it).
        let _guard = if shape.shared { self.locks.try_lock_shared(&id)? } else { self.locks.try_lock(&id)? };
        tracing::info!(volume = %id, node = %vm, readonly = req.readonly, "ControllerPublishVolume");

        let pvc = self.host.get_pvc(&id).await?.ok_or_else(|| Error::NotFound(format!("volume {id} not found")))?;
        // A volume the upstream driver made becomes this driver's here (controller/adopt.rs).
        let pvc = self.adopt_if_upstream(pvc).await;
        let no_vm = || Error::NotFound(format!("node {vm}: no such VM in namespace {}", self.host.namespace));
        // The host PVC's own record decides, as in unpublish: a volume_context
        // (which a static PV can carry anything in) must not turn a disk into an export.
        if crate::host::pvc::is_nfs_export(&pvc) {
            let vm_obj = self.host.get_vm(&vm).await?.ok_or_else(no_vm)?;
            self.refuse_unless_running(&id, &vm, &vm_obj)?;
            if shape.block {
                return Err(Error::InvalidArgument(format!(
                    "volume {id} is a shared filesystem; it cannot be published as a block device"
                )));
            }
            return self.publish_shared(&pvc, deadline).await;
        }
        if shape.shared {
            return Err(Error::InvalidArgument(format!(
                "volume {id} is a single-node volume; multi-node access modes need an RWX volume"
            )));
        }

        // One listing answers everything below: does the VM exist, who holds the volume, and
        // how many disks the VM already has (each host call is one more chance to fail).
        let (attachments, vm_obj) = match early_look {
            Some((quiet, attachments, vm_obj)) if self.locks.still_quiet(&quiet) => (attachments, vm_obj),
            _ => self.host.attachments_and_vm(&id, &vm).await?,
        };
        let vm_obj = vm_obj.ok_or_else(no_vm)?;
        self.refuse_unless_running(&id, &vm, &vm_obj)?;
        self.refuse_if_attached_elsewhere(&id, &vm, &attachments)?;
        let here = attachments.into_iter().find(|a| a.vm == vm);
        if let Some(a) = &here {
            if a.disk.is_some() && a.readonly() != req.readonly {
                return Err(Error::AlreadyExists(format!(
                    "volume {id} is already published to {vm} {}",
                    if a.readonly() { "read-only" } else { "read-write" }
                )));
            }
        } else {
            let hotplugged = vm_obj.hotplugged_volumes().count();
            let limit = self.settings.max_volumes_per_node;
            if limit > 0 && hotplugged as i64 >= limit {
                return Err(Error::ResourceExhausted(format!(
                    "VM {vm} already has {hotplugged} hot-plugged volumes (limit {limit})"
                )));
            }
        }
        let attached = match here {
            Some(a) if a.is_ready() && a.in_vm => a,
            Some(a) if a.in_vm || a.in_vmi => self.host.wait_attached(&vm, &id, deadline).await?,
            _ => {
                let disk = DiskSpec { virtio: false, serial: names::disk_serial(&id), readonly: req.readonly };
                {
                    let _turn = self.vm_queues.enter(&vm).await;
                    self.host.hotplug(&vm, &id, &disk).await?;
                }
                self.host.wait_attached(&vm, &id, deadline).await?
            }
        };
        let by_id = attached.by_id_name(&id);
        let size = crate::host::pvc::pvc_capacity(&pvc);
        Ok(csi::ControllerPublishVolumeResponse {
            publish_context: HashMap::from([
                (publish_context::BY_ID.to_string(), by_id),
                (publish_context::SIZE.to_string(), size.to_string()),
                (publish_context::SHARED.to_string(), "false".to_string()),
            ]),
        })
    }

    /// FAILED_PRECONDITION, at once, for a VM that is not running or that the guest
    /// has fenced (out-of-service taint): a disk plugged into a halted VM's spec
    /// would boot with it later although another node may own the volume by
    /// then, and waiting for it to become Ready would hold the volume's guard
    /// against the detach a failover needs. The attacher retries with backoff.
    fn refuse_unless_running(&self, id: &str, vm: &str, vm_obj: &Vm) -> Result<()> {
        if !vm_obj.is_running() {
            return Err(Error::FailedPrecondition(format!(
                "VM {vm} is not running ({}): not publishing volume {id} to it",
                vm_obj.status_for_messages()
            )));
        }
        if self.guest.as_ref().is_some_and(|g| g.node_out_of_service(vm)) {
            return Err(Error::FailedPrecondition(format!(
                "the guest node of VM {vm} is out of service (fenced): not publishing volume {id} to it"
            )));
        }
        Ok(())
    }

    /// RWO: FAILED_PRECONDITION while any other VM holds the volume, on the host or (with
    /// guest access) according to the guest's VolumeAttachments.
    fn refuse_if_attached_elsewhere(&self, id: &str, vm: &str, attachments: &[Attachment]) -> Result<()> {
        if let Some(other) = attachments.iter().find(|a| a.vm != vm) {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is attached to VM {} (phase {}); detach it there first",
                other.vm,
                if other.phase().is_empty() { "requested" } else { other.phase() }
            )));
        }
        if let Some(guest) = &self.guest {
            let elsewhere = guest.attached_elsewhere(id, vm);
            if !elsewhere.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "volume {id} is still attached in the guest cluster to node(s) {}",
                    elsewhere.join(", ")
                )));
            }
        }
        Ok(())
    }

    async fn publish_shared(
        &self,
        pvc: &PersistentVolumeClaim,
        deadline: Instant,
    ) -> Result<csi::ControllerPublishVolumeResponse> {
        self.host
            .require(Feature::Rwx, "publishing an RWX volume needs Harvester ≥ v1.4")
            .await
            .map_err(Error::FailedPrecondition)?;
        let pv = host_pv(pvc);
        if pv.is_empty() {
            return Err(Error::Unavailable(format!(
                "host volume {} is not bound yet",
                pvc.metadata.name.as_deref().unwrap_or("")
            )));
        }
        // Re-created when lost (a host-side cleanup or an old driver deleted it).
        self.host.ensure_nfs(&pv).await?;
        self.host.set_nfs_desired(&pv, true).await?;
        self.host.wait_nfs_ready(&pv, deadline).await?;
        Ok(csi::ControllerPublishVolumeResponse {
            publish_context: HashMap::from([
                (publish_context::SHARED.to_string(), "true".to_string()),
                (publish_context::EXPORT.to_string(), pv),
            ]),
        })
    }

    pub(super) async fn unpublish(
        &self,
        req: csi::ControllerUnpublishVolumeRequest,
        deadline: Instant,
    ) -> Result<csi::ControllerUnpublishVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        if !req.node_id.is_empty() {
            names::validate_node_id(&req.node_id)?;
        }
        let id = req.volume_id.clone();
        let _guard = self.locks.try_lock(&id)?;
        tracing::info!(volume = %id, node = %req.node_id, "ControllerUnpublishVolume");
        let pvc = self.host.get_pvc(&id).await?;
        if let Some(p) = &pvc {
            if crate::host::pvc::is_nfs_export(p) {
                self.unpublish_shared(p, &req.node_id).await?;
                return Ok(csi::ControllerUnpublishVolumeResponse {});
            }
        }
        // A missing host PVC still gets removed from VMs that list it (#3272). One
        // named VM is read alone; without one, every VM that holds the volume.
        let targets: Vec<String> = if req.node_id.is_empty() {
            self.host.attachments(&id).await?.into_iter().map(|a| a.vm).collect()
        } else {
            let here = self.host.attachment(&req.node_id, &id).await?;
            if here.is_present() {
                vec![here.vm]
            } else {
                Vec::new()
            }
        };
        for vm in &targets {
            let _turn = self.vm_queues.enter(vm).await;
            self.host.unplug(vm, &id).await?;
        }
        for vm in &targets {
            self.host.wait_detached(vm, &id, deadline).await?;
        }
        Ok(csi::ControllerUnpublishVolumeResponse {})
    }

    /// The export stays up while any guest node or pod still uses it.
    async fn unpublish_shared(&self, pvc: &PersistentVolumeClaim, node: &str) -> Result<()> {
        let pv = host_pv(pvc);
        if pv.is_empty() {
            return Ok(());
        }
        let volume = pvc.metadata.name.clone().unwrap_or_default();
        let Some(guest) = &self.guest else {
            tracing::warn!(volume = %volume, "no guest cluster access: leaving the NFS export enabled (cannot tell who else uses it)");
            return Ok(());
        };
        let users = guest.export_users(&volume, node);
        if !users.is_empty() {
            tracing::info!(volume = %volume, users = %users.join(", "), "export still in use; keeping it enabled");
            return Ok(());
        }
        match self.host.get_nfs(&pv).await? {
            None => Ok(()),
            Some(_) => {
                tracing::info!(volume = %volume, export = %pv, "no user left; disabling the NFS export");
                self.host.set_nfs_desired(&pv, false).await
            }
        }
    }
}
