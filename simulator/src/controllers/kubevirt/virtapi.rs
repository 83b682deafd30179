//! virt-api's `subresources.kubevirt.io` endpoints: add/removevolume on VMs and
//! VMIs (202 with an empty body), start/stop/restart, guestosinfo. Error cases
//! and wording follow KubeVirt (reference host-apis §1.4–1.5).

use std::sync::{Arc, Weak};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::vm::{add_to_spec, remove_from_spec};
use crate::api::error::{ApiError, ApiResult};
use crate::api::http::{json_response, AggregatedApi, BoxFuture};
use crate::api::meta;
use crate::api::request::ResourceRequest;
use crate::controllers::webhooks::check_disk_bus;
use crate::controllers::Ctx;
use crate::profiles::HotplugMode;

pub struct VirtApi {
    ctx: Weak<Ctx>,
}

impl VirtApi {
    pub fn new(ctx: Weak<Ctx>) -> Self {
        Self { ctx }
    }
}

fn conflict(kind: &str, name: &str, why: String) -> ApiError {
    ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {kind}.kubevirt.io \"{name}\": {why}"))
}

fn not_found(kind: &str, name: &str) -> ApiError {
    let mut e = ApiError::new(404, "NotFound", format!("{kind}.kubevirt.io \"{name}\" not found"));
    e.details = Some(json!({"name": name, "group": "kubevirt.io", "kind": kind}));
    e
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, "").into_response()
}

struct AddOptions {
    name: String,
    claim: String,
    disk: Value,
}

fn parse_add(body: &Bytes) -> ApiResult<AddOptions> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request with no body, a new name is expected as the request body"));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Can not unmarshal Request body to struct, error: {e}")))?;
    let name = meta::str_at(&v, "/name").to_string();
    if name.is_empty() {
        return Err(ApiError::bad_request("AddVolumeOptions requires name to be set"));
    }
    let Some(disk) = v.get("disk").filter(|d| d.is_object()).cloned() else {
        return Err(ApiError::bad_request("AddVolumeOptions requires disk to not be nil"));
    };
    let claim = v
        .pointer("/volumeSource/persistentVolumeClaim/claimName")
        .or_else(|| v.pointer("/volumeSource/dataVolume/name"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if v.get("volumeSource").is_none_or(Value::is_null) || claim.is_empty() {
        return Err(ApiError::bad_request("AddVolumeOptions requires volumeSource to not be nil"));
    }
    let mut disk = disk;
    // The volume name wins over any disk name sent.
    disk["name"] = json!(name);
    Ok(AddOptions { name, claim, disk })
}

fn parse_remove(body: &Bytes) -> ApiResult<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("Request with no body, a volume name is expected as the request body"));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Can not unmarshal Request body to struct, error: {e}")))?;
    let name = meta::str_at(&v, "/name").to_string();
    if name.is_empty() {
        return Err(ApiError::bad_request("RemoveVolumeOptions requires name to be set"));
    }
    Ok(name)
}

/// 409s for a volume name or claim already in a spec.
fn check_not_present(kind: &str, obj_name: &str, spec: &Value, opts: &AddOptions) -> ApiResult<()> {
    for v in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        if meta::str_at(v, "/name") == opts.name {
            return Err(conflict(
                kind,
                obj_name,
                format!("Unable to add volume [{}] because volume with that name already exists", opts.name),
            ));
        }
        let claim = v
            .pointer("/persistentVolumeClaim/claimName")
            .or_else(|| v.pointer("/dataVolume/name"))
            .and_then(Value::as_str);
        if claim == Some(opts.claim.as_str()) {
            return Err(conflict(
                kind,
                obj_name,
                format!("Unable to add volume source [{}] because it already exists", opts.claim),
            ));
        }
    }
    Ok(())
}

fn check_removable(kind: &str, obj_name: &str, spec: &Value, name: &str) -> ApiResult<()> {
    let vol = spec.get("volumes").and_then(Value::as_array).into_iter().flatten().find(|v| {
        meta::str_at(v, "/name") == name
            || v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) == Some(name)
            || v.pointer("/dataVolume/name").and_then(Value::as_str) == Some(name)
    });
    match vol {
        None => Err(conflict(kind, obj_name, format!("Unable to remove volume [{name}] because it does not exist"))),
        Some(v) => {
            let hot = v
                .pointer("/persistentVolumeClaim/hotpluggable")
                .or_else(|| v.pointer("/dataVolume/hotpluggable"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if hot {
                Ok(())
            } else {
                Err(conflict(
                    kind,
                    obj_name,
                    format!("Unable to remove volume [{name}] because it is not hotpluggable"),
                ))
            }
        }
    }
}

/// The name of the volume that `name` refers to (a volume name or its claim).
fn volume_name_in(spec: &Value, name: &str) -> String {
    spec.get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| {
            meta::str_at(v, "/name") == name
                || v.pointer("/persistentVolumeClaim/claimName").and_then(Value::as_str) == Some(name)
        })
        .map(|v| meta::str_at(v, "/name").to_string())
        .unwrap_or_else(|| name.to_string())
}

