//! Executing scenario steps against a running backend.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::Discovery;
use serde_json::{json, Value};
use sha2::Digest;

use crate::backend::Cluster;
use crate::model::{self, Step};
use crate::Failure;

type Result<T> = std::result::Result<T, Failure>;

fn fail(msg: impl Into<String>) -> Failure {
    Failure(msg.into())
}

/// Bytes of a Kubernetes quantity (sizes only).
pub fn quantity(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn sha(data: &[u8]) -> String {
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn at<'a>(v: &'a Value, dotted: &str) -> Option<&'a Value> {
    let pointer = format!(
        "/{}",
        dotted.split('.').map(|p| p.replace('~', "~0").replace('/', "~1")).collect::<Vec<_>>().join("/")
    );
    v.pointer(&pointer)
}

/// Polls `check` every 100 ms until it returns Ok(true) or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>>>,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match check().await {
            Ok(None) => return Ok(()),
            Ok(Some(why)) => why,
            Err(e) => e.0,
        };
        if Instant::now() >= deadline {
            return Err(fail(format!("{what}: not within {within:?}: {last}")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn apply<C: Cluster>(c: &C, objects: &[Value]) -> Result<()> {
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

async fn warning_events(c: &impl Cluster, ns: &str, name: &str) -> Vec<String> {
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

async fn expect<C: Cluster>(c: &C, e: &model::Expect) -> Result<()> {
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
                let have = p
                    .status
                    .as_ref()
                    .and_then(|s| s.capacity.as_ref())
                    .and_then(|c| c.get("storage"))
                    .and_then(|q| quantity(&q.0))
                    .unwrap_or(0);
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
            Ok(None)
        })
        .await;
    }
    if let Some(snap) = &e.snapshot {
        let api = crate::components::snapshotter::snapshots(env, &e.namespace);
        eventually(e.within, &format!("snapshot {snap}"), || async {
            let s = api.get(snap).await.map_err(|x| fail(x.to_string()))?;
            Ok(if s.data.pointer("/status/readyToUse") == Some(&json!(true)) { None } else { Some("not ready".into()) })
        })
        .await?;
        if let Some(prefix) = &e.handle_prefix {
            let handle = crate::components::snapshotter::handle_of(env, &e.namespace, snap).await.map_err(fail)?;
            if !handle.starts_with(prefix.as_str()) {
                return Err(fail(format!("snapshot {snap} has handle {handle:?}, not one starting with {prefix:?}")));
            }
            host_object_of_handle(env, &handle).await?;
        }
        return Ok(());
    }
    Err(fail("expect needs pvc, pod or snapshot"))
}

/// The host PVC of a guest PVC (by the PV's volume handle).
async fn host_pvc_of<C: Cluster>(c: &C, ns: &str, claim: &str) -> Result<Value> {
    let env = c.env();
    let pvc = env.pvcs(ns).get(claim).await.map_err(|e| fail(format!("guest pvc {claim}: {e}")))?;
    let pv_name =
        pvc.spec.and_then(|s| s.volume_name).ok_or_else(|| fail(format!("guest pvc {claim} is not bound")))?;
    let pv = env.pvs().get(&pv_name).await.map_err(|e| fail(e.to_string()))?;
    let handle = crate::components::pv_handle(&pv);
    let api: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
    let host = api.get(&handle).await.map_err(|e| fail(format!("host pvc {handle}: {e}")))?;
    serde_json::to_value(host).map_err(|e| fail(e.to_string()))
}

async fn expect_host<C: Cluster>(c: &C, e: &model::ExpectHost) -> Result<()> {
    let env = c.env();
    if let Some(claim) = &e.pvc_of {
        return eventually(e.within, &format!("host volume of {claim}"), || async {
            let host = host_pvc_of(c, "default", claim).await?;
            for (k, v) in &e.labels {
                let have = host.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
                if have != Some(v.as_str()) && !(v == "*" && have.is_some()) {
                    return Ok(Some(format!("label {k}={have:?}, want {v}")));
                }
            }
            for (k, v) in &e.annotations {
                let have = host.pointer("/metadata/annotations").and_then(|l| l.get(k)).and_then(Value::as_str);
                if have != Some(v.as_str()) && !(v == "*" && have.is_some()) {
                    return Ok(Some(format!("annotation {k}={have:?}, want {v}")));
                }
            }
            for (k, v) in &e.fields {
                let have = at(&host, k).map(|x| x.as_str().map(String::from).unwrap_or_else(|| x.to_string()));
                if have.as_deref() != Some(v.as_str()) {
                    return Ok(Some(format!("{k}={have:?}, want {v}")));
                }
            }
            if let Some(n) = e.loop_devices {
                let pv = host.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").to_string();
                let have = c.loop_devices_of(&pv).await?;
                if have != n {
                    return Ok(Some(format!("{have} loop device(s) back the volume, want {n}")));
                }
            }
            Ok(None)
        })
        .await;
    }
    if e.no_host_volumes {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
        let selector = "app.kubernetes.io/managed-by=harvester-csi-driver";
        return eventually(e.within, "no host volume left", || async {
            let mut left: Vec<String> = api
                .list(&kube::api::ListParams::default().labels(selector))
                .await
                .map_err(|x| fail(x.to_string()))?
                .items
                .into_iter()
                .filter_map(|p| p.metadata.name.map(|n| format!("pvc/{n}")))
                .collect();
            // Each scenario has its own host: no PV or Longhorn volume may remain either.
            let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(env.host.clone());
            left.extend(
                pvs.list(&Default::default())
                    .await
                    .map_err(|x| fail(x.to_string()))?
                    .items
                    .into_iter()
                    .filter_map(|p| p.metadata.name.map(|n| format!("pv/{n}"))),
            );
            let lh = ApiResource::from_gvk_with_plural(
                &kube::core::GroupVersionKind::gvk("longhorn.io", "v1beta2", "Volume"),
                "volumes",
            );
            let volumes: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), "longhorn-system", &lh);
            left.extend(
                volumes
                    .list(&Default::default())
                    .await
                    .map_err(|x| fail(x.to_string()))?
                    .items
                    .into_iter()
                    .filter_map(|v| v.metadata.name.map(|n| format!("longhorn-volume/{n}"))),
            );
            Ok(if left.is_empty() { None } else { Some(format!("host volumes left: {}", left.join(", "))) })
        })
        .await;
    }
    if let Some(vm) = &e.vmi {
        let want: BTreeSet<String> = e.hotplugged.clone().unwrap_or_default().into_iter().collect();
        let ar = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
            "virtualmachineinstances",
        );
        let vmis: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), &env.host_namespace, &ar);
        return eventually(e.within, &format!("hot-plugged volumes of {vm}"), || async {
            let vmi = vmis.get(vm).await.map_err(|x| fail(x.to_string()))?;
            let mut have = BTreeSet::new();
            let mut phases = Vec::new();
            for s in vmi.data.pointer("/status/volumeStatus").and_then(Value::as_array).into_iter().flatten() {
                if s.get("hotplugVolume").is_none() {
                    continue;
                }
                let claim = s.pointer("/persistentVolumeClaimInfo/claimName").and_then(Value::as_str).unwrap_or("");
                let api: Api<PersistentVolumeClaim> = Api::namespaced(env.host.clone(), &env.host_namespace);
                let guest_name = api
                    .get_opt(claim)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|p| p.metadata.annotations)
                    .and_then(|a| a.get("csi.harvesterhci.io/guest-pvc-name").cloned())
                    .unwrap_or_else(|| claim.to_string());
                let phase = s.get("phase").and_then(Value::as_str).unwrap_or("").to_string();
                phases.push(format!("{guest_name}: {phase}"));
                if e.hotplug_phase.as_ref().is_some_and(|want| *want != phase) {
                    continue;
                }
                have.insert(guest_name);
            }
            Ok(if have == want {
                None
            } else {
                Some(format!("hot-plugged {have:?}, want {want:?} (phases: {})", phases.join(", ")))
            })
        })
        .await;
    }
    if let Some(claim) = &e.export_of {
        let want = e.export_state.clone().unwrap_or_else(|| "Enabled".into());
        let ar = ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("harvesterhci.io", "v1beta1", "NetworkFilesystem"),
            "networkfilesystems",
        );
        let nfs: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), "harvester-system", &ar);
        return eventually(e.within, &format!("export of {claim}"), || async {
            let host = host_pvc_of(c, "default", claim).await?;
            let pv = host.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").to_string();
            let state = match nfs.get_opt(&pv).await.map_err(|x| fail(x.to_string()))? {
                None => "absent".to_string(),
                Some(o) => o.data.pointer("/status/state").and_then(Value::as_str).unwrap_or("").to_string(),
            };
            Ok(if state == want { None } else { Some(format!("export state {state}, want {want}")) })
        })
        .await;
    }
    Err(fail("expectHost needs pvcOf, vmi, exportOf or noHostVolumes"))
}

