//! Where a burst's time went: each phase the runner's components timed
//! (provision, attach, stage, publish), and when each VM got its last pod's
//! volume published.

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
}