impl VirtApi {
    fn vm_volume(&self, ctx: &Arc<Ctx>, ns: &str, name: &str, sub: &str, body: &Bytes) -> ApiResult<Response> {
        let vm_rt = ctx.rt("kubevirt.io", "virtualmachines")?;
        let vm = ctx
            .api
            .get_opt("kubevirt.io", "virtualmachines", ns, name)
            .ok_or_else(|| not_found("virtualmachine", name))?;
        let template = vm.pointer("/spec/template/spec").cloned().unwrap_or(Value::Null);
        let pending = vm.pointer("/status/volumeRequests").and_then(Value::as_array).cloned().unwrap_or_default();
        let declarative = ctx.profile.hotplug == HotplugMode::Declarative;
        if sub == "addvolume" {
            let opts = parse_add(body)?;
            check_disk_bus(&ctx.profile, &opts.disk)?;
            check_not_present("virtualmachine", name, &template, &opts)?;
            if declarative {
                ctx.api.modify(&vm_rt, ns, name, "", |obj| {
                    add_to_spec(&mut obj["spec"]["template"]["spec"], &opts.name, &opts.claim, &opts.disk)
                })?;
                return Ok(accepted());
            }
            for r in &pending {
                if r.pointer("/addVolumeOptions/name").and_then(Value::as_str) == Some(&opts.name) {
                    return Err(conflict(
                        "virtualmachine",
                        name,
                        format!("add volume request for volume [{}] already exists", opts.name),
                    ));
                }
                if r.pointer("/removeVolumeOptions/name").and_then(Value::as_str) == Some(&opts.name) {
                    return Err(conflict("virtualmachine", name, format!("unable to add volume since a remove volume request for volume [{}] is still being processed", opts.name)));
                }
            }
            let request = json!({"addVolumeOptions": {
                "name": opts.name, "disk": opts.disk,
                "volumeSource": {"persistentVolumeClaim": {"claimName": opts.claim, "hotpluggable": true}},
            }});
            ctx.api.modify(&vm_rt, ns, name, "status", |obj| {
                if !obj.pointer("/status/volumeRequests").is_some_and(Value::is_array) {
                    obj["status"]["volumeRequests"] = json!([]);
                }
                if let Some(a) = obj.pointer_mut("/status/volumeRequests").and_then(Value::as_array_mut) {
                    a.push(request.clone());
                }
                true
            })?;
            return Ok(accepted());
        }
        let vol = parse_remove(body)?;
        check_removable("virtualmachine", name, &template, &vol)?;
        let vol = volume_name_in(&template, &vol);
        if declarative {
            ctx.api.modify(&vm_rt, ns, name, "", |obj| remove_from_spec(&mut obj["spec"]["template"]["spec"], &vol))?;
            return Ok(accepted());
        }
        for r in &pending {
            if r.pointer("/removeVolumeOptions/name").and_then(Value::as_str) == Some(&vol) {
                return Err(conflict(
                    "virtualmachine",
                    name,
                    format!("a remove volume request for volume [{vol}] already exists"),
                ));
            }
        }
        ctx.api.modify(&vm_rt, ns, name, "status", |obj| {
            let mut list: Vec<Value> =
                obj.pointer("/status/volumeRequests").and_then(Value::as_array).cloned().unwrap_or_default();
            // A remove cancels a pending add of the same volume.
            list.retain(|r| r.pointer("/addVolumeOptions/name").and_then(Value::as_str) != Some(vol.as_str()));
            list.push(json!({"removeVolumeOptions": {"name": vol}}));
            obj["status"]["volumeRequests"] = json!(list);
            true
        })?;
        Ok(accepted())
    }