async fn run_pod<C: Cluster>(c: &C, p: &model::RunPod) -> Result<()> {
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
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": p.name, "namespace": p.namespace, "finalizers": [crate::components::kubelet::FINALIZER]},
        "spec": {"nodeName": p.node, "containers": [{"name": "app", "image": "busybox", "volumeMounts": mounts, "volumeDevices": devices}], "volumes": volumes},
    }))
    .map_err(|e| fail(e.to_string()))?;
    let api: Api<Pod> = Api::namespaced(env.guest.clone(), &p.namespace);
    api.create(&PostParams::default(), &pod).await.map_err(|e| fail(format!("creating pod {}: {e}", p.name)))?;
    Ok(())
}

async fn delete<C: Cluster>(c: &C, d: &model::Delete) -> Result<()> {
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

/// Where a pod path lands: (file or device on this machine, offset base, block).
fn pod_path<C: Cluster>(c: &C, pod: &str, path: &str) -> Result<(std::path::PathBuf, bool)> {
    let key = if pod.contains('/') { pod.to_string() } else { format!("default/{pod}") };
    let k = c.env().kubelet.lock().unwrap_or_else(|p| p.into_inner());
    let vols = k.pods.get(&key).ok_or_else(|| fail(format!("pod {pod} has no published volumes (is it Running?)")))?;
    for v in vols {
        if v.block && path == v.mount_path {
            return Ok((v.host_path.clone(), true));
        }
        if let Some(rest) = path.strip_prefix(v.mount_path.trim_end_matches('/')) {
            if rest.is_empty() || rest.starts_with('/') {
                return Ok((v.host_path.join(rest.trim_start_matches('/')), false));
            }
        }
    }
    Err(fail(format!("{path} is not on a volume of pod {pod}")))
}

async fn write<C: Cluster>(c: &C, w: &model::Write) -> Result<()> {
    use rand::RngCore;
    let mut data = vec![0u8; w.random_bytes as usize];
    rand::rng().fill_bytes(&mut data);
    let (path, block) = pod_path(c, &w.pod, &w.path)?;
    let checksum = sha(&data);
    let path2 = path.clone();
    let offset = w.offset;
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let mut f =
            if block { std::fs::OpenOptions::new().write(true).open(&path2)? } else { std::fs::File::create(&path2)? };
        f.seek(SeekFrom::Start(offset))?;
        f.write_all(&data)?;
        f.sync_all()
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("writing {} in pod {}: {e}", w.path, w.pod)))?;
    c.env()
        .checksums
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(w.remember.clone(), format!("{checksum}:{}", w.random_bytes));
    Ok(())
}

