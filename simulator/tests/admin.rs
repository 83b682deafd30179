//! The simulator's admin API under `/sim/` driven over real HTTP: error faults,
//! watch drops, a listener restart, another release's guest RBAC, and the
//! per-release admission rules (online expansion, hotplug bus, declarative hotplug).
//! File-backed devices only: nothing here needs root.

mod common;

use std::time::Duration;

use common::{api_error, bounded, raw, Options, Sim};
use futures::StreamExt;
use harvester_simulator::api::quantity::parse_bytes;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};

const USER: &str = "system:serviceaccount:default:guest-cluster";

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": {"t": "admin"}}, "data": {"k": "v"}})).unwrap()
}

/// An admin API call that must succeed; returns the JSON reply.
async fn sim(s: &Sim, method: Method, path: &str, body: Option<Value>) -> Value {
    let (code, reply) = raw(&s.admin, method.clone(), path, body).await;
    assert_eq!(code, StatusCode::OK, "{method} {path}: {reply}");
    reply
}

/// The expected (code, reason, message) of a failed call.
fn assert_status(r: kube::Result<impl std::fmt::Debug>, code: u16, reason: &str, message: &str) {
    let err = api_error(r.expect_err("expected an API error"));
    assert_eq!((err.code, err.reason.as_str(), err.message.as_str()), (code, reason, message), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_faults_fail_matching_calls_until_their_count_runs_out_or_cleared() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "default");
        let nss: Api<Namespace> = Api::all(s.admin.clone());
        cms.create(&PostParams::default(), &cm("f")).await.unwrap();

        // The guest identity may not touch the admin API.
        let (code, body) = raw(&s.guest, Method::PUT, "/sim/faults", Some(json!({}))).await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["message"], format!("forbidden: User \"{USER}\" cannot use the simulator admin API"));

        // Rate 1.0 on `get configmaps`: exactly those calls fail, with a Status body.
        let spec = json!({"errors": [{"verb": "get", "resource": "configmaps", "rate": 1.0, "code": 500}]});
        assert_eq!(sim(&s, Method::PUT, "/sim/faults", Some(spec.clone())).await, spec);
        assert_eq!(sim(&s, Method::GET, "/sim/faults", None).await, spec);
        for _ in 0..3 {
            assert_status(cms.get("f").await, 500, "InternalError", "injected fault: get configmaps");
        }
        let (code, body) = raw(&s.admin, Method::GET, "/api/v1/namespaces/default/configmaps/f", None).await;
        assert_eq!(code, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!((&body["kind"], &body["status"], &body["code"]), (&json!("Status"), &json!("Failure"), &json!(500)));
        // Other verbs on configmaps and gets of other resources are untouched.
        assert_eq!(cms.list(&ListParams::default()).await.unwrap().items.len(), 1);
        let merge = Patch::Merge(json!({"data": {"k": "patched"}}));
        assert_eq!(cms.patch("f", &PatchParams::default(), &merge).await.unwrap().data.unwrap()["k"], "patched");
        nss.get("default").await.unwrap();

        // `count` limits the failures; a group-qualified resource and a custom message.
        let spec = json!({"errors": [
            {"verb": "get", "resource": "namespaces", "code": 409, "count": 2},
            {"verb": "list", "resource": "volumes.longhorn.io", "code": 500, "message": "longhorn-manager is down"},
        ]});
        sim(&s, Method::PUT, "/sim/faults", Some(spec)).await;
        for _ in 0..2 {
            assert_status(nss.get("default").await, 409, "Conflict", "injected fault: get namespaces");
        }
        assert_eq!(nss.get("default").await.unwrap().name_any(), "default", "the third get must pass");
        assert_eq!(sim(&s, Method::GET, "/sim/faults", None).await["errors"][0]["count"], 0);
        let volumes = common::longhorn_volumes(&s.admin);
        assert_status(volumes.list(&ListParams::default()).await, 500, "InternalError", "longhorn-manager is down");
        assert!(volumes.get_opt("pvc-none").await.unwrap().is_none(), "get volumes is not faulted");
        assert_eq!(cms.get("f").await.unwrap().data.unwrap()["k"], "patched", "the new spec replaced the old");

        // kube-rs retries 429/503/504 on its own: a counted 503 is absorbed (but consumed).
        let spec = json!({"errors": [{"verb": "get", "resource": "configmaps", "code": 503, "count": 3}]});
        sim(&s, Method::PUT, "/sim/faults", Some(spec)).await;
        cms.get("f").await.expect("kube-rs retries a 503");
        assert_eq!(sim(&s, Method::GET, "/sim/faults", None).await["errors"][0]["count"], 0);

        // Nonsense is refused and leaves the current faults in place.
        for (bad, why) in [
            (json!({"errors": [{"rate": 1.5}]}), "errors: rate 1.5 is outside [0, 1]"),
            (json!({"errors": [{"code": 200}]}), "errors: code 200 is not an HTTP error status"),
            (
                json!({"stuckHotplug": [{"phase": "Nope"}]}),
                "stuckHotplug: phase \"Nope\" is not one of Pending, Bound, AttachedToNode, MountedToPod, Detaching",
            ),
        ] {
            let (code, body) = raw(&s.admin, Method::PUT, "/sim/faults", Some(bad)).await;
            assert_eq!(
                (code, &body["reason"], &body["message"]),
                (StatusCode::BAD_REQUEST, &json!("BadRequest"), &json!(why))
            );
        }
        let (code, body) = raw(&s.admin, Method::PUT, "/sim/faults", Some(json!({"errorz": []}))).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["message"].as_str().unwrap().starts_with("invalid body: unknown field `errorz`"), "{body}");
        assert_eq!(sim(&s, Method::GET, "/sim/faults", None).await["errors"][0]["code"], 503);

        // Latency delays matching calls (and replaces the error faults: they are gone).
        let spec = json!({"latency": [{"verb": "list", "resource": "configmaps", "millis": 600}]});
        sim(&s, Method::PUT, "/sim/faults", Some(spec)).await;
        let started = std::time::Instant::now();
        cms.list(&ListParams::default()).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(600), "list took only {:?}", started.elapsed());
        cms.get("f").await.expect("no error faults left");

        // Defaults (every verb and resource, rate 1.0) with the server's own reason for the code;
        // clearing restores normal answers.
        sim(&s, Method::PUT, "/sim/faults", Some(json!({"errors": [{"code": 405}]}))).await;
        assert_status(nss.get("default").await, 405, "MethodNotAllowed", "injected fault: get namespaces");
        assert_eq!(sim(&s, Method::PUT, "/sim/faults", Some(json!({}))).await, json!({}));
        volumes.list(&ListParams::default()).await.unwrap();
        nss.get("default").await.unwrap();
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_watches_end_and_a_watcher_resumes_without_relisting() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "default");
        cms.create(&PostParams::default(), &cm("before")).await.unwrap();
        let mut stream = cms.watch(&WatchParams::default().labels("t=admin"), "0").await.unwrap().boxed();
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("no initial event") {
            Some(Ok(WatchEvent::Added(o))) => assert_eq!(o.name_any(), "before"),
            other => panic!("expected ADDED before, got {other:?}"),
        }
        let mut w = watcher(cms.clone(), watcher::Config::default().labels("t=admin")).boxed();
        let mut listed = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("watcher stalled") {
                Some(Ok(watcher::Event::InitApply(o))) => listed.push(o.name_any()),
                Some(Ok(watcher::Event::InitDone)) => break,
                Some(Ok(_)) => {}
                other => panic!("watcher failed before the drop: {other:?}"),
            }
        }
        assert_eq!(listed, ["before"]);

        assert_eq!(sim(&s, Method::POST, "/sim/watches/drop", None).await, json!({"dropped": true}));
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(None) => {}
            other => panic!("the open watch did not end after the drop: {other:?}"),
        }

        // The watcher re-watches from its last version: later changes arrive, no relist.
        cms.create(&PostParams::default(), &cm("after")).await.unwrap();
        loop {
            match tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("watcher stalled") {
                Some(Ok(watcher::Event::Apply(o))) if o.name_any() == "after" => break,
                Some(Ok(watcher::Event::Apply(o))) => assert_eq!(o.name_any(), "before"),
                other => panic!("expected the watcher to resume and see `after`, got {other:?}"),
            }
        }
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_takes_the_listener_away_and_keeps_every_object() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "default");
        let before = cms.create(&PostParams::default(), &cm("survivor")).await.unwrap();
        let old_rv = before.resource_version().unwrap();
        let mut open = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();

        let reply = sim(&s, Method::POST, "/sim/restart", Some(json!({"downtimeMs": 1500}))).await;
        assert_eq!(reply, json!({"restarting": true, "downtimeMs": 1500}));
        assert!(
            matches!(tokio::time::timeout(Duration::from_secs(5), open.next()).await, Ok(None)),
            "the open watch must end with the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        match cms.get("survivor").await {
            Err(kube::Error::Api(e)) => panic!("expected no answer while down, got the API error {e:?}"),
            Err(_) => {}
            Ok(_) => panic!("the API answered during the restart's downtime"),
        }

        // Back: same objects, same versions; both identities work again.
        let after = common::eventually("the API to come back", || {
            let cms = cms.clone();
            async move { cms.get("survivor").await.ok() }
        })
        .await;
        assert_eq!((after.uid(), after.resource_version()), (before.uid(), before.resource_version()));
        let merge = Patch::Merge(json!({"data": {"k": "after-restart"}}));
        cms.patch("survivor", &PatchParams::default(), &merge).await.unwrap();
        let sv = common::settings(&s.guest).get("server-version").await.unwrap();
        assert_eq!(sv.data["value"], "v1.5.2");
        assert_eq!(sim(&s, Method::GET, "/sim/info", None).await["profile"], "v1.5");

        // The watch history did not survive: resuming from an old version is 410.
        let mut old = cms.watch(&WatchParams::default(), &old_rv).await.unwrap().boxed();
        match tokio::time::timeout(Duration::from_secs(5), old.next()).await.expect("no watch answer") {
            Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
            other => panic!("expected 410 Expired, got {other:?}"),
        }
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_of_another_release_changes_what_the_guest_may_do() {
    bounded(60, async {
        let s = common::start(Options::profile("v1.3")).await;
        let volumes = common::longhorn_volumes(&s.guest);
        let scs: Api<StorageClass> = Api::all(s.guest.clone());
        let get_denied = format!("volumes.longhorn.io \"pvc-x\" is forbidden: User \"{USER}\" cannot get resource \"volumes\" in API group \"longhorn.io\" in the namespace \"longhorn-system\"");
        assert_status(volumes.get("pvc-x").await, 403, "Forbidden", &get_denied);

        // v1.4 rules (harvester#6849 fix): Longhorn volumes get/list, still no writes.
        assert_eq!(sim(&s, Method::POST, "/sim/rbac/v1.4", None).await, json!({"rbacOf": "v1.4"}));
        assert!(volumes.get_opt("pvc-x").await.unwrap().is_none(), "allowed now: a plain 404");
        volumes.list(&ListParams::default()).await.unwrap();
        assert_status(
            volumes.delete("pvc-x", &DeleteParams::default()).await,
            403,
            "Forbidden",
            &format!("volumes.longhorn.io \"pvc-x\" is forbidden: User \"{USER}\" cannot delete resource \"volumes\" in API group \"longhorn.io\" in the namespace \"longhorn-system\""),
        );

        // v1.2 has no csi-driver role at all: even storage classes go.
        sim(&s, Method::POST, "/sim/rbac/1.2", None).await;
        assert_status(
            scs.list(&ListParams::default()).await,
            403,
            "Forbidden",
            &format!("storageclasses.storage.k8s.io is forbidden: User \"{USER}\" cannot list resource \"storageclasses\" in API group \"storage.k8s.io\" at the cluster scope"),
        );
        let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(s.admin.clone());
        assert!(roles.get_opt("harvesterhci.io:csi-driver").await.unwrap().is_none());

        // Back to the release's own rules.
        sim(&s, Method::POST, "/sim/rbac/v1.3", None).await;
        assert!(!scs.list(&ListParams::default()).await.unwrap().items.is_empty());
        assert_status(volumes.get("pvc-x").await, 403, "Forbidden", &get_denied);

        let (code, body) = raw(&s.admin, Method::POST, "/sim/rbac/v9.9", None).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            body["message"],
            "unknown Harvester profile \"v9.9\"; known profiles: v1.2, v1.3, v1.4, v1.5, v1.6, v1.7, v1.8"
        );
        s.shutdown().await;
    })
    .await
}

