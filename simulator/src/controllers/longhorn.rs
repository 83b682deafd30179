//! Longhorn (and the PV binder): a PVC of a StorageClass gets a volume — a
//! sparse backing file, for `driver.longhorn.io` also the Longhorn Volume CR,
//! its attachment ticket object and (RWX, non-migratable) a ShareManager — then
//! a PV, then Bound. Expansion grows the file; deletion cleans everything up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::queue::{self, Key, Requeue};
use super::volume_data::{backup_file, snapshot_file, RESTORE_FROM_BACKUP};
use super::webhooks::{LONGHORN, PVC_PROTECTION};
use super::Ctx;
use crate::api::meta;
use crate::api::quantity::{format_bytes, parse_bytes};
use crate::api::store::Event;

pub const LONGHORN_NS: &str = "longhorn-system";
const MIN_SIZE: u64 = 10 << 20;
const ALIGN: u64 = 2 << 20;

/// Longhorn's size rule: at least 10 MiB, rounded up to 2 MiB.
pub fn longhorn_size(requested: u64) -> u64 {
    requested.max(MIN_SIZE).div_ceil(ALIGN) * ALIGN
}

fn pod_claims(pod: &Value) -> Vec<String> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter_map(|x| x.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str))
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn map(_ctx: &Ctx, e: &Event) -> Vec<Key> {
    match (e.key.group.as_str(), e.key.plural.as_str()) {
        ("", "persistentvolumeclaims") => {
            // A claim going away is what releases its volume.
            let mut keys = vec![Key::new("pvc", &e.namespace, &e.name)];
            let pv = meta::str_at(&e.object, "/spec/volumeName");
            if !pv.is_empty() {
                keys.push(Key::new("pv", "", pv));
            }
            keys
        }
        ("", "persistentvolumes") => vec![Key::new("pv", "", &e.name)],
        ("", "pods") => {
            let mut claims = pod_claims(&e.object);
            if let Some(p) = &e.previous {
                claims.extend(pod_claims(p));
            }
            claims.into_iter().map(|c| Key::new("pvc", &e.namespace, &c)).collect()
        }
        _ => vec![],
    }
}

fn all(ctx: &Ctx) -> Vec<Key> {
    let mut keys: Vec<Key> = ctx
        .api
        .list("", "persistentvolumeclaims", None)
        .iter()
        .map(|p| Key::new("pvc", meta::namespace(p), meta::name(p)))
        .collect();
    keys.extend(ctx.api.list("", "persistentvolumes", None).iter().map(|p| Key::new("pv", "", meta::name(p))));
    keys
}

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    queue::run(ctx, "longhorn", shutdown, map, all, |ctx, key| async move {
        match key.kind {
            "pvc" => reconcile_pvc(&ctx, &key.namespace, &key.name).await,
            _ => reconcile_pv(&ctx, &key.name).await,
        }
    })
    .await
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Pods (not being deleted) that mount a claim.
pub fn pods_using(ctx: &Ctx, ns: &str, claim: &str) -> Vec<Arc<Value>> {
    ctx.api
        .list("", "pods", Some(ns))
        .into_iter()
        .filter(|p| !meta::is_deleting(p) && pod_claims(p).iter().any(|c| c == claim))
        .collect()
}

async fn reconcile_pvc(ctx: &Arc<Ctx>, ns: &str, name: &str) -> Result<Requeue, String> {
    let Some(pvc) = ctx.api.get_opt("", "persistentvolumeclaims", ns, name) else { return Ok(None) };
    let pvc_rt = ctx.rt("", "persistentvolumeclaims").map_err(err)?;
    if meta::is_deleting(&pvc) {
        if pods_using(ctx, ns, name).is_empty() {
            ctx.api
                .modify(&pvc_rt, ns, name, "", |obj| {
                    if !meta::finalizers(obj).iter().any(|f| f == PVC_PROTECTION) {
                        return false;
                    }
                    meta::remove_finalizer(obj, PVC_PROTECTION);
                    true
                })
                .map_err(err)?;
        }
        return Ok(None);
    }
    if meta::str_at(&pvc, "/spec/volumeName").is_empty() {
        return provision(ctx, &pvc).await;
    }
    let requeue = expand(ctx, &pvc).await?;
    // Pods using the claim changed (or an earlier sync failed): converge the
    // attachment state here too, so it does not hinge on the hotplug
    // controller's one-shot call succeeding.
    try_sync_attachment(ctx, ns, name)?;
    Ok(requeue)
}

