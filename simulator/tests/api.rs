//! The Kubernetes API surface as kube-rs sees it: CRUD, optimistic concurrency,
//! watches (resume, 410 and relist), selectors, pagination, patches, finalizers,
//! RBAC per profile and error statuses.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{api_error, bounded, dynamic, raw, raw_bytes, settings, Options};
use futures::{StreamExt, TryStreamExt};
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("k".to_string(), "v".to_string())])),
        ..Default::default()
    }
}

async fn namespace(client: &kube::Client, name: &str) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace { metadata: ObjectMeta { name: Some(name.into()), ..Default::default() }, ..Default::default() };
    nss.create(&PostParams::default(), &ns).await.expect("creating namespace");
}

fn names<K: kube::Resource>(items: &[K]) -> Vec<String> {
    let mut n: Vec<String> = items.iter().map(|o| o.meta().name.clone().unwrap_or_default()).collect();
    n.sort();
    n
}

type WatcherStream = futures::stream::BoxStream<'static, Result<watcher::Event<ConfigMap>, watcher::Error>>;

async fn next(w: &mut WatcherStream) -> Option<Result<watcher::Event<ConfigMap>, watcher::Error>> {
    tokio::time::timeout(Duration::from_secs(10), w.next()).await.expect("watcher stalled")
}

