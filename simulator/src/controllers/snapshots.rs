//! CSI snapshots on the host (VolumeSnapshot → VolumeSnapshotContent, ready after
//! a latency, data copied from the backing file) and Harvester's remote backups
//! (VolumeRemoteBackup / VolumeRemoteRestore, v1.8).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::queue::{self, Key, Requeue};
use super::volume_data::{backup_file, snapshot_file, RESTORE_FROM_BACKUP};
use super::Ctx;
use crate::api::meta;
use crate::api::quantity::format_bytes;
use crate::api::store::Event;

const SNAP: &str = "snapshot.storage.k8s.io";

fn map(_ctx: &Ctx, e: &Event) -> Vec<Key> {
    match (e.key.group.as_str(), e.key.plural.as_str()) {
        (SNAP, "volumesnapshots") => vec![Key::new("vs", &e.namespace, &e.name)],
        (SNAP, "volumesnapshotcontents") => vec![Key::new("vsc", "", &e.name)],
        ("harvesterhci.io", "volumeremotebackups") => vec![Key::new("vrb", &e.namespace, &e.name)],
        ("harvesterhci.io", "volumeremoterestores") => vec![Key::new("vrr", &e.namespace, &e.name)],
        ("", "persistentvolumeclaims") => vec![Key::new("vrr", &e.namespace, &e.name)],
        _ => vec![],
    }
}

fn all(ctx: &Ctx) -> Vec<Key> {
    let mut keys = Vec::new();
    for (group, plural, kind) in [
        (SNAP, "volumesnapshots", "vs"),
        (SNAP, "volumesnapshotcontents", "vsc"),
        ("harvesterhci.io", "volumeremotebackups", "vrb"),
        ("harvesterhci.io", "volumeremoterestores", "vrr"),
    ] {
        keys.extend(
            ctx.api.list(group, plural, None).iter().map(|o| Key::new(kind, meta::namespace(o), meta::name(o))),
        );
    }
    keys
}

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    queue::run(ctx, "snapshots", shutdown, map, all, |ctx, key| async move {
        match key.kind {
            "vs" => reconcile_snapshot(&ctx, &key.namespace, &key.name).await,
            "vsc" => reconcile_content(&ctx, &key.name).await,
            "vrb" => reconcile_backup(&ctx, &key.namespace, &key.name).await,
            _ => reconcile_restore(&ctx, &key.namespace, &key.name),
        }
    })
    .await
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn default_snapshot_class(ctx: &Ctx) -> Option<String> {
    ctx.api
        .list(SNAP, "volumesnapshotclasses", None)
        .iter()
        .find(|c| meta::annotation(c, "snapshot.storage.kubernetes.io/is-default-class") == Some("true"))
        .map(|c| meta::name(c).to_string())
}