/// Where a new volume's data comes from (restore, clone, backup), if anywhere.
fn data_source(ctx: &Ctx, pvc: &Value) -> Result<Option<(std::path::PathBuf, u64)>, String> {
    let ns = meta::namespace(pvc);
    if let Some(from) = meta::annotation(pvc, RESTORE_FROM_BACKUP) {
        let path = backup_file(&ctx.state_dir, from);
        let size = std::fs::metadata(&path).map(|m| m.len()).map_err(|e| format!("backup {from} has no data ({e})"))?;
        return Ok(Some((path, size)));
    }
    let Some(ds) =
        pvc.pointer("/spec/dataSourceRef").or_else(|| pvc.pointer("/spec/dataSource")).filter(|d| !d.is_null())
    else {
        return Ok(None);
    };
    let (kind, name) = (meta::str_at(ds, "/kind"), meta::str_at(ds, "/name"));
    match kind {
        "VolumeSnapshot" => {
            let vs = ctx
                .api
                .get_opt("snapshot.storage.k8s.io", "volumesnapshots", ns, name)
                .ok_or_else(|| format!("volumesnapshot {ns}/{name} not found"))?;
            if vs.pointer("/status/readyToUse") != Some(&json!(true)) {
                return Err(format!("volumesnapshot {ns}/{name} is not ready to use"));
            }
            let content = meta::str_at(&vs, "/status/boundVolumeSnapshotContentName");
            let path = snapshot_file(&ctx.state_dir, content);
            let size =
                std::fs::metadata(&path).map(|m| m.len()).map_err(|e| format!("snapshot {name} has no data ({e})"))?;
            Ok(Some((path, size)))
        }
        "PersistentVolumeClaim" => {
            let src = ctx
                .api
                .get_opt("", "persistentvolumeclaims", ns, name)
                .ok_or_else(|| format!("source persistentvolumeclaim {ns}/{name} not found"))?;
            let pv = meta::str_at(&src, "/spec/volumeName");
            if pv.is_empty() {
                return Err(format!("source persistentvolumeclaim {ns}/{name} is not bound"));
            }
            let path = ctx.devices.backing_file(pv);
            let size = std::fs::metadata(&path).map(|m| m.len()).map_err(|e| format!("source volume {pv}: {e}"))?;
            Ok(Some((path, size)))
        }
        other => Err(format!("unsupported data source kind {other:?}")),
    }
}

fn cluster_ip(volume: &str, salt: u32) -> String {
    let d = sha2::Sha256::digest(format!("{volume}/{salt}").as_bytes());
    format!("10.53.{}.{}", d[0], 1 + d[1] % 253)
}

