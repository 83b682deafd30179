//! The generator without a cluster: determinism, validity of every plan by the
//! model's own loader and by the generator's rules, and that the plans do reach
//! every operation and fault they are meant to.

use std::collections::BTreeSet;

use super::generate::scenario;
use super::run::yaml_of;
use super::{faults_of, rules, to_yaml};
use crate::model::{self, Step};

const SEEDS: std::ops::Range<u64> = 0..200;

fn json(s: &model::Scenario) -> serde_json::Value {
    serde_json::to_value(s).expect("a scenario serializes")
}

#[test]
fn the_same_seed_gives_the_same_scenario() {
    for seed in [0, 1, 17, u64::MAX] {
        assert_eq!(json(&scenario(seed)), json(&scenario(seed)), "seed {seed}");
    }
}

#[test]
fn different_seeds_give_different_scenarios() {
    let distinct: BTreeSet<String> = SEEDS.map(|s| json(&scenario(s))["steps"].to_string()).collect();
    // Names carry the seed; the steps themselves must differ too.
    assert!(distinct.len() > 190, "only {} distinct plans in {} seeds", distinct.len(), SEEDS.end);
}

#[test]
fn every_plan_loads_back_unchanged_and_keeps_the_rules() {
    for seed in SEEDS {
        let s = scenario(seed);
        let text = to_yaml(&s).expect("YAML");
        let back = model::load(&text, &format!("seed {seed}")).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(json(&back), json(&s), "seed {seed} round trip\n{text}");
        rules::check(&s).unwrap_or_else(|e| panic!("seed {seed}: {e}\n{text}"));
        yaml_of(seed).expect("yaml_of checks the round trip itself");
    }
}

#[test]
fn the_rules_catch_a_broken_plan() {
    let s = scenario(3);
    // A read of a checksum nobody wrote.
    let mut bad = s.clone();
    let read = bad.steps.iter_mut().find_map(|st| if let Step::Read(r) = st { Some(r) } else { None });
    read.expect("seed 3 reads something").checksum = "never-written".into();
    assert!(rules::check(&bad).expect_err("unknown checksum").contains("never-written"));
    // A second RWO pod before the first is deleted.
    let mut bad = s.clone();
    let (i, pod) = bad
        .steps
        .iter()
        .enumerate()
        .find_map(|(i, st)| match st {
            Step::RunPod(p) => Some((i, p.clone())),
            _ => None,
        })
        .expect("a pod");
    let mut twin = pod.clone();
    twin.name = "twin".into();
    bad.steps.insert(i + 1, Step::RunPod(twin));
    let rwo = !pod.volumes[0].pvc.starts_with("rwx");
    assert_eq!(rules::check(&bad).is_err(), rwo, "{:?}", rules::check(&bad));
    // Cleanup left out.
    let mut bad = s;
    bad.steps.truncate(bad.steps.len() - 1);
    assert!(rules::check(&bad).is_err());
}

#[test]
fn the_plans_reach_every_operation_and_fault() {
    let mut seen = BTreeSet::new();
    for seed in SEEDS {
        let s = scenario(seed);
        seen.insert(format!("vms {}", s.world.vms.len()));
        for f in faults_of(&s) {
            seen.insert(f.split(' ').next().unwrap_or("").to_string());
            if let Some(k) = f.strip_prefix("kill ") {
                seen.insert(format!("kill {}", k.split(':').next().unwrap_or("")));
            }
        }
        for (i, st) in s.steps.iter().enumerate() {
            // A kill right after a runPod, or after a runPod and a sleep.
            let after_run_pod = (i >= 1 && matches!(s.steps[i - 1], Step::RunPod(_)))
                || (i >= 2 && matches!(s.steps[i - 1], Step::Sleep(_)) && matches!(s.steps[i - 2], Step::RunPod(_)));
            match st {
                Step::Expand(_) => {
                    seen.insert("expand".into());
                }
                Step::Snapshot(_) => {
                    seen.insert("snapshot".into());
                }
                Step::Delete(d) if d.pod.is_some() && !d.wait => {
                    seen.insert("move without waiting".into());
                }
                Step::Write(w) if w.offset > 0 => {
                    seen.insert("block range".into());
                }
                Step::Apply(_) => {
                    seen.insert("restore".into());
                }
                Step::Fault(f) if after_run_pod && f.kill_and_restart.is_some() => {
                    seen.insert("kill mid-start".into());
                }
                _ => {}
            }
        }
        let rwx_pods =
            s.steps.iter().filter(|st| matches!(st, Step::RunPod(p) if p.volumes[0].pvc.starts_with("rwx"))).count();
        if rwx_pods >= 2 {
            seen.insert("rwx on two pods".into());
        }
    }
    for want in [
        "vms 2",
        "vms 3",
        "kill controller",
        "kill node",
        "kill simulator",
        "errors",
        "clear",
        "drop",
        "expand",
        "snapshot",
        "restore",
        "move without waiting",
        "block range",
        "kill mid-start",
        "rwx on two pods",
    ] {
        assert!(seen.contains(want), "no seed in {SEEDS:?} has {want:?}; seen: {seen:?}");
    }
}