async fn reconcile_snapshot(ctx: &Arc<Ctx>, ns: &str, name: &str) -> Result<Requeue, String> {
    let Some(vs) = ctx.api.get_opt(SNAP, "volumesnapshots", ns, name) else { return Ok(None) };
    let vs_rt = ctx.rt(SNAP, "volumesnapshots").map_err(err)?;
    let vsc_rt = ctx.rt(SNAP, "volumesnapshotcontents").map_err(err)?;
    if vs.pointer("/status/readyToUse") == Some(&json!(true)) {
        return Ok(None);
    }
    let set_error = |message: String| {
        ctx.api
            .modify(&vs_rt, ns, name, "status", |obj| {
                let e = json!({"message": message, "time": meta::now_rfc3339()});
                if obj.pointer("/status/error/message") == e.get("message") {
                    return false;
                }
                obj["status"]["readyToUse"] = json!(false);
                obj["status"]["error"] = e;
                true
            })
            .map(|_| ())
            .map_err(err)
    };
    let claim = meta::str_at(&vs, "/spec/source/persistentVolumeClaimName").to_string();
    let Some(pvc) = ctx.api.get_opt("", "persistentvolumeclaims", ns, &claim) else {
        set_error(format!(
            "failed to get input parameters to create snapshot {name}: persistentvolumeclaim \"{claim}\" not found"
        ))?;
        return Ok(Some(Duration::from_secs(1)));
    };
    let pv = meta::str_at(&pvc, "/spec/volumeName").to_string();
    if pv.is_empty() {
        set_error(format!("the PVC {claim} is not yet bound to a PV"))?;
        return Ok(Some(Duration::from_secs(1)));
    }
    let class = match meta::str_at(&vs, "/spec/volumeSnapshotClassName") {
        "" => default_snapshot_class(ctx).unwrap_or_default(),
        c => c.to_string(),
    };
    let class_obj = ctx.api.get_opt(SNAP, "volumesnapshotclasses", "", &class);
    let Some(class_obj) = class_obj else {
        set_error(format!(
            "failed to get snapshot class with error volumesnapshotclass.snapshot.storage.k8s.io \"{class}\" not found"
        ))?;
        return Ok(Some(Duration::from_secs(1)));
    };
    let content_name = format!("snapcontent-{}", meta::uid(&vs));
    if meta::str_at(&vs, "/status/boundVolumeSnapshotContentName").is_empty() {
        ctx.api
            .ensure(
                &vsc_rt,
                "",
                json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent", "metadata": {"name": content_name},
                       "spec": {"volumeSnapshotRef": {"kind": "VolumeSnapshot", "apiVersion": "snapshot.storage.k8s.io/v1", "namespace": ns, "name": name, "uid": meta::uid(&vs)},
                                "source": {"volumeHandle": pv}, "driver": meta::str_at(&class_obj, "/driver"),
                                "deletionPolicy": meta::str_at(&class_obj, "/deletionPolicy"), "volumeSnapshotClassName": class},
                       "status": {"readyToUse": false}}),
            )
            .map_err(err)?;
        ctx.api
            .modify(&vs_rt, ns, name, "status", |obj| {
                obj["status"] = json!({"boundVolumeSnapshotContentName": content_name, "readyToUse": false, "creationTime": meta::now_rfc3339()});
                true
            })
            .map_err(err)?;
    }
    let timer = format!("snapshot/{}", meta::uid(&vs));
    if let Some(left) = ctx.timers.wait(&timer, Duration::from_millis(ctx.timing().snapshot_ms)) {
        return Ok(Some(left));
    }
    let file = snapshot_file(&ctx.state_dir, &content_name);
    ctx.devices.copy_sparse(&ctx.devices.backing_file(&pv), &file).await.map_err(err)?;
    let size = std::fs::metadata(&file).map(|m| m.len()).map_err(err)?;
    ctx.api
        .modify(&vsc_rt, "", &content_name, "status", |obj| {
            obj["status"] = json!({"readyToUse": true, "restoreSize": size, "snapshotHandle": format!("bs://{pv}/{content_name}"),
                                    "creationTime": jiff::Timestamp::now().as_nanosecond() as i64});
            true
        })
        .map_err(err)?;
    ctx.api
        .modify(&vs_rt, ns, name, "status", |obj| {
            obj["status"]["readyToUse"] = json!(true);
            obj["status"]["restoreSize"] = json!(format_bytes(size));
            if let Some(s) = obj.get_mut("status").and_then(Value::as_object_mut) {
                s.remove("error");
            }
            true
        })
        .map_err(err)?;
    ctx.timers.clear(&timer);
    Ok(None)
}

async fn reconcile_content(ctx: &Arc<Ctx>, name: &str) -> Result<Requeue, String> {
    let Some(content) = ctx.api.get_opt(SNAP, "volumesnapshotcontents", "", name) else {
        let _ = tokio::fs::remove_file(snapshot_file(&ctx.state_dir, name)).await;
        return Ok(None);
    };
    let (ns, vs_name) = (
        meta::str_at(&content, "/spec/volumeSnapshotRef/namespace"),
        meta::str_at(&content, "/spec/volumeSnapshotRef/name"),
    );
    if ctx.api.get_opt(SNAP, "volumesnapshots", ns, vs_name).is_some() {
        return Ok(None);
    }
    if meta::str_at(&content, "/spec/deletionPolicy") == "Delete" {
        let rt = ctx.rt(SNAP, "volumesnapshotcontents").map_err(err)?;
        ctx.api.delete_if_exists(&rt, "", name).map_err(err)?;
        let _ = tokio::fs::remove_file(snapshot_file(&ctx.state_dir, name)).await;
    }
    Ok(None)
}