async fn provision(ctx: &Arc<Ctx>, pvc: &Value) -> Result<Requeue, String> {
    let (ns, name) = (meta::namespace(pvc), meta::name(pvc));
    let pvc_rt = ctx.rt("", "persistentvolumeclaims").map_err(err)?;
    let sc_name = meta::str_at(pvc, "/spec/storageClassName").to_string();
    if sc_name.is_empty() {
        return Ok(None);
    }
    let Some(sc) = ctx.api.get_opt("storage.k8s.io", "storageclasses", "", &sc_name) else {
        ctx.event(
            pvc,
            "Warning",
            "ProvisioningFailed",
            &format!("storageclass.storage.k8s.io \"{sc_name}\" not found"),
        );
        return Ok(Some(Duration::from_secs(2)));
    };
    let provisioner = meta::str_at(&sc, "/provisioner").to_string();
    if meta::annotation(pvc, "volume.kubernetes.io/storage-provisioner").is_none() {
        ctx.api
            .modify(&pvc_rt, ns, name, "", |obj| {
                meta::set_annotation(obj, "volume.kubernetes.io/storage-provisioner", &provisioner);
                meta::set_annotation(obj, "volume.beta.kubernetes.io/storage-provisioner", &provisioner);
                true
            })
            .map_err(err)?;
        return Ok(Some(Duration::ZERO));
    }
    let timer = format!("provision/{}", meta::uid(pvc));
    if let Some(left) = ctx.timers.wait(&timer, Duration::from_millis(ctx.timing().provision_ms)) {
        return Ok(Some(left));
    }
    let requested = parse_bytes(meta::str_at(pvc, "/spec/resources/requests/storage")).unwrap_or(0);
    let longhorn = provisioner == LONGHORN;
    let source = match data_source(ctx, pvc) {
        Ok(s) => s,
        Err(why) => {
            ctx.event(pvc, "Warning", "ProvisioningFailed", &why);
            return Ok(Some(Duration::from_millis(500)));
        }
    };
    if let Some((_, src_size)) = &source {
        if requested < *src_size && longhorn_size(requested) < *src_size {
            ctx.event(
                pvc,
                "Warning",
                "ProvisioningFailed",
                &format!("requested volume size {requested} is less than the size {src_size} of the source"),
            );
            return Ok(Some(Duration::from_secs(2)));
        }
    }
    let size = if longhorn { longhorn_size(requested) } else { requested.max(1 << 20) };
    let pv_name = format!("pvc-{}", meta::uid(pvc));
    let modes: Vec<String> = pvc
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    let volume_mode = match meta::str_at(pvc, "/spec/volumeMode") {
        "" => "Filesystem".to_string(),
        m => m.to_string(),
    };
    let params = sc.get("parameters").cloned().unwrap_or_else(|| json!({}));
    let param = |k: &str| params.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let rwx = modes.iter().any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
    let access = if rwx {
        "rwx"
    } else if modes.iter().any(|m| m == "ReadWriteOncePod") {
        "rwop"
    } else {
        "rwo"
    };
    let migratable = param("migratable") == "true" && rwx;

    match &source {
        Some((src, _)) => {
            let dst = ctx.devices.backing_file(&pv_name);
            if !dst.exists() {
                if let Some(parent) = dst.parent() {
                    tokio::fs::create_dir_all(parent).await.map_err(err)?;
                }
                ctx.devices.copy_sparse(src, &dst).await.map_err(err)?;
            }
            ctx.devices.grow_backing_file(&pv_name, size).await.map_err(err)?;
        }
        None => ctx.devices.create_backing_file(&pv_name, size).await.map_err(err)?,
    }

    if longhorn {
        let vol_rt = ctx.rt("longhorn.io", "volumes").map_err(err)?;
        let replicas: i64 = param("numberOfReplicas").parse().unwrap_or(3);
        let stale: i64 = param("staleReplicaTimeout").parse().ok().filter(|v: &i64| *v > 0).unwrap_or(2880);
        ctx.api
            .ensure(
                &vol_rt,
                LONGHORN_NS,
                json!({
                    "apiVersion": "longhorn.io/v1beta2", "kind": "Volume",
                    "metadata": {"name": pv_name, "namespace": LONGHORN_NS, "labels": {"longhornvolume": pv_name}},
                    "spec": {
                        "size": size.to_string(), "numberOfReplicas": replicas, "staleReplicaTimeout": stale,
                        "accessMode": access, "migratable": migratable, "encrypted": false, "frontend": "blockdev",
                        "dataEngine": "v1", "dataLocality": "disabled", "fromBackup": "", "nodeID": "",
                    },
                    "status": {
                        "state": "detached", "robustness": "unknown", "currentNodeID": "", "actualSize": 0,
                        "kubernetesStatus": {"pvName": pv_name, "pvStatus": "Bound", "namespace": ns, "pvcName": name, "workloadsStatus": []},
                        "shareState": "", "shareEndpoint": "",
                    },
                }),
            )
            .map_err(err)?;
        let va_rt = ctx.rt("longhorn.io", "volumeattachments").map_err(err)?;
        ctx.api
            .ensure(
                &va_rt,
                LONGHORN_NS,
                json!({"apiVersion": "longhorn.io/v1beta2", "kind": "VolumeAttachment", "metadata": {"name": pv_name, "namespace": LONGHORN_NS},
                       "spec": {"volume": pv_name, "attachmentTickets": {}}, "status": {"attachmentTicketStatuses": {}}}),
            )
            .map_err(err)?;
        if rwx && !migratable && volume_mode == "Filesystem" {
            let sm_rt = ctx.rt("longhorn.io", "sharemanagers").map_err(err)?;
            ctx.api
                .ensure(
                    &sm_rt,
                    LONGHORN_NS,
                    json!({"apiVersion": "longhorn.io/v1beta2", "kind": "ShareManager", "metadata": {"name": pv_name, "namespace": LONGHORN_NS},
                           "spec": {"image": ctx.profile.share_manager_image()}, "status": {"state": "stopped", "endpoint": "", "ownerID": ""}}),
                )
                .map_err(err)?;
            let svc_rt = ctx.rt("", "services").map_err(err)?;
            ctx.api
                .ensure(
                    &svc_rt,
                    LONGHORN_NS,
                    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": pv_name, "namespace": LONGHORN_NS, "labels": {"longhorn.io/share-manager": pv_name}},
                           "spec": {"clusterIP": cluster_ip(&pv_name, 0), "ports": [{"name": "nfs", "port": 2049, "protocol": "TCP"}], "type": "ClusterIP"}}),
                )
                .map_err(err)?;
        }
    }

    let mut attributes = params.clone();
    if rwx && longhorn {
        attributes["share"] = json!("true");
    }
    let mut csi = json!({"driver": provisioner, "volumeHandle": pv_name, "volumeAttributes": attributes});
    if volume_mode == "Filesystem" {
        let fs = [param("csi.storage.k8s.io/fstype"), param("fsType")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "ext4".into());
        csi["fsType"] = json!(fs);
    }
    let pv_rt = ctx.rt("", "persistentvolumes").map_err(err)?;
    ctx.api
        .ensure(
            &pv_rt,
            "",
            json!({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
                             "finalizers": ["kubernetes.io/pv-protection", "external-provisioner.volume.kubernetes.io/finalizer"]},
                "spec": {
                    "capacity": {"storage": format_bytes(size)}, "accessModes": modes, "volumeMode": volume_mode,
                    "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy").and_then(Value::as_str).unwrap_or("Delete"),
                    "storageClassName": sc_name,
                    "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1", "namespace": ns, "name": name, "uid": meta::uid(pvc)},
                    "csi": csi,
                },
                "status": {"phase": "Bound"},
            }),
        )
        .map_err(err)?;
    ctx.api
        .modify(&pvc_rt, ns, name, "", |obj| {
            obj["spec"]["volumeName"] = json!(pv_name);
            meta::set_annotation(obj, "pv.kubernetes.io/bind-completed", "yes");
            meta::set_annotation(obj, "pv.kubernetes.io/bound-by-controller", "yes");
            true
        })
        .map_err(err)?;
    ctx.api
        .modify(&pvc_rt, ns, name, "status", |obj| {
            obj["status"] =
                json!({"phase": "Bound", "accessModes": modes, "capacity": {"storage": format_bytes(size)}});
            true
        })
        .map_err(err)?;
    ctx.timers.clear(&timer);
    ctx.event(pvc, "Normal", "ProvisioningSucceeded", &format!("Successfully provisioned volume {pv_name}"));
    Ok(None)
}

