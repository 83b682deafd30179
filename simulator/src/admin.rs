//! The simulator's own control API under `/sim/` (admin token only): faults,
//! VM power, share-manager moves, watch drops, restarts, RBAC of another
//! release, timing, and a view of the devices each VM sees.

use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::http::{json_response, AdminApi, BoxFuture};
use crate::api::meta;
use crate::controllers::{longhorn, Ctx};
use crate::faults::FaultSpec;
use crate::world::Timing;

pub struct Admin {
    ctx: Weak<Ctx>,
}

impl Admin {
    pub fn new(ctx: Weak<Ctx>) -> Self {
        Self { ctx }
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn ok(v: Value) -> Response {
    json_response(StatusCode::OK, &v)
}

async fn devices(ctx: &Ctx) -> ApiResult<Value> {
    let mut out = serde_json::Map::new();
    for vm in ctx.api.list("kubevirt.io", "virtualmachines", None) {
        let root = crate::controllers::kubevirt::vm_root_name(meta::namespace(&vm), meta::name(&vm));
        let links = ctx.devices.attached_links(&root).await.map_err(|e| ApiError::internal(e.to_string()))?;
        let entries: Vec<Value> =
            links.into_iter().map(|(l, t)| json!({"link": l, "target": t.display().to_string()})).collect();
        out.insert(
            format!("{}/{}", meta::namespace(&vm), meta::name(&vm)),
            json!({"root": ctx.devices.vm_root(&root).display().to_string(), "devices": entries}),
        );
    }
    Ok(Value::Object(out))
}

async fn handle(ctx: Arc<Ctx>, method: Method, path: String, body: Bytes) -> ApiResult<Response> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["info"]) => Ok(ok(json!({
            "profile": ctx.profile.name, "serverVersion": ctx.profile.server_version,
            "hotplug": format!("{:?}", ctx.profile.hotplug), "timing": ctx.timing(),
            "stateDir": ctx.state_dir.display().to_string(), "devices": format!("{:?}", ctx.devices.mode()),
        }))),
        ("GET", ["faults"]) => Ok(ok(json!(ctx.faults.get()))),
        ("PUT", ["faults"]) => {
            let spec: FaultSpec = parse(&body)?;
            spec.validate().map_err(ApiError::bad_request)?;
            ctx.faults.set(spec.clone());
            tracing::info!(faults = %serde_json::to_string(&spec).unwrap_or_default(), "faults changed");
            Ok(ok(json!(spec)))
        }
        ("GET", ["timing"]) => Ok(ok(json!(ctx.timing()))),
        ("PUT", ["timing"]) => {
            let t: Timing = parse(&body)?;
            ctx.set_timing(t.clone());
            Ok(ok(json!(t)))
        }
        ("POST", ["vms", ns, name, action @ ("stop" | "start")]) => {
            let strategy = if *action == "stop" { "Halted" } else { "Always" };
            crate::controllers::kubevirt::set_run_strategy(&ctx, ns, name, strategy)?;
            Ok(ok(json!({"vm": format!("{ns}/{name}"), "runStrategy": strategy})))
        }
        ("POST", ["sharemanagers", volume, "move"]) => {
            let ip = longhorn::move_share_manager(&ctx, volume).map_err(ApiError::bad_request)?;
            Ok(ok(json!({"volume": volume, "clusterIP": ip})))
        }
        ("POST", ["watches", "drop"]) => {
            ctx.server.drop_watches();
            Ok(ok(json!({"dropped": true})))
        }
        ("POST", ["watches", "expire"]) => {
            ctx.api.store.compact_history();
            ctx.server.drop_watches();
            Ok(ok(json!({"expired": true})))
        }
        ("POST", ["restart"]) => {
            let v: Value = if body.is_empty() { json!({}) } else { parse(&body)? };
            let ms = v.get("downtimeMs").and_then(Value::as_u64).unwrap_or(500);
            ctx.request_restart(Duration::from_millis(ms));
            Ok(ok(json!({"restarting": true, "downtimeMs": ms})))
        }
        ("POST", ["rbac", profile]) => {
            let p = crate::profiles::lookup(profile).map_err(|e| ApiError::bad_request(e.to_string()))?;
            crate::seed::apply_rbac_of(&ctx.api, &p)?;
            Ok(ok(json!({"rbacOf": p.name})))
        }
        ("GET", ["devices"]) => Ok(ok(devices(&ctx).await?)),
        _ => Err(ApiError::unknown_route(&format!("/sim/{path}"))),
    }
}

impl AdminApi for Admin {
    fn handle(&self, method: Method, path: String, body: Bytes) -> BoxFuture<ApiResult<Response>> {
        let ctx = self.ctx.upgrade();
        Box::pin(async move {
            match ctx {
                Some(ctx) => handle(ctx, method, path, body).await,
                None => Ok((StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()),
            }
        })
    }
}
