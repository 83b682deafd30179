//! CreateVolume and DeleteVolume: one host PVC per guest volume (plus, for
//! Longhorn RWX, its NetworkFilesystem), idempotent by observation.

use std::collections::BTreeMap;

use csi_proto::csi::v1 as csi;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedLocalObjectReference, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::ObjectMeta;
use serde_json::json;
use tokio::time::Instant;

use super::ControllerService;
use crate::capabilities::{shape_of_all, Shape};
use crate::contexts;
use crate::error::{Error, Result};
use crate::host::pvc::{pvc_capacity, pvc_phase, pvc_request};
use crate::host::{str_at, Feature, LONGHORN_PROVISIONER};
use crate::names::{self, keys, SnapshotId};

/// Longhorn's smallest volume; smaller requests are raised to it.
pub const MIN_VOLUME_BYTES: u64 = 10 << 20;
/// Longhorn rounds volume sizes up to this step.
pub const LONGHORN_ALIGN_BYTES: u64 = 2 << 20;
/// When the CO asks for no particular size.
pub const DEFAULT_VOLUME_BYTES: u64 = 1 << 30;

/// StorageClass parameters this driver understands.
pub mod params {
    pub const HOST_STORAGE_CLASS: &str = "hostStorageClass";
    pub const HOST_VOLUME_MODE: &str = "hostVolumeMode";
    pub const HOST_ACCESS_MODE: &str = "hostAccessMode";
    pub const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
    pub const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
    pub const PV_NAME: &str = "csi.storage.k8s.io/pv/name";
    pub const KNOWN: &[&str] = &[HOST_STORAGE_CLASS, HOST_VOLUME_MODE, HOST_ACCESS_MODE];
}