async fn reconcile_backup(ctx: &Arc<Ctx>, ns: &str, name: &str) -> Result<Requeue, String> {
    let key = format!("{ns}/{name}");
    let Some(vrb) = ctx.api.get_opt("harvesterhci.io", "volumeremotebackups", ns, name) else {
        let _ = tokio::fs::remove_file(backup_file(&ctx.state_dir, &key)).await;
        return Ok(None);
    };
    if vrb.pointer("/status/success") == Some(&json!(true)) {
        return Ok(None);
    }
    let rt = ctx.rt("harvesterhci.io", "volumeremotebackups").map_err(err)?;
    let source = meta::str_at(&vrb, "/spec/source").to_string();
    let Some(pvc) = ctx.api.get_opt("", "persistentvolumeclaims", ns, &source) else {
        ctx.api
            .modify(&rt, ns, name, "status", |obj| {
                obj["status"] = json!({"success": false, "error": format!("source volume {ns}/{source} not found")});
                true
            })
            .map_err(err)?;
        return Ok(Some(Duration::from_secs(1)));
    };
    let timer = format!("backup/{}", meta::uid(&vrb));
    if let Some(left) = ctx.timers.wait(&timer, Duration::from_millis(ctx.timing().snapshot_ms)) {
        return Ok(Some(left));
    }
    let pv = meta::str_at(&pvc, "/spec/volumeName").to_string();
    ctx.devices.copy_sparse(&ctx.devices.backing_file(&pv), &backup_file(&ctx.state_dir, &key)).await.map_err(err)?;
    let source_spec = pvc.get("spec").cloned().unwrap_or_else(|| json!({}));
    ctx.api
        .modify(&rt, ns, name, "status", |obj| {
            obj["status"] =
                json!({"success": true, "sourceSpec": source_spec, "backupTarget": "s3://simulated-backup-target"});
            true
        })
        .map_err(err)?;
    ctx.timers.clear(&timer);
    Ok(None)
}

fn reconcile_restore(ctx: &Arc<Ctx>, ns: &str, name: &str) -> Result<Requeue, String> {
    let Some(vrr) = ctx.api.get_opt("harvesterhci.io", "volumeremoterestores", ns, name) else { return Ok(None) };
    if vrr.pointer("/status/success") == Some(&json!(true)) {
        return Ok(None);
    }
    let rt = ctx.rt("harvesterhci.io", "volumeremoterestores").map_err(err)?;
    let from = meta::str_at(&vrr, "/spec/from").to_string();
    let (bns, bname) = from.split_once('/').unwrap_or(("", from.as_str()));
    let Some(vrb) = ctx
        .api
        .get_opt("harvesterhci.io", "volumeremotebackups", bns, bname)
        .filter(|b| b.pointer("/status/success") == Some(&json!(true)))
    else {
        ctx.api
            .modify(&rt, ns, name, "status", |obj| {
                let want = json!({"success": false, "error": format!("backup {from} is not available")});
                if obj.get("status") == Some(&want) {
                    return false;
                }
                obj["status"] = want;
                true
            })
            .map_err(err)?;
        return Ok(Some(Duration::from_secs(1)));
    };
    match ctx.api.get_opt("", "persistentvolumeclaims", ns, name) {
        None => {
            let pvc_rt = ctx.rt("", "persistentvolumeclaims").map_err(err)?;
            let spec = vrb.pointer("/status/sourceSpec").cloned().unwrap_or_else(|| json!({}));
            let mut new_spec = json!({
                "accessModes": spec.get("accessModes").cloned().unwrap_or_else(|| json!(["ReadWriteMany"])),
                "resources": spec.get("resources").cloned().unwrap_or_else(|| json!({})),
                "volumeMode": spec.get("volumeMode").cloned().unwrap_or_else(|| json!("Block")),
            });
            if let Some(sc) = spec.get("storageClassName") {
                new_spec["storageClassName"] = sc.clone();
            }
            ctx.api
                .create(
                    &pvc_rt,
                    ns,
                    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                           "metadata": {"name": name, "namespace": ns, "annotations": {RESTORE_FROM_BACKUP: from},
                                        "ownerReferences": [meta::owner_reference(&vrr, false)]},
                           "spec": new_spec}),
                    &Default::default(),
                )
                .map_err(err)?;
            Ok(Some(Duration::from_millis(200)))
        }
        Some(pvc) if meta::str_at(&pvc, "/status/phase") == "Bound" => {
            ctx.api
                .modify(&rt, ns, name, "status", |obj| {
                    obj["status"] = json!({"success": true, "restoredVolume": name});
                    true
                })
                .map_err(err)?;
            Ok(None)
        }
        Some(_) => Ok(None),
    }
}