async fn expand(ctx: &Arc<Ctx>, pvc: &Value) -> Result<Requeue, String> {
    let requested = parse_bytes(meta::str_at(pvc, "/spec/resources/requests/storage")).unwrap_or(0);
    let current = parse_bytes(meta::str_at(pvc, "/status/capacity/storage")).unwrap_or(0);
    if requested <= current {
        return Ok(None);
    }
    let (ns, name) = (meta::namespace(pvc), meta::name(pvc));
    let timer = format!("expand/{}", meta::uid(pvc));
    if let Some(left) = ctx.timers.wait(&timer, Duration::from_millis(ctx.timing().expand_ms)) {
        return Ok(Some(left));
    }
    let pv_name = meta::str_at(pvc, "/spec/volumeName").to_string();
    let longhorn = super::webhooks::provisioner_of(&ctx.api, pvc).as_deref() == Some(LONGHORN);
    let size = if longhorn { longhorn_size(requested) } else { requested };
    ctx.devices.grow_backing_file(&pv_name, size).await.map_err(err)?;
    if longhorn {
        let vol_rt = ctx.rt("longhorn.io", "volumes").map_err(err)?;
        if ctx.api.get_opt("longhorn.io", "volumes", LONGHORN_NS, &pv_name).is_some() {
            ctx.api
                .modify(&vol_rt, LONGHORN_NS, &pv_name, "", |obj| {
                    obj["spec"]["size"] = json!(size.to_string());
                    true
                })
                .map_err(err)?;
        }
    }
    let pv_rt = ctx.rt("", "persistentvolumes").map_err(err)?;
    if ctx.api.get_opt("", "persistentvolumes", "", &pv_name).is_some() {
        ctx.api
            .modify(&pv_rt, "", &pv_name, "", |obj| {
                obj["spec"]["capacity"]["storage"] = json!(format_bytes(size));
                true
            })
            .map_err(err)?;
    }
    let pvc_rt = ctx.rt("", "persistentvolumeclaims").map_err(err)?;
    ctx.api
        .modify(&pvc_rt, ns, name, "status", |obj| {
            obj["status"]["capacity"]["storage"] = json!(format_bytes(size));
            true
        })
        .map_err(err)?;
    ctx.timers.clear(&timer);
    ctx.event(pvc, "Normal", "VolumeResizeSuccessful", &format!("resize volume {pv_name} to {}", format_bytes(size)));
    Ok(None)
}

