//! Steps on the guest cluster: apply objects, run and delete pods, expectations on
//! claims, pods and snapshots.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{json, Value};

use crate::backend::Cluster;
use crate::model;

use super::host::host_object_of_handle;
use super::{eventually, fail, Result};
use crate::quantity::capacity_of;

pub(super) async fn apply<C: Cluster>(c: &C, objects: &[Value]) -> Result<()> {
    let discovery =
        Discovery::new(c.env().guest.clone()).run().await.map_err(|e| fail(format!("guest discovery: {e}")))?;
    for obj in objects {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("v1");
        let kind = obj.get("kind").and_then(Value::as_str).ok_or_else(|| fail("guest object without kind"))?;
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
        let (ar, caps): (ApiResource, _) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| fail(format!("the guest API does not serve {api_version} {kind}")))?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .ok_or_else(|| fail(format!("{kind} without metadata.name")))?;
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(c.env().guest.clone(), ns, &ar)
        } else {
            Api::all_with(c.env().guest.clone(), &ar)
        };
        let dynamic: DynamicObject =
            serde_json::from_value(obj.clone()).map_err(|e| fail(format!("{kind} {name}: {e}")))?;
        match api.create(&PostParams::default(), &dynamic).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                api.patch(name, &PatchParams::default(), &Patch::Merge(obj.clone()))
                    .await
                    .map_err(|e| fail(format!("updating {kind} {name}: {e}")))?;
            }
            Err(e) => return Err(fail(format!("creating {kind} {name}: {e}"))),
        }
    }
    Ok(())
}

pub(super) async fn warning_events(c: &impl Cluster, ns: &str, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(c.env().guest.clone(), ns);
    api.list(&Default::default())
        .await
        .map(|l| {
            l.items
                .into_iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(name) && e.type_.as_deref() == Some("Warning"))
                .filter_map(|e| e.message)
                .collect()
        })
        .unwrap_or_default()
}

pub(super) async fn expect<C: Cluster>(c: &C, e: &model::Expect) -> Result<()> {
    let env = c.env();
    if let Some(pvc) = &e.pvc {
        let api = env.pvcs(&e.namespace);
        return eventually(e.within, &format!("pvc {pvc}"), || async {
            let p = api.get_opt(pvc).await.map_err(|x| fail(x.to_string()))?;
            if let Some(want) = &e.event {
                let events = warning_events(c, &e.namespace, pvc).await;
                return Ok(if events.iter().any(|m| m.contains(want.as_str())) {
                    None
                } else {
                    Some(format!("no Warning event containing {want:?} (events: {events:?})"))
                });
            }
            let Some(p) = p else { return Ok(Some("not found".into())) };
            let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into());
            if let Some(want) = &e.phase {
                if &phase != want {
                    return Ok(Some(format!("phase {phase}")));
                }
            }
            if let Some(min) = &e.capacity_at_least {
                let want = model::parse_size(min).map_err(fail)?;
                let have = capacity_of(&p);
                if have < want {
                    return Ok(Some(format!("capacity {have} < {want}")));
                }
            }
            Ok(None)
        })
        .await;
    }
    if let Some(pod) = &e.pod {
        let api: Api<Pod> = Api::namespaced(env.guest.clone(), &e.namespace);
        return eventually(e.within, &format!("pod {pod}"), || async {
            if let Some(want) = &e.event {
                let events = warning_events(c, &e.namespace, pod).await;
                return Ok(if events.iter().any(|m| m.contains(want.as_str())) {
                    None
                } else {
                    Some(format!("no Warning event containing {want:?}"))
                });
            }
            let p = api.get_opt(pod).await.map_err(|x| fail(x.to_string()))?.ok_or_else(|| fail("not found"))?;
            let phase = p.status.and_then(|s| s.phase).unwrap_or_else(|| "Pending".into());
            let want = e.phase.clone().unwrap_or_else(|| "Running".into());
            if phase != want {
                let events = warning_events(c, &e.namespace, pod).await;
                return Ok(Some(format!("phase {phase}; last event: {}", events.last().cloned().unwrap_or_default())));
            }
            if let Some(min) = &e.filesystem_at_least {
                let path = e.path.as_deref().ok_or_else(|| fail("filesystemAtLeast needs a path"))?;
                let want = model::parse_size(min).map_err(fail)?;
                let have = super::data::filesystem_size(c, &format!("{}/{pod}", e.namespace), path).await?;
                if have < want {
                    return Ok(Some(format!("the filesystem at {path} has {have} bytes < {want}")));
                }
            }
            Ok(None)
        })
        .await;
    }
    if let Some(snap) = &e.snapshot {
        let api = crate::components::snapshotter::snapshots(env, &e.namespace);
        // Ready, and (with handlePrefix) its handle and the host object it names, in one
        // bounded wait: a read that fails (an injected API error rate) is tried again
        // until `within`, as every other expectation is.
        return eventually(e.within, &format!("snapshot {snap}"), || async {
            let s = api.get(snap).await.map_err(|x| fail(x.to_string()))?;
            if s.data.pointer("/status/readyToUse") != Some(&json!(true)) {
                return Ok(Some("not ready".into()));
            }
            let Some(prefix) = &e.handle_prefix else { return Ok(None) };
            let handle = match crate::components::snapshotter::handle_of(env, &e.namespace, snap).await {
                Ok(h) => h,
                Err(why) => return Ok(Some(format!("reading its handle: {why}"))),
            };
            if !handle.starts_with(prefix.as_str()) {
                return Err(fail(format!("snapshot {snap} has handle {handle:?}, not one starting with {prefix:?}")));
            }
            Ok(host_object_of_handle(env, &handle).await.err().map(|why| format!("host object of {handle}: {why}")))
        })
        .await;
    }
    Err(fail("expect needs pvc, pod or snapshot"))
}