/// Next watch event within a few seconds.
async fn next_event<S, K>(stream: &mut S) -> WatchEvent<K>
where
    S: futures::Stream<Item = kube::Result<WatchEvent<K>>> + Unpin,
{
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("no watch event within 5 s")
            .expect("watch stream ended")
            .expect("watch error");
        if !matches!(ev, WatchEvent::Bookmark(_)) {
            return ev;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_on_core_and_crd_kinds() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        namespace(&s.admin, "crud").await;

        // Core: ConfigMap.
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "crud");
        let created = cms.create(&PostParams::default(), &cm("one", &[("app", "a")])).await.unwrap();
        assert!(created.metadata.uid.is_some() && created.metadata.resource_version.is_some());
        assert!(created.metadata.creation_timestamp.is_some());
        let mut got = cms.get("one").await.unwrap();
        assert_eq!(got.metadata.uid, created.metadata.uid);
        got.data.get_or_insert_default().insert("k".into(), "changed".into());
        let replaced = cms.replace("one", &PostParams::default(), &got).await.unwrap();
        assert_eq!(replaced.data.as_ref().unwrap()["k"], "changed");
        assert_ne!(replaced.metadata.resource_version, created.metadata.resource_version);

        // Stale replace → 409 Conflict.
        let err = api_error(cms.replace("one", &PostParams::default(), &got).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"), "{err:?}");
        assert!(err.message.contains("the object has been modified"), "{}", err.message);

        // Second create → 409 AlreadyExists.
        let err = api_error(cms.create(&PostParams::default(), &cm("one", &[])).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (409, "AlreadyExists"), "{err:?}");
        assert_eq!(err.message, "configmaps \"one\" already exists");

        // Missing → get_opt None (needs a NotFound Status body).
        assert!(cms.get_opt("missing").await.unwrap().is_none());

        let deleted = cms.delete("one", &DeleteParams::default()).await.unwrap();
        assert!(deleted.is_left() || deleted.is_right());
        assert!(cms.get_opt("one").await.unwrap().is_none());

        // CRD, cluster-scoped: a Harvester Setting.
        let st = settings(&s.admin);
        let setting: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting",
            "metadata": {"name": "test-setting"}, "value": "1",
        }))
        .unwrap();
        let created = st.create(&PostParams::default(), &setting).await.unwrap();
        let mut got = st.get("test-setting").await.unwrap();
        assert_eq!(got.data["value"], "1");
        got.data["value"] = json!("2");
        let replaced = st.replace("test-setting", &PostParams::default(), &got).await.unwrap();
        assert_eq!(replaced.data["value"], "2");
        let err = api_error(st.replace("test-setting", &PostParams::default(), &created).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
        assert_eq!(
            err.message,
            "Operation cannot be fulfilled on settings.harvesterhci.io \"test-setting\": the object has been modified; please apply your changes to the latest version and try again"
        );
        let err = api_error(st.create(&PostParams::default(), &setting).await.unwrap_err());
        assert_eq!(err.reason, "AlreadyExists");
        assert_eq!(err.message, "settings.harvesterhci.io \"test-setting\" already exists");
        assert!(st.get_opt("no-such-setting").await.unwrap().is_none());
        st.delete("test-setting", &DeleteParams::default()).await.unwrap();
        assert!(st.get_opt("test-setting").await.unwrap().is_none());

        // CRD, namespaced: a (stopped) VirtualMachine.
        let vms = common::vms(&s.admin, "crud");
        let vm: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm-x"},
            "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}}}}},
        }))
        .unwrap();
        vms.create(&PostParams::default(), &vm).await.unwrap();
        let listed = vms.list(&ListParams::default()).await.unwrap();
        assert_eq!(names(&listed.items), ["vm-x"]);
        let patched = vms
            .patch("vm-x", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await
            .unwrap();
        assert_eq!(patched.labels()["x"], "y");
        vms.delete("vm-x", &DeleteParams::default()).await.unwrap();
        assert!(vms.get_opt("vm-x").await.unwrap().is_none());

        // CRD replace without resourceVersion → 422 (CRDs forbid unconditional updates).
        let mut unconditional = st.get("server-version").await.unwrap();
        unconditional.metadata.resource_version = None;
        let err = api_error(st.replace("server-version", &PostParams::default(), &unconditional).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_version_and_relists_after_410() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        namespace(&s.admin, "w").await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "w");

        // Resume: only events after the given version.
        let a = cms.create(&PostParams::default(), &cm("a", &[("w", "1")])).await.unwrap();
        cms.create(&PostParams::default(), &cm("b", &[("w", "1")])).await.unwrap();
        cms.create(&PostParams::default(), &cm("c", &[("w", "1")])).await.unwrap();
        let rv = a.resource_version().unwrap();
        let mut stream = cms.watch(&WatchParams::default().labels("w=1"), &rv).await.unwrap().boxed();
        let mut seen = Vec::new();
        for _ in 0..2 {
            match next_event(&mut stream).await {
                WatchEvent::Added(o) => seen.push(o.name_any()),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen, ["b", "c"]);
        cms.delete("b", &DeleteParams::default()).await.unwrap();
        match next_event(&mut stream).await {
            WatchEvent::Deleted(o) => {
                assert_eq!(o.name_any(), "b");
                assert!(o.resource_version().is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        drop(stream);

        // A kube-runtime watcher, running across an expiry of every watch version.
        let mut w = watcher(cms.clone(), watcher::Config::default().labels("w=1")).boxed();
        let mut inits = 0;
        // Initial list.
        loop {
            match next(&mut w).await.expect("watcher ended") {
                Ok(watcher::Event::Init) => inits += 1,
                Ok(watcher::Event::InitDone) => break,
                Ok(_) => {}
                Err(e) => panic!("watcher error before expiry: {e}"),
            }
        }
        assert_eq!(inits, 1);

        // Old versions are gone now: watching from one is 410 Expired.
        let expire = http::Request::post("/sim/watches/expire").body(Vec::new()).unwrap();
        let reply = s.admin.request_text(expire).await.unwrap();
        assert!(reply.contains("\"expired\":true"), "{reply}");
        let mut old = cms.watch(&WatchParams::default(), &rv).await.unwrap().boxed();
        match tokio::time::timeout(Duration::from_secs(5), old.next()).await.unwrap() {
            Some(Ok(WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
            Some(Err(kube::Error::Api(e))) => assert_eq!(e.code, 410),
            other => panic!("expected 410, got {other:?}"),
        }
        drop(old);

        cms.create(&PostParams::default(), &cm("after-expiry", &[("w", "1")])).await.unwrap();
        // The watcher must relist (a new Init) and then see the new object.
        let mut saw_new = false;
        let mut relisted = false;
        let mut errors = 0;
        while !saw_new {
            match next(&mut w).await.expect("watcher ended") {
                Ok(watcher::Event::Init) => relisted = true,
                Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) if o.name_any() == "after-expiry" => {
                    saw_new = true
                }
                Ok(_) => {}
                Err(_) => {
                    errors += 1;
                    assert!(errors < 20, "watcher keeps failing");
                }
            }
        }
        assert!(relisted, "the watcher did not relist after 410");

        // And it keeps watching after the relist.
        cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "later"}}))).await.unwrap();
        loop {
            match next(&mut w).await.expect("watcher ended") {
                Ok(watcher::Event::Apply(o)) if o.name_any() == "a" => {
                    assert_eq!(o.data.unwrap()["k"], "later");
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("watcher error after relist: {e}"),
            }
        }
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_and_field_selectors() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        namespace(&s.admin, "sel").await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "sel");
        for (name, labels) in [
            ("red", vec![("color", "red"), ("tier", "web")]),
            ("green", vec![("color", "green")]),
            ("blue", vec![("color", "blue"), ("tier", "db")]),
            ("plain", vec![]),
        ] {
            cms.create(&PostParams::default(), &cm(name, &labels)).await.unwrap();
        }
        let list = |sel: &'static str| {
            let cms = cms.clone();
            async move { names(&cms.list(&ListParams::default().labels(sel)).await.unwrap().items) }
        };
        assert_eq!(list("color=red").await, ["red"]);
        assert_eq!(list("color==red").await, ["red"]);
        assert_eq!(list("color!=red").await, ["blue", "green", "plain"]);
        assert_eq!(list("color in (red,blue)").await, ["blue", "red"]);
        assert_eq!(list("color notin (red,blue)").await, ["green", "plain"]);
        assert_eq!(list("tier").await, ["blue", "red"]);
        assert_eq!(list("!tier").await, ["green", "plain"]);
        assert_eq!(list("color,tier=web").await, ["red"]);

        let by_name = cms.list(&ListParams::default().fields("metadata.name=green")).await.unwrap();
        assert_eq!(names(&by_name.items), ["green"]);
        let not_name = cms.list(&ListParams::default().fields("metadata.name!=green")).await.unwrap();
        assert_eq!(names(&not_name.items), ["blue", "plain", "red"]);

        // Pods by node.
        let pods: Api<Pod> = Api::namespaced(s.admin.clone(), "sel");
        for (name, node) in [("p1", "harvester-1"), ("p2", "harvester-2"), ("p3", "harvester-1")] {
            let pod: Pod = serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            }))
            .unwrap();
            pods.create(&PostParams::default(), &pod).await.unwrap();
        }
        let on1 = pods.list(&ListParams::default().fields("spec.nodeName=harvester-1")).await.unwrap();
        assert_eq!(names(&on1.items), ["p1", "p3"]);
        let both =
            pods.list(&ListParams::default().fields("spec.nodeName=harvester-1,metadata.name=p3")).await.unwrap();
        assert_eq!(names(&both.items), ["p3"]);

        // An unsupported field is a 400, a bad label selector too.
        let err = api_error(cms.list(&ListParams::default().fields("data.k=v")).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (400, "BadRequest"), "{err:?}");
        let err = api_error(cms.list(&ListParams::default().labels("color in red")).await.unwrap_err());
        assert_eq!(err.code, 400, "{err:?}");
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_with_limit_and_continue() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        namespace(&s.admin, "page").await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "page");
        for i in 0..7 {
            cms.create(&PostParams::default(), &cm(&format!("cm-{i}"), &[])).await.unwrap();
        }
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        loop {
            let mut lp = ListParams::default().limit(3);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = cms.list(&lp).await.unwrap();
            assert!(page.metadata.resource_version.is_some());
            assert!(page.items.len() <= 3);
            pages += 1;
            all.extend(page.items.iter().map(|o| o.name_any()));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => {
                    assert_eq!(page.metadata.remaining_item_count, Some(7 - all.len() as i64));
                    token = Some(c)
                }
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(all, (0..7).map(|i| format!("cm-{i}")).collect::<Vec<_>>());

        // A garbage token is a 400.
        let err = api_error(cms.list(&ListParams::default().limit(3).continue_token("garbage")).await.unwrap_err());
        assert_eq!(err.code, 400);
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_types() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        namespace(&s.admin, "patch").await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "patch");
        let created = cms.create(&PostParams::default(), &cm("p", &[("a", "1")])).await.unwrap();
        let pp = PatchParams::default();

        // Merge patch: null deletes, others merge.
        let merged = cms
            .patch("p", &pp, &Patch::Merge(json!({"metadata": {"labels": {"a": null, "b": "2"}}, "data": {"x": "y"}})))
            .await
            .unwrap();
        assert_eq!(merged.labels().get("a"), None);
        assert_eq!(merged.labels()["b"], "2");
        assert_eq!(merged.data.as_ref().unwrap()["x"], "y");
        assert_eq!(merged.data.as_ref().unwrap()["k"], "v");

        // Strategic merge on a built-in kind works.
        let strategic =
            cms.patch("p", &pp, &Patch::Strategic(json!({"metadata": {"labels": {"c": "3"}}}))).await.unwrap();
        assert_eq!(strategic.labels()["c"], "3");

        // JSON patch with a passing test op.
        let rv = strategic.resource_version().unwrap();
        let ok: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/data/j", "value": "1"},
        ]))
        .unwrap();
        let patched = cms.patch("p", &pp, &Patch::Json::<()>(ok)).await.unwrap();
        assert_eq!(patched.data.as_ref().unwrap()["j"], "1");

        // JSON patch whose test fails → 422 Invalid with the apiserver's generic body.
        let stale: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": created.resource_version().unwrap()},
            {"op": "add", "path": "/data/j", "value": "2"},
        ]))
        .unwrap();
        let err = api_error(cms.patch("p", &pp, &Patch::Json::<()>(stale)).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
        assert_eq!(err.message, "the server rejected our request due to an error in our request");
        assert_eq!(cms.get("p").await.unwrap().data.unwrap()["j"], "1");

        // Merge patch pinning a stale resourceVersion → 409.
        let err = api_error(
            cms.patch(
                "p",
                &pp,
                &Patch::Merge(json!({"metadata": {"resourceVersion": created.resource_version().unwrap()}})),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(err.reason, "Conflict");

        // Strategic merge on a CRD → 415.
        let st = settings(&s.admin);
        let err = api_error(
            st.patch("server-version", &pp, &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}})))
                .await
                .unwrap_err(),
        );
        assert_eq!((err.code, err.reason.as_str()), (415, "UnsupportedMediaType"), "{err:?}");
        // Merge patch on the CRD works.
        let patched = st
            .patch("server-version", &pp, &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await
            .unwrap();
        assert_eq!(patched.labels()["x"], "y");

        // Server-side apply needs a field manager.
        let applied = cms
            .patch(
                "applied",
                &PatchParams::apply("tests"),
                &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"a": "b"}})),
            )
            .await
            .unwrap();
        assert_eq!(applied.data.unwrap()["a"], "b");
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_until_removed() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        namespace(&s.admin, "fin").await;
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "fin");
        let mut obj = cm("held", &[]);
        obj.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        let created = cms.create(&PostParams::default(), &obj).await.unwrap();
        let mut stream = cms
            .watch(&WatchParams::default().fields("metadata.name=held"), &created.resource_version().unwrap())
            .await
            .unwrap()
            .boxed();

        cms.delete("held", &DeleteParams::default()).await.unwrap();
        let still = cms.get("held").await.unwrap();
        assert!(still.metadata.deletion_timestamp.is_some());
        match next_event(&mut stream).await {
            WatchEvent::Modified(o) => assert!(o.metadata.deletion_timestamp.is_some()),
            other => panic!("expected MODIFIED, got {other:?}"),
        }
        // Deleting again is idempotent; adding a finalizer now is refused.
        cms.delete("held", &DeleteParams::default()).await.unwrap();
        let err = api_error(
            cms.patch(
                "held",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}})),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(err.code, 422, "{err:?}");

        cms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .unwrap();
        match next_event(&mut stream).await {
            WatchEvent::Deleted(o) => assert_eq!(o.name_any(), "held"),
            other => panic!("expected DELETED, got {other:?}"),
        }
        assert!(cms.get_opt("held").await.unwrap().is_none());
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_statuses() {
    bounded(60, async {
        let s = common::start(Options::default()).await;

        // Bad token → 401 Unauthorized.
        let text = std::fs::read_to_string(s.sim.admin_kubeconfig_path()).unwrap();
        let mut kc: Value = serde_yaml_like(&text);
        kc["users"][0]["user"]["token"] = json!("not-a-valid-token");
        let bad_path = s.path().join("bad.kubeconfig");
        std::fs::write(&bad_path, kc.to_string()).unwrap();
        let bad = common::client(&bad_path).await;
        let nss: Api<Namespace> = Api::all(bad);
        let err = api_error(nss.list(&ListParams::default()).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (401, "Unauthorized"), "{err:?}");

        // Unknown resource → 404 with a Status body.
        for path in ["/api/v1/namespaces/default/widgets", "/apis/example.com/v1/things", "/nonsense"] {
            let (code, body) = raw(&s.admin, Method::GET, path, None).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body["kind"], "Status", "{path}: {body}");
            assert_eq!(body["reason"], "NotFound", "{path}: {body}");
            assert_eq!(body["code"], 404);
            // kubectl prints this as "Error from server (NotFound): the server could not find the requested resource".
            assert_eq!(body["message"], "the server could not find the requested resource", "{path}");
        }
        // Through kube-rs: get_opt on an unknown resource type is None as well.
        let widgets = dynamic(&s.admin, "example.com", "v1", "Widget", "widgets", Some("default"));
        assert!(widgets.get_opt("w").await.unwrap().is_none());

        // Body over 3 MiB → 413.
        let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"},
                         "data": {"blob": "x".repeat(3 * 1024 * 1024 + 10)}});
        let (code, body) = raw(&s.admin, Method::POST, "/api/v1/namespaces/default/configmaps", Some(big)).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
        assert_eq!(body["reason"], "RequestEntityTooLarge");
        assert_eq!(body["message"], "Request entity too large: limit is 3145728");

        // Invalid PVC (no accessModes) → 422 with the field named.
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(s.admin.clone(), "default");
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "bad"},
            "spec": {"resources": {"requests": {"storage": "1Gi"}}, "storageClassName": "harvester-longhorn"},
        }))
        .unwrap();
        let err = api_error(pvcs.create(&PostParams::default(), &pvc).await.unwrap_err());
        assert_eq!((err.code, err.reason.as_str()), (422, "Invalid"), "{err:?}");
        let causes = err.details.as_ref().map(|d| d.causes.clone()).unwrap_or_default();
        assert!(causes.iter().any(|c| c.field == "spec.accessModes"), "{causes:?}");
        assert_eq!(
            err.message,
            "PersistentVolumeClaim \"bad\" is invalid: spec.accessModes: Required value: at least 1 access mode is required"
        );

        // An invalid name: the apiserver's message, with its example and regular expression.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
        let (code, body) = raw(&s.admin, Method::POST, "/api/v1/namespaces/default/configmaps", Some(cm)).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            body["message"],
            r#"ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
        );

        // A dryRun value other than All: 422 on the request's options.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dry"}});
        let (code, body) =
            raw(&s.admin, Method::POST, "/api/v1/namespaces/default/configmaps?dryRun=Yes", Some(cm)).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            body["message"],
            r#"CreateOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: []string{"Yes"}: supported values: "All""#
        );

        // Wrong method on a collection → 405; a JSON body that is not an object → 400.
        let (code, body) = raw(&s.admin, Method::PUT, "/api/v1/namespaces/default/configmaps", Some(json!({}))).await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{body}");
        assert_eq!(body["message"], "the server does not allow this method on the requested resource");
        let (code, body) = raw_bytes(
            &s.admin,
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            b"{".to_vec(),
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        s.shutdown().await;
    })
    .await
}