async fn read<C: Cluster>(c: &C, r: &model::Read) -> Result<()> {
    let remembered = c
        .env()
        .checksums
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&r.checksum)
        .cloned()
        .ok_or_else(|| fail(format!("no remembered checksum {:?}", r.checksum)))?;
    let (want, len) = remembered.split_once(':').ok_or_else(|| fail("bad checksum record"))?;
    let len: u64 = r.length.unwrap_or_else(|| len.parse().unwrap_or(0));
    let (path, block) = pod_path(c, &r.pod, &r.path)?;
    let offset = r.offset;
    let data = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(&path)?;
        if block {
            // Bypass the page cache of another node's view: read what the device holds.
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        } else {
            let mut buf = Vec::new();
            f.read_to_end(&mut buf)?;
            Ok(buf)
        }
    })
    .await
    .map_err(|e| fail(e.to_string()))?
    .map_err(|e| fail(format!("reading {} in pod {}: {e}", r.path, r.pod)))?;
    let have = sha(&data);
    if have != want {
        return Err(fail(format!(
            "{} in pod {}: checksum {} != remembered {}",
            r.path,
            r.pod,
            &have[..12],
            &want[..12.min(want.len())]
        )));
    }
    Ok(())
}

async fn fault<C: Cluster>(c: &mut C, f: &model::Fault) -> Result<()> {
    if let Some(spec) = &f.set {
        c.host_admin("PUT", "faults", Some(spec.clone())).await?;
    }
    if f.clear {
        c.host_admin("PUT", "faults", Some(json!({}))).await?;
    }
    if let Some(vm) = &f.stop_vm {
        c.host_admin("POST", &format!("vms/{}/{vm}/stop", c.env().host_namespace), None).await?;
    }
    if let Some(vm) = &f.start_vm {
        c.host_admin("POST", &format!("vms/{}/{vm}/start", c.env().host_namespace), None).await?;
    }
    if let Some(p) = &f.rbac {
        c.host_admin("POST", &format!("rbac/{p}"), None).await?;
    }
    if f.drop_watches {
        c.host_admin("POST", "watches/drop", None).await?;
    }
    if let Some(claim) = &f.move_share_of {
        let host = host_pvc_of(c, "default", claim).await?;
        let pv = host.pointer("/spec/volumeName").and_then(Value::as_str).unwrap_or("").to_string();
        c.host_admin("POST", &format!("sharemanagers/{pv}/move"), None).await?;
    }
    if let Some(what) = &f.kill_and_restart {
        c.kill_and_restart(what).await?;
    }
    Ok(())
}