pub(super) async fn run_pod<C: Cluster>(c: &C, p: &model::RunPod) -> Result<()> {
    let env = c.env();
    let mut mounts = Vec::new();
    let mut devices = Vec::new();
    let mut volumes = Vec::new();
    for v in &p.volumes {
        let pvc = env
            .pvcs(&p.namespace)
            .get(&v.pvc)
            .await
            .map_err(|e| fail(format!("pod {}: claim {}: {e}", p.name, v.pvc)))?;
        let block = pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block");
        if block {
            devices.push(json!({"name": v.pvc, "devicePath": v.path}));
        } else {
            mounts.push(json!({"name": v.pvc, "mountPath": v.path, "readOnly": v.readonly}));
        }
        volumes.push(json!({"name": v.pvc, "persistentVolumeClaim": {"claimName": v.pvc, "readOnly": v.readonly}}));
    }
    let mut spec = json!({"nodeName": p.node, "containers": [{"name": "app", "volumeMounts": mounts, "volumeDevices": devices}], "volumes": volumes});
    if let Some(sc) = &p.security_context {
        spec["securityContext"] =
            json!({"runAsUser": sc.run_as_user, "runAsGroup": sc.run_as_group, "fsGroup": sc.fs_group});
    }
    let mut pod = json!({"metadata": {"name": p.name, "namespace": p.namespace}, "spec": spec});
    c.adapt_pod(&mut pod);
    let pod: Pod = serde_json::from_value(pod).map_err(|e| fail(e.to_string()))?;
    let api: Api<Pod> = Api::namespaced(env.guest.clone(), &p.namespace);
    api.create(&PostParams::default(), &pod).await.map_err(|e| fail(format!("creating pod {}: {e}", p.name)))?;
    Ok(())
}

pub(super) async fn delete<C: Cluster>(c: &C, d: &model::Delete) -> Result<()> {
    let env = c.env();
    if let Some(pod) = &d.pod {
        let api: Api<Pod> = Api::namespaced(env.guest.clone(), &d.namespace);
        api.delete(pod, &DeleteParams::default()).await.map_err(|e| fail(format!("deleting pod {pod}: {e}")))?;
        if !d.wait {
            return Ok(());
        }
        // As `kubectl delete` waits: the kubelet unpublishes and unstages first.
        return eventually(Duration::from_secs(90), &format!("pod {pod} to go"), || async {
            Ok(api.get_opt(pod).await.map_err(|e| fail(e.to_string()))?.map(|_| "still terminating".to_string()))
        })
        .await;
    }
    if let Some(pvc) = &d.pvc {
        env.pvcs(&d.namespace)
            .delete(pvc, &DeleteParams::default())
            .await
            .map_err(|e| fail(format!("deleting pvc {pvc}: {e}")))?;
        return Ok(());
    }
    if let Some(s) = &d.snapshot {
        crate::components::snapshotter::snapshots(env, &d.namespace)
            .delete(s, &DeleteParams::default())
            .await
            .map_err(|e| fail(format!("deleting snapshot {s}: {e}")))?;
        return Ok(());
    }
    Err(fail("delete needs pod, pvc or snapshot"))
}