/// Kubeconfigs the simulator writes are JSON (which is YAML).
fn serde_yaml_like(text: &str) -> Value {
    serde_json::from_str(text).expect("kubeconfig is JSON")
}

/// Status of a guest request: Ok, or the API error.
async fn guest_can<F, T>(f: F) -> Result<(), Box<kube::core::Status>>
where
    F: std::future::Future<Output = kube::Result<T>>,
{
    match f.await {
        Ok(_) => Ok(()),
        Err(e) => Err(api_error(e)),
    }
}

fn assert_forbidden(r: Result<(), Box<kube::core::Status>>, expected_message: &str) {
    let err = r.expect_err("expected 403");
    assert_eq!((err.code, err.reason.as_str()), (403, "Forbidden"), "{err:?}");
    assert_eq!(err.message, expected_message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_v1_3_guest_cannot_read_longhorn_volumes_v1_4_can() {
    bounded(90, async {
        const USER: &str = "system:serviceaccount:default:guest-cluster";
        let v13 = common::start(Options::profile("v1.3")).await;
        let vols = common::longhorn_volumes(&v13.guest);
        assert_forbidden(
            guest_can(vols.get("pvc-x")).await,
            &format!("volumes.longhorn.io \"pvc-x\" is forbidden: User \"{USER}\" cannot get resource \"volumes\" in API group \"longhorn.io\" in the namespace \"longhorn-system\""),
        );
        // v1.3 grants storage classes.
        let scs: Api<StorageClass> = Api::all(v13.guest.clone());
        assert!(!scs.list(&ListParams::default()).await.unwrap().items.is_empty());
        v13.shutdown().await;

        let v14 = common::start(Options::profile("v1.4")).await;
        let vols = common::longhorn_volumes(&v14.guest);
        // Allowed now: a missing volume is a plain 404, a list works.
        assert!(vols.get_opt("pvc-x").await.unwrap().is_none());
        vols.list(&ListParams::default()).await.unwrap();
        // But not writes.
        let err = api_error(vols.delete("pvc-x", &DeleteParams::default()).await.unwrap_err());
        assert_eq!(err.reason, "Forbidden");
        v14.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_guest_addvolume_only_in_its_namespace() {
    bounded(60, async {
        const USER: &str = "system:serviceaccount:default:guest-cluster";
        let world = format!(
            "{}namespaces: [other]\nvms:\n  - {{name: guest-1}}\n  - {{name: other-vm, namespace: other}}\n",
            common::FAST_TIMING
        );
        let s = common::start(Options { world, ..Options::default() }).await;
        // Allowed in its namespace (here: the VM exists, the claim does not → still 202).
        let (code, body) = common::volume_subresource(
            &s.guest,
            "default",
            "virtualmachines",
            "guest-1",
            "addvolume",
            common::add_volume_body("nope", "nope"),
        )
        .await;
        assert_eq!(code, StatusCode::ACCEPTED, "{body}");
        let (code, body) = common::volume_subresource(
            &s.guest,
            "other",
            "virtualmachines",
            "other-vm",
            "addvolume",
            common::add_volume_body("nope", "nope"),
        )
        .await;
        assert_eq!(code, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["reason"], "Forbidden");
        assert_eq!(
            body["message"],
            format!("virtualmachines.subresources.kubevirt.io \"other-vm\" is forbidden: User \"{USER}\" cannot update resource \"virtualmachines/addvolume\" in API group \"subresources.kubevirt.io\" in the namespace \"other\"")
        );
        // Reading VMs in another namespace is denied too.
        let other_vms = common::vms(&s.guest, "other");
        assert_eq!(api_error(other_vms.get("other-vm").await.unwrap_err()).reason, "Forbidden");
        s.shutdown().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_per_profile_storageclasses_vm_patch_and_settings() {
    bounded(120, async {
        const USER: &str = "system:serviceaccount:default:guest-cluster";
        // v1.2: no csi-driver role, so no storage classes.
        let v12 = common::start(Options::profile("v1.2")).await;
        let scs: Api<StorageClass> = Api::all(v12.guest.clone());
        assert_forbidden(
            guest_can(scs.list(&ListParams::default())).await,
            &format!("storageclasses.storage.k8s.io is forbidden: User \"{USER}\" cannot list resource \"storageclasses\" in API group \"storage.k8s.io\" at the cluster scope"),
        );
        check_settings(&v12.guest).await;
        v12.shutdown().await;

        // v1.7: VM patch denied.
        let v17 = common::start(Options::profile("v1.7")).await;
        let vms = common::vms(&v17.guest, "default");
        let patch = Patch::Merge(json!({"metadata": {"labels": {"patched": "yes"}}}));
        assert_forbidden(
            guest_can(vms.patch("guest-1", &PatchParams::default(), &patch)).await,
            &format!("virtualmachines.kubevirt.io \"guest-1\" is forbidden: User \"{USER}\" cannot patch resource \"virtualmachines\" in API group \"kubevirt.io\" in the namespace \"default\""),
        );
        check_settings(&v17.guest).await;
        v17.shutdown().await;

        // v1.8: VM patch allowed.
        let v18 = common::start(Options::profile("v1.8")).await;
        let vms = common::vms(&v18.guest, "default");
        let patched = vms.patch("guest-1", &PatchParams::default(), &patch).await.unwrap();
        assert_eq!(patched.labels()["patched"], "yes");
        // …but not update (PUT).
        let err = api_error(vms.replace("guest-1", &PostParams::default(), &patched).await.unwrap_err());
        assert_eq!(err.reason, "Forbidden");
        check_settings(&v18.guest).await;
        v18.shutdown().await;

        // The public setting is readable and the list denied on every release.
        for p in harvester_simulator::profiles::PROFILES {
            let s = common::start(Options::profile(p.name)).await;
            check_settings(&s.guest).await;
            let sv = settings(&s.guest).get("server-version").await.unwrap();
            assert_eq!(sv.data["value"], p.server_version, "{}", p.name);
            s.shutdown().await;
        }
    })
    .await
}

async fn check_settings(guest: &kube::Client) {
    const USER: &str = "system:serviceaccount:default:guest-cluster";
    let st = settings(guest);
    let sv = st.get("server-version").await.unwrap();
    assert!(sv.data["value"].as_str().is_some_and(|v| v.starts_with("v1.")), "{sv:?}");
    assert_forbidden(
        guest_can(st.list(&ListParams::default())).await,
        &format!("settings.harvesterhci.io is forbidden: User \"{USER}\" cannot list resource \"settings\" in API group \"harvesterhci.io\" at the cluster scope"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stream_is_chunked_json_lines_and_bookmarks_on_request() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        // kube-rs watch with streaming-list semantics (sendInitialEvents + initial-events-end bookmark).
        let cms: Api<ConfigMap> = Api::namespaced(s.admin.clone(), "default");
        cms.create(&PostParams::default(), &cm("sl", &[("sl", "1")])).await.unwrap();
        let mut w = watcher(cms.clone(), watcher::Config::default().labels("sl=1").streaming_lists()).boxed();
        let mut got = false;
        while !got {
            match tokio::time::timeout(Duration::from_secs(10), w.try_next()).await.unwrap().unwrap() {
                Some(watcher::Event::InitApply(o)) => assert_eq!(o.name_any(), "sl"),
                Some(watcher::Event::InitDone) => got = true,
                Some(_) => {}
                None => panic!("watcher ended"),
            }
        }
        s.shutdown().await;
    })
    .await
}

/// `kubectl auth can-i`: a SelfSubjectAccessReview answers from the same RBAC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_subject_access_review_answers_per_profile() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    bounded(60, async {
        let review = |verb: &str, group: &str, resource: &str, ns: &str| SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    namespace: Some(ns.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        for (profile, longhorn, patch_vms) in [("v1.3", false, false), ("v1.4", true, false), ("v1.8", true, true)] {
            let s = common::start(Options::profile(profile)).await;
            let api: Api<SelfSubjectAccessReview> = Api::all(s.guest.clone());
            let ask = |r: SelfSubjectAccessReview| {
                let api = api.clone();
                async move { api.create(&PostParams::default(), &r).await.unwrap().status.unwrap().allowed }
            };
            assert_eq!(ask(review("get", "longhorn.io", "volumes", "longhorn-system")).await, longhorn, "{profile}");
            assert_eq!(ask(review("patch", "kubevirt.io", "virtualmachines", "default")).await, patch_vms, "{profile}");
            assert!(!ask(review("delete", "", "nodes", "")).await, "{profile}");
            s.shutdown().await;
        }
    })
    .await
}

/// `kubectl auth can-i --list`: a SelfSubjectRulesReview lists the profile's rules for the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_subject_rules_review_lists_the_profile_rules() {
    use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
    bounded(60, async {
        for (profile, backups) in [("v1.3", false), ("v1.8", true)] {
            let s = common::start(Options::profile(profile)).await;
            let api: Api<SelfSubjectRulesReview> = Api::all(s.guest.clone());
            let review = SelfSubjectRulesReview {
                spec: SelfSubjectRulesReviewSpec { namespace: Some("default".into()) },
                ..Default::default()
            };
            let status = api.create(&PostParams::default(), &review).await.unwrap().status.unwrap();
            assert!(!status.incomplete, "{profile}: {:?}", status.evaluation_error);
            let has = |resource: &str| {
                status
                    .resource_rules
                    .iter()
                    .any(|r| r.resources.as_ref().is_some_and(|rs| rs.iter().any(|x| x == resource)))
            };
            assert!(has("storageclasses"), "{profile}");
            assert!(has("virtualmachines/addvolume"), "{profile}: the RoleBinding in the VM namespace counts");
            assert!(has("selfsubjectrulesreviews"), "{profile}: system:basic-user");
            assert_eq!(has("volumeremotebackups"), backups, "{profile}");
            assert!(!has("nodes") || profile == "v1.3", "{profile}");
            let urls: Vec<&String> =
                status.non_resource_rules.iter().flat_map(|r| r.non_resource_urls.iter().flatten()).collect();
            assert!(urls.iter().any(|u| *u == "/openapi/*"), "{profile}: {urls:?}");

            // Without a namespace the apiserver refuses the review.
            let empty = SelfSubjectRulesReview::default();
            let err = api.create(&PostParams::default(), &empty).await.unwrap_err();
            assert!(
                matches!(&err, kube::Error::Api(s) if s.code == 400 && s.message == "no namespace on request"),
                "{err}"
            );
            s.shutdown().await;
        }
    })
    .await
}

/// Sends a JSON body and returns the status, the Warning headers and the body.
async fn send_json(
    client: &kube::Client,
    method: Method,
    path: &str,
    content_type: &str,
    body: Value,
) -> (StatusCode, Vec<String>, Value) {
    use http_body_util::BodyExt;
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.to_string().into_bytes()))
        .expect("building request");
    let resp = client.send(req).await.expect("sending request");
    let status = resp.status();
    let warnings = resp.headers().get_all("warning").iter().map(|v| v.to_str().unwrap_or("").to_string()).collect();
    let bytes = resp.into_body().collect().await.expect("reading body").to_bytes();
    (status, warnings, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// `fieldValidation`: Strict refuses undeclared fields, Warn (the default) answers with warnings, Ignore says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn field_validation_strict_warn_and_ignore() {
    bounded(60, async {
        let s = common::start(Options::default()).await;
        let cms = "/api/v1/namespaces/default/configmaps";
        let body = |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "nam": "x"},
                                      "data": {"k": "v"}, "extra": 1});
        let (code, _, status) =
            send_json(&s.admin, Method::POST, &format!("{cms}?fieldValidation=Strict"), "application/json", body("strict")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
        assert_eq!(
            status["message"],
            r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "extra", unknown field "metadata.nam""#
        );
        let (code, _, _) = send_json(&s.admin, Method::GET, &format!("{cms}/strict"), "application/json", Value::Null).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "a refused create stores nothing");

        let (code, warnings, _) = send_json(&s.admin, Method::POST, cms, "application/json", body("warned")).await;
        assert_eq!(code, StatusCode::CREATED);
        assert_eq!(warnings, [r#"299 - "unknown field \"extra\"""#, r#"299 - "unknown field \"metadata.nam\"""#]);

        let (code, warnings, _) =
            send_json(&s.admin, Method::POST, &format!("{cms}?fieldValidation=Ignore"), "application/json", body("ignored")).await;
        assert_eq!((code, warnings.len()), (StatusCode::CREATED, 0));

        // A merge patch is checked as a partial object; a CRD by its schema.
        let (code, _, status) = send_json(
            &s.admin,
            Method::PATCH,
            &format!("{cms}/warned?fieldValidation=Strict"),
            "application/merge-patch+json",
            json!({"data": {"k2": "v"}, "dta": {}}),
        )
        .await;
        assert_eq!((code, status["message"].clone()), (StatusCode::BAD_REQUEST, json!(r#"strict decoding error: unknown field "dta""#)));
        let setting = json!({"apiVersion": "harvesterhci.io/v1beta1", "kind": "Setting", "metadata": {"name": "x"}, "value": "1", "vaule": "2"});
        let (code, _, status) = send_json(
            &s.admin,
            Method::POST,
            "/apis/harvesterhci.io/v1beta1/settings?fieldValidation=Strict",
            "application/json",
            setting,
        )
        .await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{status}");
        assert!(status["message"].as_str().is_some_and(|m| m.ends_with(r#"unknown field "vaule""#)), "{status}");

        // Fields a real VM may carry beyond what the simulator models are kept, never refused.
        let vm = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "vm-x", "namespace": "default"},
                        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}, "clock": {"utc": {}}},
                                 "priorityClassName": "high"}}}});
        let (code, warnings, status) = send_json(
            &s.admin,
            Method::POST,
            "/apis/kubevirt.io/v1/namespaces/default/virtualmachines?fieldValidation=Strict",
            "application/json",
            vm,
        )
        .await;
        assert_eq!((code, warnings.len()), (StatusCode::CREATED, 0), "{status}");

        let (code, _, status) =
            send_json(&s.admin, Method::POST, &format!("{cms}?fieldValidation=Loose"), "application/json", body("loose")).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            status["message"],
            r#"CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "Loose": supported values: "", "Ignore", "Strict", "Warn""#
        );
        s.shutdown().await;
    })
    .await
}