async fn orphan_report<C: Cluster>(c: &C, o: &model::OrphanReport) -> Result<()> {
    let rows = c.orphan_report().await?;
    let row = |claim: &str| {
        let want = if claim.contains('/') { claim.to_string() } else { format!("default/{claim}") };
        rows.iter().find(|r| r.get("guestClaim").and_then(Value::as_str) == Some(want.as_str())).cloned()
    };
    for claim in &o.orphans {
        let r = row(claim).ok_or_else(|| fail(format!("the orphan report does not list {claim} (rows: {rows:?})")))?;
        if r.get("orphan") != Some(&json!(true)) {
            return Err(fail(format!("{claim} is not reported as an orphan: {r}")));
        }
    }
    for claim in &o.in_use {
        let r = row(claim).ok_or_else(|| fail(format!("the orphan report does not list {claim}")))?;
        if r.get("orphan") != Some(&json!(false))
            || r.get("attachedTo").and_then(Value::as_array).is_none_or(|a| a.is_empty())
        {
            return Err(fail(format!("{claim} should be reported attached, not orphaned: {r}")));
        }
    }
    Ok(())
}

pub async fn run_step<C: Cluster>(c: &mut C, step: &Step) -> Result<()> {
    match step {
        Step::Apply(objs) => apply(c, objs).await,
        Step::Delete(d) => delete(c, d).await,
        Step::RunPod(p) => run_pod(c, p).await,
        Step::Expect(e) => expect(c, e).await,
        Step::ExpectHost(e) => expect_host(c, e).await,
        Step::Write(w) => write(c, w).await,
        Step::Read(r) => read(c, r).await,
        Step::Expand(e) => {
            let size = model::parse_size(&e.size).map_err(fail)?;
            c.env()
                .pvcs(&e.namespace)
                .patch(
                    &e.pvc,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": size.to_string()}}}})),
                )
                .await
                .map_err(|x| fail(format!("expanding {}: {x}", e.pvc)))?;
            Ok(())
        }
        Step::Snapshot(s) => {
            let mut spec = json!({"source": {"persistentVolumeClaimName": s.pvc}});
            if let Some(class) = &s.class_name {
                spec["volumeSnapshotClassName"] = json!(class);
            }
            apply(c, &[json!({"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": s.name, "namespace": s.namespace}, "spec": spec})]).await
        }
        Step::Fault(f) => fault(c, f).await,
        Step::Sleep(d) => {
            tokio::time::sleep(*d).await;
            Ok(())
        }
        Step::OrphanReport(o) => orphan_report(c, o).await,
        Step::InFlight(f) => {
            let (env, phase) = (c.env(), f.phase.to_string());
            eventually(f.within, &format!("a {phase} call in flight on {}", f.node), || async {
                Ok((!env.is_in_flight(&phase, &f.node)).then(|| "none under way".to_string()))
            })
            .await
        }
        Step::NeverDoubleAttached(on) => {
            if *on {
                c.watch_double_attach();
            }
            Ok(())
        }
    }
}

/// The host object a snapshot handle names must exist: a VolumeRemoteBackup for
/// `backup:<namespace>/<name>`, a host VolumeSnapshot otherwise.
async fn host_object_of_handle(env: &crate::env::Env, handle: &str) -> Result<()> {
    let (group, version, kind, plural, namespace, name) = match handle.strip_prefix("backup:") {
        Some(rest) => {
            let (ns, name) = rest.split_once('/').ok_or_else(|| fail(format!("malformed backup handle {handle:?}")))?;
            ("harvesterhci.io", "v1beta1", "VolumeRemoteBackup", "volumeremotebackups", ns.to_string(), name)
        }
        None => {
            ("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", "volumesnapshots", env.host_namespace.clone(), handle)
        }
    };
    let ar = ApiResource::from_gvk_with_plural(&kube::core::GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(env.host.clone(), &namespace, &ar);
    match api.get_opt(name).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(fail(format!("snapshot handle {handle:?} names no host {kind} {namespace}/{name}"))),
        Err(x) => Err(fail(format!("reading host {kind} {namespace}/{name}: {x}"))),
    }
}
