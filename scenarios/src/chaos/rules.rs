//! What makes a generated plan valid, checked on the plan itself (no cluster): the
//! generator's promises written down once, so a generator bug shows as a broken
//! rule before anything runs instead of as a confusing driver failure.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::generate::BOUND;
use crate::model::{Scenario, Step};

#[derive(Default)]
struct ClaimInfo {
    rwo: bool,
    /// (offset, len, remember) ranges written to a block claim, its restore source's included.
    ranges: Vec<(u64, u64, String)>,
    block: bool,
    deleted: bool,
}

struct PodInfo {
    claim: String,
    running: bool,
    deleted: bool,
}

fn claim_of(obj: &Value) -> Option<(String, ClaimInfo, Option<String>)> {
    if obj.get("kind").and_then(Value::as_str) != Some("PersistentVolumeClaim") {
        return None;
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str)?.to_string();
    let modes = obj.pointer("/spec/accessModes").and_then(Value::as_array).cloned().unwrap_or_default();
    let info = ClaimInfo {
        rwo: modes.iter().any(|m| m == "ReadWriteOnce"),
        block: obj.pointer("/spec/volumeMode").and_then(Value::as_str) == Some("Block"),
        ..ClaimInfo::default()
    };
    let snapshot = obj.pointer("/spec/dataSource/name").and_then(Value::as_str).map(String::from);
    Some((name, info, snapshot))
}

/// Checks a generated scenario against the generator's rules; the first broken
/// one is the error, with the step number (1-based, as the runner counts).
pub fn check(s: &Scenario) -> Result<(), String> {
    let mut claims: BTreeMap<String, ClaimInfo> = BTreeMap::new();
    for obj in &s.guest {
        if let Some((name, info, _)) = claim_of(obj) {
            claims.insert(name, info);
        }
    }
    let mut pods: BTreeMap<String, PodInfo> = BTreeMap::new();
    let mut remembered: BTreeSet<String> = BTreeSet::new();
    // snapshot → the ranges its source had when it was taken.
    let mut snapshots: BTreeMap<String, Vec<(u64, u64, String)>> = BTreeMap::new();
    let mut errors_on = false;
    if !matches!(s.steps.first(), Some(Step::NeverDoubleAttached(true))) {
        return Err("the first step must be neverDoubleAttached: true".into());
    }
    for (i, step) in s.steps.iter().enumerate() {
        let at = |msg: String| format!("step {} ({}): {msg}", i + 1, step.label());
        match step {
            Step::Apply(objs) => {
                for obj in objs {
                    let (name, mut info, snapshot) =
                        claim_of(obj).ok_or_else(|| at("only claims are applied".into()))?;
                    if let Some(snap) = snapshot {
                        info.ranges =
                            snapshots.get(&snap).cloned().ok_or_else(|| at(format!("no snapshot {snap} taken")))?;
                    }
                    if claims.insert(name.clone(), info).is_some() {
                        return Err(at(format!("claim {name} made twice")));
                    }
                }
            }
            Step::RunPod(p) => {
                let [v] = p.volumes.as_slice() else { return Err(at("a pod uses exactly one claim".into())) };
                let c = claims.get(&v.pvc).ok_or_else(|| at(format!("unknown claim {}", v.pvc)))?;
                if c.deleted {
                    return Err(at(format!("claim {} was deleted", v.pvc)));
                }
                if c.rwo {
                    if let Some((other, _)) = pods.iter().find(|(_, o)| o.claim == v.pvc && !o.deleted) {
                        return Err(at(format!("RWO claim {} is still used by pod {other}", v.pvc)));
                    }
                }
                if pods
                    .insert(p.name.clone(), PodInfo { claim: v.pvc.clone(), running: false, deleted: false })
                    .is_some()
                {
                    return Err(at(format!("pod {} made twice", p.name)));
                }
            }
            Step::Expect(e) => {
                if e.within > BOUND {
                    return Err(at(format!("waits {:?}, more than the bound {BOUND:?}", e.within)));
                }
                if let Some(pod) = &e.pod {
                    let p = pods.get_mut(pod).ok_or_else(|| at(format!("unknown pod {pod}")))?;
                    if p.deleted {
                        return Err(at(format!("pod {pod} was deleted")));
                    }
                    p.running = true;
                }
            }
            Step::ExpectHost(e) if e.within > BOUND => {
                return Err(at(format!("waits {:?}, more than the bound {BOUND:?}", e.within)));
            }
            Step::Write(w) => {
                let claim = live_pod(&pods, &w.pod).map_err(at)?;
                if !remembered.insert(w.remember.clone()) {
                    return Err(at(format!("checksum name {} used twice", w.remember)));
                }
                let c = claims.get_mut(&claim).ok_or_else(|| at(format!("unknown claim {claim}")))?;
                if c.block {
                    let end = w.offset + w.random_bytes;
                    if let Some((_, _, r)) = c.ranges.iter().find(|(o, l, _)| w.offset < o + l && *o < end) {
                        return Err(at(format!("overwrites the range of {r} on {claim}")));
                    }
                    c.ranges.push((w.offset, w.random_bytes, w.remember.clone()));
                }
            }
            Step::Read(r) => {
                live_pod(&pods, &r.pod).map_err(at)?;
                if !remembered.contains(&r.checksum) {
                    return Err(at(format!("reads {} before any write remembered it", r.checksum)));
                }
            }
            Step::Snapshot(snap) => {
                let c = claims.get(&snap.pvc).ok_or_else(|| at(format!("unknown claim {}", snap.pvc)))?;
                snapshots.insert(snap.name.clone(), c.ranges.clone());
            }
            Step::Delete(d) => {
                if let Some(pod) = &d.pod {
                    let p = pods.get_mut(pod).ok_or_else(|| at(format!("unknown pod {pod}")))?;
                    if std::mem::replace(&mut p.deleted, true) {
                        return Err(at(format!("pod {pod} deleted twice")));
                    }
                }
                if let Some(pvc) = &d.pvc {
                    if let Some((p, _)) = pods.iter().find(|(_, p)| &p.claim == pvc && !p.deleted) {
                        return Err(at(format!("claim {pvc} deleted while pod {p} uses it")));
                    }
                    if errors_on {
                        return Err(at("cleanup starts before the API errors are cleared".into()));
                    }
                    claims.get_mut(pvc).ok_or_else(|| at(format!("unknown claim {pvc}")))?.deleted = true;
                }
            }
            Step::Fault(f) => {
                if f.set.is_some() {
                    errors_on = true;
                }
                if f.clear {
                    errors_on = false;
                }
            }
            _ => {}
        }
    }
    if let Some((p, _)) = pods.iter().find(|(_, p)| !p.deleted) {
        return Err(format!("pod {p} is never deleted"));
    }
    if let Some((c, _)) = claims.iter().find(|(_, c)| !c.deleted) {
        return Err(format!("claim {c} is never deleted"));
    }
    match s.steps.last() {
        Some(Step::ExpectHost(e)) if e.no_host_volumes => Ok(()),
        _ => Err("the last step must be expectHost: {noHostVolumes: true}".into()),
    }
}

/// The claim of a pod that was created, seen running, and not deleted.
fn live_pod(pods: &BTreeMap<String, PodInfo>, pod: &str) -> Result<String, String> {
    let p = pods.get(pod).ok_or_else(|| format!("unknown pod {pod}"))?;
    if p.deleted || !p.running {
        return Err(format!("pod {pod} is not running (deleted: {}, seen running: {})", p.deleted, p.running));
    }
    Ok(p.claim.clone())
}
