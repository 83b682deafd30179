//! Running seeds: each seed's scenario through the runner (`runner::run_one`) on a
//! backend wrapped in [`Checked`], one line per seed, a summary, and for each
//! failing seed the command that replays it (and, with `--write`, its YAML).

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::checked::{Checked, LEFTOVER_BOUND};
use super::{faults_of, generate, rules, to_yaml};
use crate::backend::Backend;
use crate::{model, runner, Failure};

pub struct Options {
    pub seeds: Vec<u64>,
    /// Work directories go here, one per seed (`seed-<S>`), kept when it fails.
    pub work_dir: PathBuf,
    pub keep_work: bool,
    /// Write the scenario of every failing seed here as `chaos-seed-<S>.yaml`.
    pub write: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SeedResult {
    pub seed: u64,
    pub passed: bool,
    pub seconds: f64,
    pub faults: Vec<String>,
    pub error: Option<String>,
    /// The step that took longest, and its seconds: how close a wait came to its bound.
    pub slowest: Option<(String, f64)>,
}

/// The YAML of a seed's scenario, checked to load back as the same scenario.
pub fn yaml_of(seed: u64) -> Result<String, Failure> {
    let s = generate::scenario(seed);
    let text = to_yaml(&s)?;
    let back = model::load(&text, &format!("seed {seed}")).map_err(Failure)?;
    let same = serde_json::to_value(&back).ok() == serde_json::to_value(&s).ok();
    if !same {
        return Err(Failure(format!("seed {seed}: the written YAML does not load back as the same scenario")));
    }
    Ok(text)
}

/// Removes what an earlier run of this seed kept, refusing if something is still
/// mounted there (deleting through a mount would delete what it shows).
fn fresh_work(work: &Path) -> Result<(), Failure> {
    let mounted = crate::work_dir::mounts_below(work);
    if !mounted.is_empty() {
        return Err(Failure(format!("{} still has mounts: {}", work.display(), mounted.join(", "))));
    }
    crate::work_dir::remove(work).map_err(|e| Failure(format!("removing {}: {e}", work.display())))
}

async fn run_seed<B: Backend + Sync>(backend: &Checked<B>, seed: u64, opts: &Options) -> SeedResult
where
    B::Cluster: Sync,
{
    let started = Instant::now();
    let scenario = generate::scenario(seed);
    let faults = faults_of(&scenario);
    let done = |error: Option<String>, slowest: Option<(String, f64)>| SeedResult {
        seed,
        passed: error.is_none(),
        seconds: started.elapsed().as_secs_f64(),
        faults: faults.clone(),
        error,
        slowest,
    };
    if let Err(e) = rules::check(&scenario) {
        return done(Some(format!("generator bug (the plan breaks its own rules): {e}")), None);
    }
    let work = opts.work_dir.join(format!("seed-{seed}"));
    if let Err(e) = fresh_work(&work) {
        return done(Some(e.0), None);
    }
    let r =
        runner::run_one(backend, &scenario, &format!("seed {seed}"), &work, &runner::Output { parallel: false }).await;
    let left = backend.found.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let error = match r.error {
        Some(e) => Some(e),
        None if !left.is_empty() => Some(format!(
            "left behind after cleanup (still there {}s later): {}",
            LEFTOVER_BOUND.as_secs(),
            left.join("; ")
        )),
        None => None,
    };
    if error.is_none() && !opts.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    }
    let slowest = r.steps.iter().max_by_key(|s| s.millis).map(|s| (s.label.clone(), s.millis as f64 / 1000.0));
    done(error, slowest)
}

/// Runs the seeds one after another, printing a line each, and returns them all.
pub async fn run_seeds<B: Backend + Sync>(backend: B, opts: &Options) -> Vec<SeedResult>
where
    B::Cluster: Sync,
{
    let backend = Checked { inner: backend, found: Default::default() };
    let mut results = Vec::new();
    for (i, &seed) in opts.seeds.iter().enumerate() {
        let r = run_seed(&backend, seed, opts).await;
        let slowest = r.slowest.as_ref().map(|(l, s)| format!("; slowest step {l} {s:.1}s")).unwrap_or_default();
        println!(
            "[{}/{}] seed {seed} {} {:.1}s faults: {}{slowest}",
            i + 1,
            opts.seeds.len(),
            if r.passed { "pass" } else { "FAIL" },
            r.seconds,
            if r.faults.is_empty() { "none".to_string() } else { r.faults.join(", ") }
        );
        if let Some(e) = &r.error {
            println!("    {e}");
            println!("    replay: scenarios chaos --seed {seed}");
            if let Some(dir) = &opts.write {
                match write_seed(dir, seed) {
                    Ok(file) => println!("    scenario: {} (scenarios run {})", file.display(), file.display()),
                    Err(e) => println!("    could not write its scenario: {e}"),
                }
            }
        }
        results.push(r);
    }
    results
}

fn write_seed(dir: &Path, seed: u64) -> Result<PathBuf, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| Failure(format!("{}: {e}", dir.display())))?;
    let file = dir.join(format!("chaos-seed-{seed}.yaml"));
    std::fs::write(&file, yaml_of(seed)?).map_err(|e| Failure(format!("{}: {e}", file.display())))?;
    Ok(file)
}

/// The summary after the per-seed lines.
pub fn summary(results: &[SeedResult], seconds: f64) -> String {
    let failed: Vec<&SeedResult> = results.iter().filter(|r| !r.passed).collect();
    let mut out = format!(
        "{} seed(s): {} passed, {} failed, {seconds:.1}s\n",
        results.len(),
        results.len() - failed.len(),
        failed.len()
    );
    for r in failed {
        out.push_str(&format!("  FAIL seed {}: replay with `scenarios chaos --seed {}`\n", r.seed, r.seed));
    }
    out
}
