//! RWX exports: Longhorn's share-manager (a directory on the volume's filesystem,
//! served while a share-manager ticket exists) and Harvester's networkfs-manager
//! driving `NetworkFilesystem` objects (reference host-apis §3.4, §4.1).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::longhorn::LONGHORN_NS;
use super::queue::{self, Key, Requeue};
use super::Ctx;
use crate::api::meta;
use crate::api::store::Event;

pub const NFS_NS: &str = "harvester-system";
/// Where the export's files are, for the embedded NFS-mount seam of the guest side.
pub const EXPORT_PATH_ANNOTATION: &str = "sim.harvesterhci.io/export-path";

fn map(_ctx: &Ctx, e: &Event) -> Vec<Key> {
    match (e.key.group.as_str(), e.key.plural.as_str()) {
        ("harvesterhci.io", "networkfilesystems") => vec![Key::new("nfs", &e.namespace, &e.name)],
        ("longhorn.io", "sharemanagers") => {
            vec![Key::new("sm", LONGHORN_NS, &e.name), Key::new("nfs", NFS_NS, &e.name)]
        }
        ("longhorn.io", "volumeattachments") => vec![Key::new("sm", LONGHORN_NS, &e.name)],
        ("", "services") if e.namespace == LONGHORN_NS => {
            vec![Key::new("sm", LONGHORN_NS, &e.name), Key::new("nfs", NFS_NS, &e.name)]
        }
        _ => vec![],
    }
}

fn all(ctx: &Ctx) -> Vec<Key> {
    let mut keys: Vec<Key> = ctx
        .api
        .list("longhorn.io", "sharemanagers", None)
        .iter()
        .map(|s| Key::new("sm", LONGHORN_NS, meta::name(s)))
        .collect();
    keys.extend(
        ctx.api
            .list("harvesterhci.io", "networkfilesystems", None)
            .iter()
            .map(|n| Key::new("nfs", meta::namespace(n), meta::name(n))),
    );
    keys
}