async fn reconcile_pv(ctx: &Arc<Ctx>, name: &str) -> Result<Requeue, String> {
    let Some(pv) = ctx.api.get_opt("", "persistentvolumes", "", name) else { return Ok(None) };
    let (claim_ns, claim, claim_uid) = (
        meta::str_at(&pv, "/spec/claimRef/namespace"),
        meta::str_at(&pv, "/spec/claimRef/name"),
        meta::str_at(&pv, "/spec/claimRef/uid"),
    );
    let bound = ctx
        .api
        .get_opt("", "persistentvolumeclaims", claim_ns, claim)
        .is_some_and(|c| claim_uid.is_empty() || meta::uid(&c) == claim_uid);
    let pv_rt = ctx.rt("", "persistentvolumes").map_err(err)?;
    if bound && !meta::is_deleting(&pv) {
        return Ok(None);
    }
    if meta::str_at(&pv, "/spec/persistentVolumeReclaimPolicy") == "Retain" && !meta::is_deleting(&pv) {
        ctx.api
            .modify(&pv_rt, "", name, "status", |obj| {
                if meta::str_at(obj, "/status/phase") == "Released" {
                    return false;
                }
                obj["status"]["phase"] = json!("Released");
                true
            })
            .map_err(err)?;
        return Ok(None);
    }
    // Delete reclaim: the volume and everything Longhorn made for it.
    for (group, plural) in [
        ("longhorn.io", "volumeattachments"),
        ("longhorn.io", "sharemanagers"),
        ("longhorn.io", "volumes"),
        ("", "services"),
    ] {
        if let Some(rt) = ctx.api.resource(group, plural) {
            ctx.api.delete_if_exists(&rt, LONGHORN_NS, name).map_err(err)?;
        }
    }
    ctx.devices.delete_backing_file(name).await.map_err(err)?;
    ctx.api
        .modify(&pv_rt, "", name, "", |obj| {
            if meta::finalizers(obj).is_empty() {
                return false;
            }
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("finalizers");
            }
            true
        })
        .map_err(err)?;
    ctx.api.delete_if_exists(&pv_rt, "", name).map_err(err)?;
    Ok(None)
}

/// Reflects attachment pods of a claim into the Longhorn volume status and the
/// host's CSI VolumeAttachments (what the guest driver's settle check reads).
pub fn sync_attachment(ctx: &Ctx, ns: &str, claim: &str) {
    if let Err(e) = try_sync_attachment(ctx, ns, claim) {
        tracing::warn!(namespace = ns, claim, error = %e, "syncing attachment state");
    }
}