/// Starts `profile`, cold-plugs a bound 64Mi block claim into the running
/// guest-1's template, and asks (as the guest) to grow it to 128Mi.
async fn expand_in_use(profile: &'static str) -> (Sim, kube::Result<PersistentVolumeClaim>) {
    let s = common::start(Options::profile(profile)).await;
    common::bound_pvc(&s.guest, "default", "grow", "Block", "64Mi").await;
    let vmis = common::vmis(&s.admin, "default");
    common::eventually("guest-1 VMI", || {
        let vmis = vmis.clone();
        async move { vmis.get_opt("guest-1").await.ok()? }
    })
    .await;
    let add: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/template/spec/volumes/-",
         "value": {"name": "grow", "persistentVolumeClaim": {"claimName": "grow"}}},
        {"op": "add", "path": "/spec/template/spec/domain/devices/disks/-",
         "value": {"name": "grow", "disk": {"bus": "virtio"}}},
    ]))
    .unwrap();
    common::vms(&s.admin, "default").patch("guest-1", &PatchParams::default(), &Patch::Json::<()>(add)).await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(s.guest.clone(), "default");
    let grow = Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "128Mi"}}}}));
    let result = pvcs.patch("grow", &PatchParams::default(), &grow).await;
    (s, result)
}

async fn capacity_reaches(s: &Sim, bytes: u64) {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(s.admin.clone(), "default");
    common::eventually(&format!("capacity {bytes}"), || {
        let pvcs = pvcs.clone();
        async move {
            let cap = pvcs.get("grow").await.ok()?.status?.capacity?.get("storage")?.0.clone();
            (parse_bytes(&cap)? == bytes).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_expansion_is_denied_before_v1_6_and_allowed_from_it() {
    bounded(90, async {
        let (s, result) = expand_in_use("v1.5").await;
        assert_status(result, 422, "Invalid", "admission webhook \"validator.harvesterhci.io\" denied the request: PVC_EXPAND: can not expand volume grow while it is used by running VM default/guest-1; stop the VM first");
        // Offline expansion is fine on the same release.
        sim(&s, Method::POST, "/sim/vms/default/guest-1/stop", None).await;
        let vmis = common::vmis(&s.admin, "default");
        common::eventually("guest-1 VMI to go", || {
            let vmis = vmis.clone();
            async move { vmis.get_opt("guest-1").await.ok()?.is_none().then_some(()) }
        })
        .await;
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(s.guest.clone(), "default");
        let grow = Patch::Merge(json!({"spec": {"resources": {"requests": {"storage": "128Mi"}}}}));
        pvcs.patch("grow", &PatchParams::default(), &grow).await.expect("offline expansion");
        capacity_reaches(&s, 128 << 20).await;
        s.shutdown().await;

        let (s, result) = expand_in_use("v1.6").await;
        let pvc = result.expect("v1.6 allows online expansion of a Longhorn block volume");
        assert_eq!(pvc.spec.unwrap().resources.unwrap().requests.unwrap()["storage"].0, "128Mi");
        capacity_reaches(&s, 128 << 20).await;
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmi_addvolume_follows_each_releases_kubevirt_rules() {
    bounded(120, async {
        let scsi_only = "admission webhook \"virtualmachine-validator.kubevirt.io\" denied the request: hotplugged Disk hv does not use a scsi bus";
        for (profile, code, reason, message) in [
            ("v1.6", StatusCode::UNPROCESSABLE_ENTITY, "Invalid", scsi_only),
            ("v1.7", StatusCode::ACCEPTED, "", ""),
            ("v1.8", StatusCode::BAD_REQUEST, "BadRequest", "VMI default/guest-1 is owned by a VM"),
        ] {
            let s = common::start(Options::profile(profile)).await;
            common::bound_pvc(&s.guest, "default", "hv", "Block", "16Mi").await;
            let vmis = common::vmis(&s.admin, "default");
            common::eventually("guest-1 Running", || {
                let vmis = vmis.clone();
                async move { (vmis.get("guest-1").await.ok()?.data["status"]["phase"] == "Running").then_some(()) }
            })
            .await;
            let body = json!({"name": "hv", "disk": {"disk": {"bus": "virtio"}},
                              "volumeSource": {"persistentVolumeClaim": {"claimName": "hv"}}});
            let (got, reply) =
                common::volume_subresource(&s.guest, "default", "virtualmachineinstances", "guest-1", "addvolume", body)
                    .await;
            assert_eq!(got, code, "{profile}: {reply}");
            let vmi = vmis.get("guest-1").await.unwrap();
            let in_spec = vmi.data["spec"]["volumes"].as_array().unwrap().iter().any(|v| v["name"] == "hv");
            if code == StatusCode::ACCEPTED {
                assert_eq!(reply, json!(""), "{profile}: 202 has an empty body");
                assert!(in_spec, "{profile}: the VMI spec must carry the volume");
                let disks = vmi.data["spec"]["domain"]["devices"]["disks"].as_array().unwrap().clone();
                let disk = disks.into_iter().find(|d| d["name"] == "hv");
                assert_eq!(disk, Some(json!({"name": "hv", "disk": {"bus": "virtio"}})), "{profile}");
            } else {
                assert_eq!((&reply["kind"], &reply["code"]), (&json!("Status"), &json!(code.as_u16())), "{profile}");
                assert_eq!((&reply["reason"], &reply["message"]), (&json!(reason), &json!(message)), "{profile}");
                assert!(!in_spec, "{profile}: a refused addvolume must not change the VMI");
            }
            s.shutdown().await;
        }
    })
    .await
}