#[derive(Debug, Clone)]
struct Request {
    /// The volume id: the host PVC name.
    name: String,
    /// The name the CO asked for (differs from `name` when hashed).
    csi_name: String,
    shape: Shape,
    size: u64,
    limit: u64,
    host_class: Option<String>,
    host_volume_mode: String,
    host_access_mode: String,
    source: Option<Source>,
    guest_pvc: Option<(String, String)>,
    guest_pv: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Source {
    Snapshot(String),
    Backup { namespace: String, name: String },
    Volume(String),
}

fn parse_size(range: Option<&csi::CapacityRange>) -> Result<(u64, u64)> {
    let Some(r) = range else { return Ok((DEFAULT_VOLUME_BYTES, 0)) };
    if r.required_bytes < 0 || r.limit_bytes < 0 {
        return Err(Error::InvalidArgument("capacity range must not be negative".into()));
    }
    let (required, limit) = (r.required_bytes as u64, r.limit_bytes as u64);
    if limit > 0 && required > limit {
        return Err(Error::InvalidArgument(format!("required bytes {required} exceed the limit {limit}")));
    }
    if limit > 0 && limit < MIN_VOLUME_BYTES {
        return Err(Error::OutOfRange(format!(
            "limit {limit} is below the smallest volume ({MIN_VOLUME_BYTES} bytes)"
        )));
    }
    let size =
        if required == 0 { DEFAULT_VOLUME_BYTES.min(if limit > 0 { limit } else { u64::MAX }) } else { required };
    Ok((size.max(MIN_VOLUME_BYTES), limit))
}

fn parse_request(req: &csi::CreateVolumeRequest) -> Result<Request> {
    let id = names::volume_id_for(&req.name)?;
    let shape = shape_of_all(&req.volume_capabilities)?;
    let (size, limit) = parse_size(req.capacity_range.as_ref())?;
    for key in req.parameters.keys() {
        if !params::KNOWN.contains(&key.as_str()) && !key.starts_with("csi.storage.k8s.io/") {
            return Err(Error::InvalidArgument(format!(
                "unknown StorageClass parameter {key:?}; this driver understands {}",
                params::KNOWN.join(", ")
            )));
        }
    }
    let param = |k: &str| req.parameters.get(k).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    let host_volume_mode = match param(params::HOST_VOLUME_MODE).as_deref().map(str::to_ascii_lowercase).as_deref() {
        _ if shape.shared => "Filesystem".to_string(),
        None | Some("block") => "Block".into(),
        Some("filesystem") => "Filesystem".into(),
        Some(other) => {
            return Err(Error::InvalidArgument(format!("hostVolumeMode {other:?} must be block or filesystem")))
        }
    };
    let host_access_mode = match param(params::HOST_ACCESS_MODE).as_deref() {
        None | Some("ReadWriteMany") => "ReadWriteMany".to_string(),
        Some("ReadWriteOnce") if !shape.shared => "ReadWriteOnce".into(),
        Some("ReadWriteOnce") => {
            return Err(Error::InvalidArgument("hostAccessMode ReadWriteOnce cannot serve a multi-node volume".into()))
        }
        Some(other) => {
            return Err(Error::InvalidArgument(format!(
                "hostAccessMode {other:?} must be ReadWriteMany or ReadWriteOnce"
            )))
        }
    };
    let source = match req.volume_content_source.as_ref().and_then(|s| s.r#type.as_ref()) {
        None => None,
        Some(csi::volume_content_source::Type::Snapshot(s)) => Some(match SnapshotId::parse(&s.snapshot_id)? {
            SnapshotId::Local(n) => Source::Snapshot(n),
            SnapshotId::Backup { namespace, name } => Source::Backup { namespace, name },
        }),
        Some(csi::volume_content_source::Type::Volume(v)) => {
            names::validate_volume_id(&v.volume_id)?;
            Some(Source::Volume(v.volume_id.clone()))
        }
    };
    let guest_pvc = match (param(params::PVC_NAMESPACE), param(params::PVC_NAME)) {
        (Some(ns), Some(n)) => Some((ns, n)),
        _ => None,
    };
    Ok(Request {
        name: id,
        csi_name: req.name.clone(),
        shape,
        size,
        limit,
        host_class: param(params::HOST_STORAGE_CLASS),
        host_volume_mode,
        host_access_mode,
        source,
        guest_pvc,
        guest_pv: param(params::PV_NAME),
    })
}

fn quantity(bytes: u64) -> Quantity {
    Quantity(bytes.to_string())
}

impl ControllerService {
    /// The host class to use and its provisioner (None when it could not be read).
    async fn resolve_class(&self, r: &Request) -> Result<(Option<String>, Option<String>)> {
        let explicit =
            r.host_class.clone().or_else(|| self.settings.host_storage_class.clone().filter(|s| !s.is_empty()));
        match &explicit {
            Some(name) => match self.host.get_storage_class(name).await {
                Ok(Some(sc)) => Ok((explicit.clone(), Some(sc.provisioner))),
                Ok(None) => Err(Error::NotFound(format!("host StorageClass {name:?} does not exist on Harvester"))),
                // Old host RBAC cannot read classes (v1.2): go ahead and let the host decide.
                Err(e) if e.is_forbidden() => Ok((explicit.clone(), None)),
                Err(e) => Err(e),
            },
            None => match self.host.list_storage_classes().await {
                Ok(classes) => {
                    let default = classes.into_iter().find(|sc| {
                        sc.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                            .map(String::as_str)
                            == Some("true")
                    });
                    Ok((None, default.map(|sc| sc.provisioner)))
                }
                Err(e) if e.is_forbidden() => Ok((None, None)),
                Err(e) => Err(e),
            },
        }
    }

    fn ownership(&self, r: &Request) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut labels = BTreeMap::from([(keys::MANAGED_BY.to_string(), keys::MANAGED_BY_VALUE.to_string())]);
        let mut annotations = BTreeMap::new();
        if let Some(id) = &self.settings.cluster_id {
            labels.insert(keys::GUEST_CLUSTER.into(), names::label_value(id));
            annotations.insert(keys::GUEST_CLUSTER_ID.into(), id.clone());
        }
        if let Some((ns, n)) = &r.guest_pvc {
            annotations.insert(keys::GUEST_PVC_NAMESPACE.into(), ns.clone());
            annotations.insert(keys::GUEST_PVC_NAME.into(), n.clone());
        }
        if let Some(pv) = &r.guest_pv {
            annotations.insert(keys::GUEST_PV_NAME.into(), pv.clone());
        }
        if r.csi_name != r.name {
            annotations.insert(keys::CSI_NAME.into(), r.csi_name.clone());
        }
        annotations.insert(keys::SHARED.into(), r.shape.shared.to_string());
        (labels, annotations)
    }

