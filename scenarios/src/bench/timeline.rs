//! Where the time went: for a burst, each phase the runner's components timed
//! (provision, attach, stage, publish) and when each VM got its last pod's
//! volume published; for pods started one at a time, the stretch from the pod
//! to Running cut into those phases and the gaps between them.

use std::collections::BTreeMap;

use crate::env::Phase;

/// The phases that started at or after `from_ms` (since the cluster started),
/// as two Markdown tables, times relative to `from_ms`.
pub fn summary(phases: &[Phase], from_ms: u128) -> String {
    let ours: Vec<&Phase> = phases.iter().filter(|p| p.start_ms >= from_ms).collect();
    let mut by_phase: BTreeMap<&str, Vec<&Phase>> = BTreeMap::new();
    for p in &ours {
        by_phase.entry(p.name.as_str()).or_default().push(p);
    }
    let mut out =
        String::from("| phase | calls | failed | median | p95 | max | first started | last done |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (name, list) in &by_phase {
        let mut durations: Vec<u128> = list.iter().map(|p| p.duration_ms).collect();
        durations.sort_unstable();
        let at = |q: f64| durations[((durations.len() as f64 - 1.0) * q).round() as usize];
        let first = list.iter().map(|p| p.start_ms - from_ms).min().unwrap_or(0);
        let last = list.iter().map(|p| p.start_ms + p.duration_ms - from_ms).max().unwrap_or(0);
        out.push_str(&format!(
            "| {name} | {} | {} | {} ms | {} ms | {} ms | {:.2} s | {:.2} s |\n",
            list.len(),
            list.iter().filter(|p| !p.ok).count(),
            at(0.5),
            at(0.95),
            at(1.0),
            first as f64 / 1000.0,
            last as f64 / 1000.0
        ));
    }
    // Per VM: the subject of attach/stage/publish is `<pv>@<vm>`.
    let mut per_vm: BTreeMap<&str, (usize, u128)> = BTreeMap::new();
    for p in ours.iter().filter(|p| p.name == "publish" && p.ok) {
        if let Some((_, vm)) = p.subject.rsplit_once('@') {
            let e = per_vm.entry(vm).or_default();
            e.0 += 1;
            e.1 = e.1.max(p.start_ms + p.duration_ms - from_ms);
        }
    }
    if !per_vm.is_empty() {
        out.push_str("\n| VM | volumes published | last published at |\n|---|---:|---:|\n");
        for (vm, (n, last)) in per_vm {
            out.push_str(&format!("| {vm} | {n} | {:.2} s |\n", last as f64 / 1000.0));
        }
    }
    out
}

/// One pod started alone: when it was made and when it was seen Running (ms
/// since the cluster started, as phases are).
#[derive(Debug, Clone, Copy)]
pub struct Pod {
    pub made_ms: u128,
    pub running_ms: u128,
}

/// The stretches of a lone pod's start, in order: from the pod to the attach,
/// each phase, each gap between them, and from the last publish to Running.
const STRETCHES: [&str; 7] = [
    "pod made → attach starts",
    "attach (ControllerPublish)",
    "attached → stage starts",
    "stage (NodeStageVolume)",
    "staged → publish starts",
    "publish (NodePublishVolume)",
    "published → pod seen Running",
];

/// The stretches of one pod, or None when it lacks an attach, stage or publish
/// between its making and Running (a retried call counts from its last try).
fn stretches(phases: &[Phase], pod: Pod) -> Option<[u128; 7]> {
    let within = |name: &str| {
        phases
            .iter()
            .filter(|p| p.name == name && p.ok && p.start_ms >= pod.made_ms && p.start_ms <= pod.running_ms)
            .max_by_key(|p| p.start_ms)
    };
    let (a, s, p) = (within("attach")?, within("stage")?, within("publish")?);
    let end = |x: &Phase| x.start_ms + x.duration_ms;
    Some([
        a.start_ms.saturating_sub(pod.made_ms),
        a.duration_ms,
        s.start_ms.saturating_sub(end(a)),
        s.duration_ms,
        p.start_ms.saturating_sub(end(s)),
        p.duration_ms,
        pod.running_ms.saturating_sub(end(p)),
    ])
}

/// Medians of each stretch over the pods started one at a time, as a Markdown table.
pub fn lone_pods(phases: &[Phase], pods: &[Pod]) -> String {
    let all: Vec<[u128; 7]> = pods.iter().filter_map(|p| stretches(phases, *p)).collect();
    if all.is_empty() {
        return String::new();
    }
    let mut out =
        format!("| stretch (of {} pods started one at a time) | median | max |\n|---|---:|---:|\n", all.len());
    for (i, label) in STRETCHES.iter().enumerate() {
        let mut v: Vec<u128> = all.iter().map(|s| s[i]).collect();
        v.sort_unstable();
        out.push_str(&format!("| {label} | {} ms | {} ms |\n", v[(v.len() - 1) / 2], v[v.len() - 1]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, subject: &str, start_ms: u128, duration_ms: u128) -> Phase {
        Phase { name: name.into(), subject: subject.into(), start_ms, duration_ms, ok: true }
    }

    #[test]
    fn phases_before_the_burst_are_left_out_and_times_are_relative_to_it() {
        let phases = [
            phase("attach", "pv-old@guest-1", 100, 50),
            phase("attach", "pv-1@guest-1", 1000, 500),
            phase("attach", "pv-2@guest-2", 1100, 700),
            phase("attach", "pv-3@guest-2", 1150, 600),
            phase("publish", "pv-1@guest-1", 1600, 10),
            phase("publish", "pv-2@guest-2", 1900, 20),
        ];
        let s = summary(&phases, 1000);
        assert!(s.contains("| attach | 3 | 0 | 600 ms | 700 ms | 700 ms | 0.00 s | 0.80 s |"), "{s}");
        assert!(s.contains("| guest-1 | 1 | 0.61 s |"), "{s}");
        assert!(s.contains("| guest-2 | 1 | 0.92 s |"), "{s}");
    }

    #[test]
    fn a_lone_pod_is_cut_into_its_phases_and_the_gaps_between_them() {
        let phases = [
            phase("attach", "pv-1@guest-1", 1010, 505),
            // A failed stage and its retry: the retry is what the pod waited for.
            Phase { ok: false, ..phase("stage", "pv-1@guest-1", 1520, 3) },
            phase("stage", "pv-1@guest-1", 1530, 30),
            phase("publish", "pv-1@guest-1", 1562, 8),
            // Another pod's phases are not this one's.
            phase("attach", "pv-2@guest-1", 3000, 500),
        ];
        let pod = Pod { made_ms: 1000, running_ms: 1575 };
        assert_eq!(stretches(&phases, pod), Some([10, 505, 15, 30, 2, 8, 5]));
        let table = lone_pods(&phases, &[pod, Pod { made_ms: 2000, running_ms: 2100 }]);
        assert!(table.contains("| stretch (of 1 pods started one at a time) |"), "{table}");
        assert!(table.contains("| attached → stage starts | 15 ms | 15 ms |"), "{table}");
    }
}