pub async fn run(ctx: Arc<Ctx>, shutdown: CancellationToken) {
    if ctx.api.resource("longhorn.io", "sharemanagers").is_none() {
        return;
    }
    queue::run(ctx, "networkfs", shutdown, map, all, |ctx, key| async move {
        match key.kind {
            "sm" => reconcile_share_manager(&ctx, &key.name).await,
            _ => reconcile_nfs(&ctx, &key.namespace, &key.name),
        }
    })
    .await
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn has_share_ticket(va: &Value) -> bool {
    va.pointer("/spec/attachmentTickets")
        .and_then(Value::as_object)
        .is_some_and(|t| t.values().any(|x| meta::str_at(x, "/type") == "share-manager-controller"))
}

async fn reconcile_share_manager(ctx: &Arc<Ctx>, volume: &str) -> Result<Requeue, String> {
    let Some(sm) = ctx.api.get_opt("longhorn.io", "sharemanagers", LONGHORN_NS, volume) else { return Ok(None) };
    let sm_rt = ctx.rt("longhorn.io", "sharemanagers").map_err(err)?;
    let want = ctx
        .api
        .get_opt("longhorn.io", "volumeattachments", LONGHORN_NS, volume)
        .is_some_and(|va| has_share_ticket(&va));
    let state = meta::str_at(&sm, "/status/state").to_string();
    let ip = ctx
        .api
        .get_opt("", "services", LONGHORN_NS, volume)
        .map(|s| meta::str_at(&s, "/spec/clusterIP").to_string())
        .unwrap_or_default();
    let timer = format!("share-manager/{volume}");
    let (new_state, endpoint) = if want {
        if state != "running" {
            if let Some(left) = ctx.timers.wait(&timer, Duration::from_millis(ctx.timing().export_ms)) {
                set_sm(ctx, &sm_rt, volume, "starting", "")?;
                return Ok(Some(left));
            }
            ctx.devices.start_export(volume).await.map_err(err)?;
            ctx.timers.clear(&timer);
        }
        ctx.timers.clear(&format!("share-manager-stop/{volume}"));
        ("running", if ip.is_empty() { String::new() } else { format!("nfs://{ip}/{volume}") })
    } else {
        ctx.timers.clear(&timer);
        // A running share-manager pod takes a while to terminate, as it takes a while to
        // start: until it has, the export is still served and networkfs stays Disabling.
        let stop_timer = format!("share-manager-stop/{volume}");
        if state == "running" || state == "stopping" {
            if let Some(left) = ctx.timers.wait(&stop_timer, Duration::from_millis(ctx.timing().export_ms)) {
                if state == "running" {
                    set_sm(ctx, &sm_rt, volume, "stopping", "")?;
                }
                return Ok(Some(left));
            }
        }
        ctx.timers.clear(&stop_timer);
        if matches!(state.as_str(), "running" | "starting" | "stopping") {
            ctx.devices.stop_export(volume).await.map_err(err)?;
        }
        ("stopped", String::new())
    };
    set_sm(ctx, &sm_rt, volume, new_state, &endpoint)?;
    if let Some(vol_rt) = ctx.api.resource("longhorn.io", "volumes") {
        if ctx.api.get_opt("longhorn.io", "volumes", LONGHORN_NS, volume).is_some() {
            ctx.api
                .modify(&vol_rt, LONGHORN_NS, volume, "status", |obj| {
                    // An exported volume is attached to the share-manager's node.
                    let running = new_state == "running";
                    let (state, node, robustness) =
                        if running { ("attached", "harvester-1", "healthy") } else { ("detached", "", "unknown") };
                    if obj.pointer("/status/shareState") == Some(&json!(new_state))
                        && obj.pointer("/status/shareEndpoint") == Some(&json!(endpoint))
                        && obj.pointer("/status/state") == Some(&json!(state))
                    {
                        return false;
                    }
                    obj["status"]["shareState"] = json!(new_state);
                    obj["status"]["shareEndpoint"] = json!(endpoint);
                    obj["status"]["state"] = json!(state);
                    obj["status"]["currentNodeID"] = json!(node);
                    obj["status"]["robustness"] = json!(robustness);
                    true
                })
                .map_err(err)?;
        }
    }
    Ok(None)
}

fn set_sm(
    ctx: &Ctx,
    rt: &crate::api::resources::ResourceType,
    volume: &str,
    state: &str,
    endpoint: &str,
) -> Result<(), String> {
    ctx.api
        .modify(rt, LONGHORN_NS, volume, "status", |obj| {
            if obj.pointer("/status/state") == Some(&json!(state))
                && obj.pointer("/status/endpoint") == Some(&json!(endpoint))
            {
                return false;
            }
            obj["status"]["state"] = json!(state);
            obj["status"]["endpoint"] = json!(endpoint);
            obj["status"]["ownerID"] = json!(if state == "running" { "harvester-1" } else { "" });
            true
        })
        .map(|_| ())
        .map_err(err)
}

fn condition(kind: &str, message: &str) -> Value {
    json!({"type": kind, "status": "True", "lastTransitionTime": meta::now_rfc3339(), "reason": kind, "message": message})
}

fn set_tickets(ctx: &Ctx, volume: &str, node: &str, on: bool) -> Result<(), String> {
    let va_rt = ctx.rt("longhorn.io", "volumeattachments").map_err(err)?;
    if ctx.api.get_opt("longhorn.io", "volumeattachments", LONGHORN_NS, volume).is_none() {
        return Err(format!("Longhorn volumeattachment {volume} not found"));
    }
    let tickets = if on {
        let ticket = |id: String, kind: &str| json!({"id": id, "type": kind, "nodeID": node, "parameters": {"disableFrontend": "false"}, "generation": 0});
        json!({
            format!("csi-{volume}"): ticket(format!("csi-{volume}"), "csi-attacher"),
            format!("share-manager-controller-{volume}"): ticket(format!("share-manager-controller-{volume}"), "share-manager-controller"),
        })
    } else {
        json!({})
    };
    ctx.api
        .modify(&va_rt, LONGHORN_NS, volume, "", |obj| {
            if obj.pointer("/spec/attachmentTickets") == Some(&tickets) {
                return false;
            }
            obj["spec"]["attachmentTickets"] = tickets.clone();
            true
        })
        .map(|_| ())
        .map_err(err)
}

fn reconcile_nfs(ctx: &Arc<Ctx>, ns: &str, name: &str) -> Result<Requeue, String> {
    let Some(nfs) = ctx.api.get_opt("harvesterhci.io", "networkfilesystems", ns, name) else { return Ok(None) };
    let rt = ctx.rt("harvesterhci.io", "networkfilesystems").map_err(err)?;
    let volume = meta::str_at(&nfs, "/spec/networkFSName").to_string();
    let desired = meta::str_at(&nfs, "/spec/desiredState").to_string();
    let state = meta::str_at(&nfs, "/status/state").to_string();
    let sm = ctx.api.get_opt("longhorn.io", "sharemanagers", LONGHORN_NS, &volume);
    let sm_state = sm.as_deref().map(|s| meta::str_at(s, "/status/state").to_string()).unwrap_or_default();
    let ip = ctx
        .api
        .get_opt("", "services", LONGHORN_NS, &volume)
        .map(|s| meta::str_at(&s, "/spec/clusterIP").to_string())
        .unwrap_or_default();
    let export_path = ctx.devices.export_dir(&volume).display().to_string();
    if meta::annotation(&nfs, EXPORT_PATH_ANNOTATION) != Some(export_path.as_str()) {
        ctx.api
            .modify(&rt, ns, name, "", |obj| {
                meta::set_annotation(obj, EXPORT_PATH_ANNOTATION, &export_path);
                true
            })
            .map_err(err)?;
    }
    let write_status = |status: Value| -> Result<(), String> {
        ctx.api
            .modify(&rt, ns, name, "status", |obj| {
                let mut merged = obj.get("status").cloned().unwrap_or_else(|| json!({}));
                crate::api::patch::merge_patch(&mut merged, &status);
                if obj.get("status") == Some(&merged) {
                    return false;
                }
                obj["status"] = merged;
                true
            })
            .map(|_| ())
            .map_err(err)
    };
    if state.is_empty() {
        write_status(
            json!({"state": "Disabled", "status": "Unknown", "type": "NFS", "endpoint": "", "mountOpts": ""}),
        )?;
        return Ok(Some(Duration::ZERO));
    }
    let preferred = meta::str_at(&nfs, "/spec/perferredNodes").to_string();
    let mount_opts = ctx
        .api
        .get_opt("", "persistentvolumes", "", &volume)
        .map(|pv| meta::str_at(&pv, "/spec/csi/volumeAttributes/nfsOptions").to_string())
        .unwrap_or_default();
    match desired.as_str() {
        "Enabled" => {
            if sm.is_none() {
                // Not an exportable volume (migratable or not RWX): networkfs-manager keeps retrying.
                write_status(
                    json!({"status": "NotReady", "conditions": [condition("NotReady", &format!("share manager {volume} not found"))]}),
                )?;
                return Ok(Some(Duration::from_secs(2)));
            }
            match state.as_str() {
                "Disabled" => {
                    set_tickets(ctx, &volume, &preferred, true)?;
                    write_status(json!({"state": "Enabling", "status": "NotReady"}))?;
                    Ok(Some(Duration::from_millis(100)))
                }
                // Enabled again before a disable finished: the share-manager stops
                // first, then the export is Disabled and enables from there. Waiting
                // for a Disabled that only the Disabled branch below would write
                // left it Disabling for good (found by `scenarios chaos`, seed 41).
                "Disabling" if sm_state == "stopped" => {
                    write_status(
                        json!({"state": "Disabled", "status": "NotReady", "endpoint": "", "mountOpts": "", "conditions": [condition("NotReady", "export is disabled")]}),
                    )?;
                    Ok(Some(Duration::ZERO))
                }
                "Disabling" => Ok(Some(Duration::from_millis(200))),
                "Enabling" | "Enabled" => {
                    if sm_state != "running" || ip.is_empty() {
                        if state == "Enabled" {
                            write_status(json!({"state": "Enabling", "status": "NotReady"}))?;
                        }
                        return Ok(Some(Duration::from_millis(200)));
                    }
                    let old_endpoint = meta::str_at(&nfs, "/status/endpoint");
                    let mut conditions = vec![condition("Ready", "export is ready")];
                    if !old_endpoint.is_empty() && old_endpoint != ip {
                        conditions.push(condition(
                            "EndpointChanged",
                            &format!("endpoint changed from {old_endpoint} to {ip}"),
                        ));
                    }
                    write_status(
                        json!({"state": "Enabled", "status": "Ready", "endpoint": ip, "mountOpts": mount_opts, "type": "NFS", "conditions": conditions}),
                    )?;
                    Ok(None)
                }
                _ => Ok(None),
            }
        }
        _ => match state.as_str() {
            "Enabled" | "Enabling" => {
                set_tickets(ctx, &volume, "", false)?;
                write_status(json!({"state": "Disabling"}))?;
                Ok(Some(Duration::from_millis(100)))
            }
            "Disabling" => {
                if sm_state == "stopped" || sm.is_none() {
                    write_status(
                        json!({"state": "Disabled", "status": "NotReady", "endpoint": "", "mountOpts": "", "conditions": [condition("NotReady", "export is disabled")]}),
                    )?;
                    return Ok(None);
                }
                Ok(Some(Duration::from_millis(200)))
            }
            _ => Ok(None),
        },
    }
}