    /// The PVC to create on the host for this request.
    async fn build_pvc(
        &self,
        r: &Request,
        class: Option<String>,
        provisioner: Option<&str>,
    ) -> Result<PersistentVolumeClaim> {
        let (labels, mut annotations) = self.ownership(r);
        let mut volume_mode = r.host_volume_mode.clone();
        let mut class = class;
        let mut data_source = None;
        let mut size = r.size;
        match &r.source {
            None | Some(Source::Backup { .. }) => {}
            Some(Source::Snapshot(name)) => {
                self.host
                    .require(Feature::Snapshots, "restoring a snapshot needs Harvester ≥ v1.7")
                    .await
                    .map_err(Error::FailedPrecondition)?;
                let snap = self
                    .host
                    .get_snapshot(name)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("snapshot {name} not found")))?;
                let snap_class =
                    str_at(&snap, &format!("/metadata/labels/{}", keys::SNAP_HOST_SC.replace('/', "~1"))).to_string();
                let snap_mode =
                    str_at(&snap, &format!("/metadata/labels/{}", keys::SNAP_HOST_VOLUME_MODE.replace('/', "~1")))
                        .to_string();
                if !snap_class.is_empty() {
                    class = Some(snap_class);
                }
                if !snap_mode.is_empty() && !r.shape.shared {
                    volume_mode = snap_mode;
                }
                let restore =
                    crate::host::pvc::quantity_bytes(&Quantity(str_at(&snap, "/status/restoreSize").to_string()))
                        .unwrap_or(0);
                if r.limit > 0 && restore > r.limit {
                    return Err(Error::OutOfRange(format!(
                        "snapshot {name} needs {restore} bytes, above the limit {}",
                        r.limit
                    )));
                }
                size = size.max(restore);
                data_source = Some(TypedLocalObjectReference {
                    api_group: Some("snapshot.storage.k8s.io".into()),
                    kind: "VolumeSnapshot".into(),
                    name: name.clone(),
                });
            }
            Some(Source::Volume(src)) => {
                let source = self
                    .host
                    .get_pvc(src)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("source volume {src} not found")))?;
                let src_size = pvc_capacity(&source);
                if r.limit > 0 && src_size > r.limit {
                    return Err(Error::OutOfRange(format!(
                        "source volume {src} is {src_size} bytes, above the limit {}",
                        r.limit
                    )));
                }
                size = size.max(src_size);
                class = source.spec.as_ref().and_then(|s| s.storage_class_name.clone()).or(class);
                data_source = Some(TypedLocalObjectReference {
                    api_group: None,
                    kind: "PersistentVolumeClaim".into(),
                    name: src.clone(),
                });
            }
        }
        if volume_mode == "Filesystem" && provisioner.is_some_and(|p| p != LONGHORN_PROVISIONER) {
            // Harvester then prepares a disk image on the filesystem volume for KubeVirt.
            annotations.insert(keys::VOLUME_FOR_VM.into(), "true".into());
        }
        Ok(PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(r.name.clone()),
                namespace: Some(self.host.namespace.clone()),
                labels: Some(labels),
                annotations: Some(annotations),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec![r.host_access_mode.clone()]),
                volume_mode: Some(volume_mode),
                storage_class_name: class,
                data_source,
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), quantity(size))])),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// An existing host PVC matches when it has the same shape and enough room.
    fn compatible(existing: &PersistentVolumeClaim, wanted: &PersistentVolumeClaim, r: &Request) -> Result<()> {
        let (e, w) = (existing.spec.clone().unwrap_or_default(), wanted.spec.clone().unwrap_or_default());
        let mut diffs = Vec::new();
        if e.access_modes != w.access_modes {
            diffs.push("access modes");
        }
        if e.volume_mode.as_deref().unwrap_or("Filesystem") != w.volume_mode.as_deref().unwrap_or("Filesystem") {
            diffs.push("volume mode");
        }
        if w.storage_class_name.is_some() && e.storage_class_name != w.storage_class_name {
            diffs.push("storage class");
        }
        if e.data_source.as_ref().map(|d| (&d.kind, &d.name)) != w.data_source.as_ref().map(|d| (&d.kind, &d.name)) {
            diffs.push("data source");
        }
        let existing_name = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::CSI_NAME))
            .cloned()
            .unwrap_or_else(|| r.name.clone());
        if existing_name != r.csi_name {
            diffs.push("name (hash collision)");
        }
        let have = pvc_request(existing);
        if have < r.size.min(pvc_request(wanted)) || (r.limit > 0 && have > r.limit) {
            diffs.push("size");
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(Error::AlreadyExists(format!("volume {} already exists with a different {}", r.name, diffs.join(", "))))
        }
    }

    pub(super) async fn create(
        &self,
        req: csi::CreateVolumeRequest,
        deadline: Instant,
    ) -> Result<csi::CreateVolumeResponse> {
        let r = parse_request(&req)?;
        let _guard = self.locks.try_lock(&r.name)?;
        tracing::info!(volume = %r.name, size = r.size, shared = r.shape.shared, block = r.shape.block, "CreateVolume");

        if r.shape.shared {
            // FAILED_PRECONDITION, not INVALID_ARGUMENT: the request is fine, the host does
            // not allow it now (its release or the guest's RBAC), and that can change. The
            // external-provisioner never retries an INVALID_ARGUMENT ("infeasible") claim.
            let needs = "RWX volumes need Harvester ≥ v1.4 with NetworkFilesystem access for the guest credentials";
            self.host.require(Feature::Rwx, needs).await.map_err(Error::FailedPrecondition)?;
        }
        let (class, provisioner) = self.resolve_class(&r).await?;
        if r.shape.shared {
            match provisioner.as_deref() {
                Some(LONGHORN_PROVISIONER) => {}
                Some(other) => {
                    return Err(Error::InvalidArgument(format!(
                        "RWX volumes are exported by Longhorn's share-manager; host class provisioner {other} cannot serve them"
                    )))
                }
                None => {
                    return Err(Error::FailedPrecondition(
                        "cannot tell whether the host class is Longhorn (StorageClasses unreadable); refusing to create an RWX volume that might never be exported".into(),
                    ))
                }
            }
            if let Some(name) = &class {
                if let Ok(Some(sc)) = self.host.get_storage_class(name).await {
                    if sc.parameters.as_ref().and_then(|p| p.get("migratable")).map(String::as_str) == Some("true") {
                        return Err(Error::InvalidArgument(format!(
                            "host class {name} is migratable; Longhorn exports only non-migratable RWX volumes over NFS (use a class such as longhorn-rwx)"
                        )));
                    }
                }
            }
        }

        // Longhorn allocates in 2 MiB steps: refuse a range it cannot meet before creating a host
        // volume that, after OUT_OF_RANGE, no CO call would ever delete.
        if provisioner.as_deref() == Some(LONGHORN_PROVISIONER) && r.limit > 0 && r.source.is_none() {
            let allocated = r.size.div_ceil(LONGHORN_ALIGN_BYTES) * LONGHORN_ALIGN_BYTES;
            if allocated > r.limit {
                return Err(Error::OutOfRange(format!(
                    "Longhorn would allocate {allocated} bytes (2 MiB steps), above the limit {}",
                    r.limit
                )));
            }
        }
        let pvc = match &r.source {
            Some(Source::Backup { namespace, name }) => self.restore_backup(&r, namespace, name, deadline).await?,
            _ => {
                let wanted = self.build_pvc(&r, class, provisioner.as_deref()).await?;
                match self.host.get_pvc(&r.name).await? {
                    Some(existing) => {
                        Self::compatible(&existing, &wanted, &r)?;
                        existing
                    }
                    None => match self.host.create_pvc(&wanted).await {
                        Ok(p) => p,
                        Err(e) if e.api_response().is_some_and(|a| a.reason == "AlreadyExists") => {
                            let existing = self
                                .host
                                .get_pvc(&r.name)
                                .await?
                                .ok_or_else(|| Error::Aborted("volume vanished while creating; retry".into()))?;
                            Self::compatible(&existing, &wanted, &r)?;
                            existing
                        }
                        Err(e) => return Err(e),
                    },
                }
            }
        };
        let bound = if pvc_phase(&pvc) == "Bound" {
            pvc
        } else {
            self.host
                .wait_pvc(&r.name, deadline, &format!("host volume {} to be bound", r.name), |p| {
                    pvc_phase(p) == "Bound"
                })
                .await?
        };
        if r.shape.shared {
            let pv = bound.spec.as_ref().and_then(|s| s.volume_name.clone()).unwrap_or_default();
            self.host.ensure_nfs(&pv).await?;
        }
        let capacity = pvc_capacity(&bound);
        if r.limit > 0 && capacity > r.limit {
            return Err(Error::OutOfRange(format!("the host allocated {capacity} bytes, above the limit {}", r.limit)));
        }
        let mut volume_context: std::collections::HashMap<String, String> = req
            .parameters
            .iter()
            .filter(|(k, _)| !k.starts_with("csi.storage.k8s.io/"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        volume_context.insert(contexts::volume::SHARED.into(), r.shape.shared.to_string());
        volume_context.insert(
            contexts::volume::HOST_VOLUME_MODE.into(),
            bound.spec.as_ref().and_then(|s| s.volume_mode.clone()).unwrap_or_else(|| "Filesystem".into()),
        );
        Ok(csi::CreateVolumeResponse {
            volume: Some(csi::Volume {
                capacity_bytes: capacity as i64,
                volume_id: r.name.clone(),
                volume_context,
                content_source: req.volume_content_source.clone(),
                accessible_topology: if self.settings.accessible_topology.is_empty() {
                    vec![]
                } else {
                    vec![csi::Topology { segments: self.settings.accessible_topology.clone().into_iter().collect() }]
                },
            }),
        })
    }

    /// Restore from a remote backup: a VolumeRemoteRestore named after the volume; the host makes the PVC.
    async fn restore_backup(
        &self,
        r: &Request,
        namespace: &str,
        name: &str,
        deadline: Instant,
    ) -> Result<PersistentVolumeClaim> {
        self.host
            .require(Feature::RemoteBackups, "restoring a remote backup needs Harvester ≥ v1.8")
            .await
            .map_err(Error::FailedPrecondition)?;
        let backup = self
            .host
            .get_backup(namespace, name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("backup {namespace}/{name} not found")))?;
        let size = crate::host::pvc::quantity_bytes(&Quantity(
            str_at(&backup, "/status/sourceSpec/resources/requests/storage").to_string(),
        ))
        .unwrap_or(0);
        if r.limit > 0 && size > r.limit {
            return Err(Error::OutOfRange(format!(
                "backup {namespace}/{name} needs {size} bytes, above the limit {}",
                r.limit
            )));
        }
        let (labels, _) = self.ownership(r);
        self.host.create_restore(&r.name, &format!("{namespace}/{name}"), json!(labels)).await?;
        // The host creates the PVC some time after the restore: not there yet is not an answer.
        let what = format!("restore of backup {namespace}/{name}");
        self.host.wait_pvc_bound(&r.name, deadline, &what).await
    }

    pub(super) async fn delete(
        &self,
        req: csi::DeleteVolumeRequest,
        _deadline: Instant,
    ) -> Result<csi::DeleteVolumeResponse> {
        names::validate_volume_id(&req.volume_id)?;
        let id = req.volume_id;
        let _guard = self.locks.try_lock(&id)?;
        tracing::info!(volume = %id, "DeleteVolume");
        let attached: Vec<String> = self.host.attachments(&id).await?.into_iter().map(|a| a.vm).collect();
        if !attached.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "volume {id} is still attached to VM(s) {}",
                attached.join(", ")
            )));
        }
        if self.host.features.enabled(Feature::RemoteBackups) && self.host.delete_restore(&id).await? {
            // The host's restore controller owns the restored PVC and removes it with the restore.
            return Ok(csi::DeleteVolumeResponse {});
        }
        let Some(pvc) = self.host.get_pvc(&id).await? else { return Ok(csi::DeleteVolumeResponse {}) };
        let shared = crate::host::pvc::is_nfs_export(&pvc);
        if shared {
            if let Some(pv) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                match self.host.delete_nfs(&pv).await {
                    Ok(()) => {}
                    // No NFS access (RWX off): there is no export object to remove.
                    Err(e) if e.is_forbidden() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.host.delete_pvc(&id).await?;
        Ok(csi::DeleteVolumeResponse {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn mount_cap(mode: i32) -> csi::VolumeCapability {
        csi::VolumeCapability {
            access_mode: Some(csi::volume_capability::AccessMode { mode }),
            access_type: Some(csi::volume_capability::AccessType::Mount(Default::default())),
        }
    }

    fn req(name: &str, params: &[(&str, &str)]) -> csi::CreateVolumeRequest {
        csi::CreateVolumeRequest {
            name: name.into(),
            volume_capabilities: vec![mount_cap(1)],
            parameters: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    #[rstest]
    #[case(None, Ok((DEFAULT_VOLUME_BYTES, 0)))]
    #[case(Some((1, 0)), Ok((MIN_VOLUME_BYTES, 0)))]
    #[case(Some((5 << 30, 0)), Ok((5 << 30, 0)))]
    #[case(Some((2 << 30, 1 << 30)), Err(tonic::Code::InvalidArgument))]
    #[case(Some((0, 1 << 20)), Err(tonic::Code::OutOfRange))]
    #[case(Some((-1, 0)), Err(tonic::Code::InvalidArgument))]
    fn sizes(#[case] range: Option<(i64, i64)>, #[case] want: std::result::Result<(u64, u64), tonic::Code>) {
        let r = range.map(|(required_bytes, limit_bytes)| csi::CapacityRange { required_bytes, limit_bytes });
        assert_eq!(parse_size(r.as_ref()).map_err(|e| e.code()), want);
    }

    #[rstest]
    #[case(&[], "Block")]
    #[case(&[("hostVolumeMode", "filesystem")], "Filesystem")]
    #[case(&[("hostVolumeMode", "Block")], "Block")]
    fn host_volume_mode(#[case] params: &[(&str, &str)], #[case] want: &str) {
        assert_eq!(parse_request(&req("pvc-a", params)).unwrap().host_volume_mode, want);
    }

    #[rstest]
    #[case(&[("hostVolumeMode", "tape")])]
    #[case(&[("hostAccesMode", "x")])]
    #[case(&[("hostAccessMode", "ReadOnlyMany")])]
    fn bad_parameters(#[case] params: &[(&str, &str)]) {
        assert_eq!(parse_request(&req("pvc-a", params)).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn provisioner_metadata_is_kept() {
        let r = parse_request(&req(
            "pvc-a",
            &[
                ("csi.storage.k8s.io/pvc/name", "data"),
                ("csi.storage.k8s.io/pvc/namespace", "apps"),
                ("csi.storage.k8s.io/pv/name", "pvc-a"),
            ],
        ))
        .unwrap();
        assert_eq!(r.guest_pvc, Some(("apps".into(), "data".into())));
        assert_eq!(r.guest_pv.as_deref(), Some("pvc-a"));
    }

    #[test]
    fn names_are_checked_before_anything() {
        assert!(parse_request(&req("../../etc", &[])).unwrap().name.starts_with("hcsi-"));
        assert_eq!(parse_request(&req("", &[])).unwrap_err().code(), tonic::Code::InvalidArgument);
    }
}
