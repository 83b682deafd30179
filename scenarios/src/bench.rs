//! `scenarios bench`: attach overhead above the simulator's hotplug latency, a
//! burst of claims and pods over many VMs against its floor, and driver memory.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::backend::embedded::{Embedded, EmbeddedCluster};
use crate::backend::{Backend, Cluster};
use crate::model::{Scenario, Step};
use crate::steps::run_step;
use crate::Failure;

pub struct Options {
    pub hotplug_ms: u64,
    pub attaches: usize,
    pub burst: usize,
    pub vms: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn step(yaml: &str) -> Result<Step, Failure> {
    serde_saphyr::from_str(yaml).map_err(|e| Failure(format!("bench step: {e}")))
}

fn claim(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name, "namespace": "default"},
           "spec": {"storageClassName": "harvester", "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}}})
}

async fn until_running(c: &mut EmbeddedCluster, pods: &[String], within: Duration) -> Result<Duration, Failure> {
    let started = Instant::now();
    for p in pods {
        let left = within.saturating_sub(started.elapsed());
        run_step(c, &step(&format!("expect: {{pod: {p}, phase: Running, within: {}ms}}", left.as_millis().max(1)))?)
            .await?;
    }
    Ok(started.elapsed())
}

pub async fn run(backend: &Embedded, opts: &Options, work: &std::path::Path) -> Result<String, Failure> {
    let vms: Vec<String> = (1..=opts.vms).map(|i| format!("guest-{i}")).collect();
    let scenario: Scenario = serde_saphyr::from_str(&format!(
        "name: bench\nproves: measurements\nworld:\n  profile: v1.8\n  vms: [{}]\n  timing: {{provisionMs: 50, hotplugMs: {}, unplugMs: 100, snapshotMs: 100, expandMs: 50, exportMs: 100}}\n  controllerArgs: [--max-volumes-per-node=64]\nsteps:\n  - sleep: 1ms\n",
        vms.join(", "),
        opts.hotplug_ms
    ))
    .map_err(|e| Failure(format!("bench scenario: {e}")))?;
    let mut c = backend.start(&scenario, work).await?;
    let result = measure(&mut c, opts, &vms).await;
    c.shutdown().await;
    result
}

async fn measure(c: &mut EmbeddedCluster, opts: &Options, vms: &[String]) -> Result<String, Failure> {
    run_step(c, &Step::Apply(vec![json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "harvester"}, "provisioner": "driver.harvesterhci.io"})])).await?;
    let floor = opts.hotplug_ms as f64;

    // Sequential attaches on one VM: publish latency minus the hotplug latency.
    let mut overheads = Vec::new();
    let mut to_running = Vec::new();
    for i in 0..opts.attaches {
        let name = format!("seq-{i}");
        run_step(c, &Step::Apply(vec![claim(&name)])).await?;
        run_step(c, &step(&format!("expect: {{pvc: {name}, phase: Bound, within: 30s}}"))?).await?;
        let before = c.env().timeline.lock().unwrap_or_else(|p| p.into_inner()).len();
        let t = Instant::now();
        run_step(
            c,
            &step(&format!("runPod: {{name: {name}, node: {}, volumes: [{{pvc: {name}, path: /data}}]}}", vms[0]))?,
        )
        .await?;
        until_running(c, std::slice::from_ref(&name), Duration::from_secs(60)).await?;
        to_running.push(t.elapsed().as_secs_f64() * 1000.0 - floor);
        let timeline = c.env().timeline.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(a) = timeline[before..].iter().find(|p| p.name == "attach" && p.ok) {
            overheads.push(a.duration_ms as f64 - floor);
        }
        run_step(c, &step(&format!("delete: {{pod: {name}}}"))?).await?;
    }
    overheads.sort_by(f64::total_cmp);
    to_running.sort_by(f64::total_cmp);

    // Burst: claims and pods all at once, spread over the VMs.
    let names: Vec<String> = (0..opts.burst).map(|i| format!("burst-{i}")).collect();
    let t = Instant::now();
    run_step(c, &Step::Apply(names.iter().map(|n| claim(n)).collect())).await?;
    for (i, n) in names.iter().enumerate() {
        let vm = &vms[i % vms.len()];
        run_step(c, &step(&format!("runPod: {{name: {n}, node: {vm}, volumes: [{{pvc: {n}, path: /data}}]}}"))?)
            .await?;
    }
    until_running(c, &names, Duration::from_secs(300)).await?;
    let burst = t.elapsed().as_secs_f64();

    let rss: Vec<(String, f64)> = c.driver_pids().into_iter().map(|(role, pid)| (role, rss_mb(pid))).collect();
    let controller_rss = rss.iter().find(|(r, _)| r == "controller").map(|(_, m)| *m).unwrap_or(0.0);
    let node_rss = rss.iter().filter(|(r, _)| r.starts_with("node:")).map(|(_, m)| *m).fold(0.0, f64::max);

    let mut out = String::new();
    out.push_str(&format!(
        "harvester CSI driver benchmark (embedded, Harvester v1.8 profile, hotplug latency {} ms, {} VMs)\n",
        opts.hotplug_ms, opts.vms
    ));
    out.push_str("| metric | median | p95 | note |\n|---|---:|---:|---|\n");
    out.push_str(&format!(
        "| ControllerPublish above hotplug latency ({} attaches) | {:.0} ms | {:.0} ms | watch-confirmed attach |\n",
        overheads.len(),
        percentile(&overheads, 0.5),
        percentile(&overheads, 0.95)
    ));
    out.push_str(&format!(
        "| pod Running above hotplug latency (attach+stage+publish) | {:.0} ms | {:.0} ms | |\n",
        percentile(&to_running, 0.5),
        percentile(&to_running, 0.95)
    ));
    out.push_str(&format!(
        "| {} claims + pods over {} VMs: all Running | {:.1} s | | floor {:.1} s (one hotplug) |\n",
        opts.burst,
        opts.vms,
        burst,
        opts.hotplug_ms as f64 / 1000.0
    ));
    out.push_str(&format!("| driver RSS: controller | {controller_rss:.1} MB | | |\n| driver RSS: node plugin (max) | {node_rss:.1} MB | | |\n"));
    Ok(out)
}
