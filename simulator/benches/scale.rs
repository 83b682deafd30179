//! Scale benchmark (not a test): 200 VMs from a world file, 2,000 PVCs created
//! through the API, then list latency, watch fan-out latency and memory.
//!
//! `cargo bench -p harvester-simulator --bench scale`

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use harvester_simulator::devices::DeviceMode;
use harvester_simulator::{SimConfig, Simulator};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};

const LIST_TARGET_MS: f64 = 50.0;
const RSS_TARGET_MB: f64 = 200.0;

/// How big a run is: the real one under `cargo bench`, a quick smoke run of the
/// same code when `cargo test --all-targets` runs this binary in debug mode.
#[derive(Clone, Copy)]
struct Scale {
    vms: usize,
    pvcs: usize,
    lists: usize,
    watchers: usize,
    writes: usize,
}

const FULL: Scale = Scale { vms: 200, pvcs: 2_000, lists: 20, watchers: 50, writes: 20 };
const SMOKE: Scale = Scale { vms: 5, pvcs: 20, lists: 2, watchers: 3, writes: 2 };

fn world(vms: usize) -> String {
    let mut w = String::from("timing: {provisionMs: 1, hotplugMs: 200, unplugMs: 100}\nvms:\n");
    for i in 0..vms {
        w.push_str(&format!("  - {{name: vm-{i:03}}}\n"));
    }
    w
}

fn pvc(i: usize) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pvc-{i:04}"), "labels": {"bench": "scale"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Block", "storageClassName": "harvester-longhorn",
                 "resources": {"requests": {"storage": "16Mi"}}},
    }))
    .expect("pvc")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:")).map(|v| v.trim().to_string()))
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn client(path: &std::path::Path) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.expect("config");
    kube::Client::try_from(cfg).expect("client")
}