fn try_sync_attachment(ctx: &Ctx, ns: &str, claim: &str) -> Result<(), String> {
    let Some(pvc) = ctx.api.get_opt("", "persistentvolumeclaims", ns, claim) else { return Ok(()) };
    let pv = meta::str_at(&pvc, "/spec/volumeName").to_string();
    if pv.is_empty() {
        return Ok(());
    }
    let pods = pods_using(ctx, ns, claim);
    let nodes: Vec<String> = {
        let mut n: Vec<String> =
            pods.iter().map(|p| meta::str_at(p, "/spec/nodeName").to_string()).filter(|n| !n.is_empty()).collect();
        n.sort();
        n.dedup();
        n
    };
    if let Some(vol_rt) = ctx.api.resource("longhorn.io", "volumes") {
        if ctx.api.get_opt("longhorn.io", "volumes", LONGHORN_NS, &pv).is_some() {
            let workloads: Vec<Value> = pods
                .iter()
                .map(|p| json!({"podName": meta::name(p), "podStatus": meta::str_at(p, "/status/phase"), "workloadName": "", "workloadType": ""}))
                .collect();
            let attached = !nodes.is_empty();
            ctx.api
                .modify(&vol_rt, LONGHORN_NS, &pv, "status", |obj| {
                    // An exported RWX volume is attached to its share-manager, pods or not.
                    if obj.pointer("/status/shareState") == Some(&json!("running")) {
                        return false;
                    }
                    let st = &mut obj["status"];
                    let want_state = if attached { "attached" } else { "detached" };
                    let want_node = nodes.first().cloned().unwrap_or_default();
                    if st.get("state") == Some(&json!(want_state))
                        && st.get("currentNodeID") == Some(&json!(want_node))
                        && st.pointer("/kubernetesStatus/workloadsStatus") == Some(&json!(workloads))
                    {
                        return false;
                    }
                    st["state"] = json!(want_state);
                    st["robustness"] = json!(if attached { "healthy" } else { "unknown" });
                    st["currentNodeID"] = json!(want_node);
                    st["kubernetesStatus"]["workloadsStatus"] = json!(workloads);
                    st["kubernetesStatus"]["lastPodRefAt"] =
                        json!(if attached { String::new() } else { meta::now_rfc3339() });
                    true
                })
                .map_err(err)?;
        }
    }
    if meta::str_at(&pvc, "/spec/volumeMode") != "Block" {
        return Ok(());
    }
    let va_rt = ctx.rt("storage.k8s.io", "volumeattachments").map_err(err)?;
    let attacher = super::webhooks::provisioner_of(&ctx.api, &pvc).unwrap_or_else(|| LONGHORN.into());
    let va_name = |node: &str| {
        let d = sha2::Sha256::digest(format!("{pv}{attacher}{node}").as_bytes());
        format!("csi-{}", d.iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    for node in &nodes {
        ctx.api
            .ensure(
                &va_rt,
                "",
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": va_name(node)},
                       "spec": {"attacher": attacher, "nodeName": node, "source": {"persistentVolumeName": pv}},
                       "status": {"attached": true}}),
            )
            .map_err(err)?;
    }
    for va in ctx.api.list("storage.k8s.io", "volumeattachments", None) {
        if meta::str_at(&va, "/spec/source/persistentVolumeName") == pv
            && !nodes.iter().any(|n| n == meta::str_at(&va, "/spec/nodeName"))
        {
            ctx.api.delete_if_exists(&va_rt, "", meta::name(&va)).map_err(err)?;
        }
    }
    Ok(())
}

/// Gives an RWX volume's share-manager Service a new address (share-manager moved).
pub fn move_share_manager(ctx: &Ctx, volume: &str) -> Result<String, String> {
    let svc_rt = ctx.rt("", "services").map_err(err)?;
    let svc = ctx
        .api
        .get_opt("", "services", LONGHORN_NS, volume)
        .ok_or_else(|| format!("no share-manager service for volume {volume}"))?;
    let current = meta::str_at(&svc, "/spec/clusterIP").to_string();
    let mut salt = 1u32;
    let mut next = cluster_ip(volume, salt);
    while next == current {
        salt += 1;
        next = cluster_ip(volume, salt);
    }
    ctx.api
        .modify(&svc_rt, LONGHORN_NS, volume, "", |obj| {
            obj["spec"]["clusterIP"] = json!(next);
            true
        })
        .map_err(err)?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longhorn_rounds_like_longhorn() {
        assert_eq!(longhorn_size(1), 10 << 20);
        assert_eq!(longhorn_size((100 << 20) + 1), 102 << 20);
        assert_eq!(longhorn_size(1 << 30), 1 << 30);
    }
}