    fn vmi_volume(&self, ctx: &Arc<Ctx>, ns: &str, name: &str, sub: &str, body: &Bytes) -> ApiResult<Response> {
        let vmi_rt = ctx.rt("kubevirt.io", "virtualmachineinstances")?;
        let vmi = ctx
            .api
            .get_opt("kubevirt.io", "virtualmachineinstances", ns, name)
            .ok_or_else(|| not_found("virtualmachineinstance", name))?;
        let owned_by_vm = vmi.pointer("/metadata/ownerReferences").and_then(Value::as_array).is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("kind") == Some(&json!("VirtualMachine")) && r.get("controller") == Some(&json!(true)))
        });
        if ctx.profile.hotplug == HotplugMode::Declarative && owned_by_vm {
            return Err(ApiError::bad_request(format!("VMI {ns}/{name} is owned by a VM")));
        }
        if meta::str_at(&vmi, "/status/phase") != "Running" {
            return Err(conflict("virtualmachineinstance", name, "VMI is not running".into()));
        }
        let spec = vmi.get("spec").cloned().unwrap_or(Value::Null);
        if sub == "addvolume" {
            let opts = parse_add(body)?;
            check_disk_bus(&ctx.profile, &opts.disk)?;
            check_not_present("virtualmachineinstance", name, &spec, &opts)?;
            ctx.api.modify(&vmi_rt, ns, name, "", |obj| {
                add_to_spec(&mut obj["spec"], &opts.name, &opts.claim, &opts.disk)
            })?;
        } else {
            let vol = parse_remove(body)?;
            check_removable("virtualmachineinstance", name, &spec, &vol)?;
            let vol = volume_name_in(&spec, &vol);
            ctx.api.modify(&vmi_rt, ns, name, "", |obj| remove_from_spec(&mut obj["spec"], &vol))?;
        }
        Ok(accepted())
    }

    fn run_strategy(&self, ctx: &Arc<Ctx>, ns: &str, name: &str, strategy: &str) -> ApiResult<Response> {
        set_run_strategy(ctx, ns, name, strategy)?;
        Ok(accepted())
    }

    fn dispatch(&self, req: ResourceRequest, method: Method, body: Bytes) -> ApiResult<Response> {
        let ctx =
            self.ctx.upgrade().ok_or_else(|| ApiError::new(503, "ServiceUnavailable", "virt-api is shutting down"))?;
        let ns = req.namespace.clone().unwrap_or_default();
        let (Some(name), Some(sub)) = (req.name.clone(), req.subresource.clone()) else {
            return Err(ApiError::unknown_route(&format!("/apis/{}/{}/{}", req.group, req.version, req.resource)));
        };
        match (req.resource.as_str(), sub.as_str(), method.as_str()) {
            ("virtualmachines", "addvolume" | "removevolume", "PUT") => self.vm_volume(&ctx, &ns, &name, &sub, &body),
            ("virtualmachineinstances", "addvolume" | "removevolume", "PUT") => {
                self.vmi_volume(&ctx, &ns, &name, &sub, &body)
            }
            ("virtualmachines", "start", "PUT") => self.run_strategy(&ctx, &ns, &name, "Always"),
            ("virtualmachines", "stop", "PUT") => self.run_strategy(&ctx, &ns, &name, "Halted"),
            ("virtualmachines", "restart", "PUT") => {
                let vmi_rt = ctx.rt("kubevirt.io", "virtualmachineinstances")?;
                ctx.api
                    .get_opt("kubevirt.io", "virtualmachines", &ns, &name)
                    .ok_or_else(|| not_found("virtualmachine", &name))?;
                ctx.api.delete_if_exists(&vmi_rt, &ns, &name)?;
                Ok(accepted())
            }
            ("virtualmachineinstances", "guestosinfo", "GET") => {
                let vmi = ctx
                    .api
                    .get_opt("kubevirt.io", "virtualmachineinstances", &ns, &name)
                    .ok_or_else(|| not_found("virtualmachineinstance", &name))?;
                Ok(json_response(
                    StatusCode::OK,
                    &json!({"guestAgentVersion": "6.2.0", "hostname": name, "os": vmi.pointer("/status/guestOSInfo").cloned().unwrap_or(Value::Null)}),
                ))
            }
            (_, "addvolume" | "removevolume" | "start" | "stop" | "restart", _) => Err(ApiError::method_not_allowed(
                format!("the server does not allow this method on the requested resource ({method})"),
            )),
            _ => Err(ApiError::unknown_route(&format!(
                "/apis/{}/{}/namespaces/{ns}/{}/{name}/{sub}",
                req.group, req.version, req.resource
            ))),
        }
    }
}

impl AggregatedApi for VirtApi {
    fn handle(&self, req: ResourceRequest, method: Method, body: Bytes) -> BoxFuture<ApiResult<Response>> {
        let result = self.dispatch(req, method, body);
        Box::pin(async move { result })
    }
}

/// What virt-api's start/stop do to a VM: set `runStrategy` and drop the legacy `running`
/// (KubeVirt refuses a VM with both). The admin API's stop/start use it too.
pub fn set_run_strategy(ctx: &Ctx, ns: &str, name: &str, strategy: &str) -> ApiResult<()> {
    let vm_rt = ctx.rt("kubevirt.io", "virtualmachines")?;
    ctx.api.get_opt("kubevirt.io", "virtualmachines", ns, name).ok_or_else(|| not_found("virtualmachine", name))?;
    ctx.api.modify(&vm_rt, ns, name, "", |obj| {
        if obj.pointer("/spec/runStrategy") == Some(&json!(strategy)) {
            return false;
        }
        obj["spec"]["runStrategy"] = json!(strategy);
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("running");
        }
        true
    })?;
    Ok(())
}