async fn run(scale: Scale, full: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let world_path = dir.path().join("world.yaml");
    std::fs::write(&world_path, world(scale.vms)).expect("world");
    let mut config = SimConfig::new(dir.path().join("state"));
    config.devices = DeviceMode::File;
    config.world = Some(world_path);
    let started = Instant::now();
    let sim = Simulator::start(config).await.expect("start");
    let admin = client(&sim.admin_kubeconfig_path()).await;
    let guest = client(&sim.cloud_config_path()).await;
    let startup = started.elapsed();

    // Seed: the PVCs through the API (as the guest, like a CSI driver), all Bound.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(guest.clone(), "default");
    let seeding = Instant::now();
    futures::stream::iter(0..scale.pvcs)
        .map(|i| {
            let pvcs = pvcs.clone();
            async move { pvcs.create(&PostParams::default(), &pvc(i)).await.map(|_| ()) }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("creating PVCs");
    let created = seeding.elapsed();
    loop {
        let list = pvcs.list(&ListParams::default().labels("bench=scale")).await.expect("list");
        let bound =
            list.items.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")).count();
        if bound == scale.pvcs {
            break;
        }
        if seeding.elapsed() > Duration::from_secs(600) {
            panic!("only {bound} of {} PVCs bound after 10 minutes", scale.pvcs);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_bound = seeding.elapsed();
    let rss_seeded = rss_mb();
    let vmis = harvester_simulator::api::resources::ResourceKey::new("kubevirt.io", "virtualmachineinstances");
    let running_vmis = sim.ctx.api.store.list(&vmis, None).0.len();

    // List latency: the raw HTTP round trip of a full list (server side plus transfer),
    // and the same through kube-rs with typed decoding, both as the guest (RBAC on).
    let raw_list = || {
        let req =
            http::Request::get("/api/v1/namespaces/default/persistentvolumeclaims").body(Vec::new()).expect("request");
        guest.request_text(req)
    };
    let body = raw_list().await.expect("list");
    let list_bytes = body.len();
    let mut raw_ms = Vec::new();
    for _ in 0..scale.lists {
        let t = Instant::now();
        let text = raw_list().await.expect("list");
        raw_ms.push(ms(t.elapsed()));
        assert!(text.len() > 1000);
    }
    let mut typed_ms = Vec::new();
    for _ in 0..scale.lists {
        let t = Instant::now();
        let list = pvcs.list(&ListParams::default()).await.expect("list");
        typed_ms.push(ms(t.elapsed()));
        assert_eq!(list.items.len(), scale.pvcs);
    }
    raw_ms.sort_by(f64::total_cmp);
    typed_ms.sort_by(f64::total_cmp);

    // Watch fan-out: N watchers, time from a write returning to every watcher having it.
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
    let rv = cms.list(&ListParams::default().limit(1)).await.expect("list").metadata.resource_version.expect("rv");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String, Instant)>();
    let mut tasks = Vec::new();
    for w in 0..scale.watchers {
        let cms = cms.clone();
        let tx = tx.clone();
        let rv = rv.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = cms.watch(&WatchParams::default().labels("fanout=yes"), &rv).await.expect("watch").boxed();
            while let Some(Ok(ev)) = stream.next().await {
                if let WatchEvent::Added(o) = ev {
                    let _ = tx.send((w, o.metadata.name.unwrap_or_default(), Instant::now()));
                }
            }
        }));
    }
    drop(tx);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut fanout_ms = Vec::new();
    for i in 0..scale.writes {
        let name = format!("fanout-{i}");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("fanout".to_string(), "yes".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let t = Instant::now();
        cms.create(&PostParams::default(), &cm).await.expect("create");
        let mut got = 0;
        let mut last = t;
        while got < scale.watchers {
            let (_, n, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("watchers stalled")
                .expect("watchers ended");
            if n == name {
                got += 1;
                last = last.max(at);
            }
        }
        fanout_ms.push(ms(last - t));
    }
    for t in tasks {
        t.abort();
    }
    fanout_ms.sort_by(f64::total_cmp);
    let rss = rss_mb();

    let verdict = |ok: bool, judged: bool| match (judged, ok) {
        (false, _) => "",
        (true, true) => "ok",
        (true, false) => "MISSED",
    };
    let judged = full;
    let row = |metric: String, samples: &[f64], target: &str, ok: bool| {
        println!(
            "| {metric:<46} | {:>8.1} ms | {:>8.1} ms | {:>8.1} ms | {target:<8} | {:<6} |",
            percentile(samples, 0.5),
            percentile(samples, 0.95),
            percentile(samples, 1.0),
            verdict(ok, judged && target != "(info)")
        )
    };
    println!();
    println!(
        "harvester-simulator scale benchmark{}",
        if full { "" } else { " (smoke run: `cargo bench` for the real one)" }
    );
    println!(
        "  world: {} VMs ({running_vmis} VMIs running), {} PVCs (Block, harvester-longhorn), devices=file",
        scale.vms, scale.pvcs
    );
    println!(
        "  startup {:.0} ms; PVCs created in {:.1} s, all Bound after {:.1} s; one list = {:.2} MiB",
        ms(startup),
        created.as_secs_f64(),
        all_bound.as_secs_f64(),
        list_bytes as f64 / (1024.0 * 1024.0)
    );
    println!();
    println!("| {:<46} | {:>11} | {:>11} | {:>11} | {:<8} | {:<6} |", "metric", "median", "p95", "max", "target", "");
    println!("|{:-<48}|{:-<13}|{:-<13}|{:-<13}|{:-<10}|{:-<8}|", "", "", "", "", "", "");
    let list_target = format!("< {LIST_TARGET_MS:.0} ms");
    row(
        format!("list {} PVCs, raw HTTP ({}x, guest)", scale.pvcs, scale.lists),
        &raw_ms,
        &list_target,
        percentile(&raw_ms, 0.95) < LIST_TARGET_MS,
    );
    row(format!("list {} PVCs, kube-rs typed ({}x, guest)", scale.pvcs, scale.lists), &typed_ms, "(info)", true);
    row(
        format!("watch fan-out, write to all {} watchers ({}x)", scale.watchers, scale.writes),
        &fanout_ms,
        "(info)",
        true,
    );
    println!(
        "| {:<46} | {:>8.1} MB | {:>11} | {:>11} | {:<8} | {:<6} |",
        "process RSS (simulator + clients, VmRSS)",
        rss,
        "",
        "",
        format!("< {RSS_TARGET_MB:.0} MB"),
        verdict(rss < RSS_TARGET_MB, judged)
    );
    println!(
        "  (RSS right after seeding: {rss_seeded:.1} MB; store at resourceVersion {})",
        sim.ctx.api.store.current_rv()
    );
    println!();
    sim.shutdown().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary
    // without it (in debug mode), where a smoke run keeps the code exercised.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { FULL } else { SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(run(scale, full));
}
