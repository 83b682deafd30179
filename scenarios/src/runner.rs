//! Runs scenario files one after another on a backend.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::{Backend, Cluster};
use crate::model::{self, Scenario};
use crate::report::{ScenarioResult, StepResult};
use crate::{steps, Failure};

/// Scenario files: the given files, and `*.yaml` inside given directories, sorted.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|e| Failure(format!("{}: {e}", p.display())))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

pub fn load(path: &Path) -> Result<Scenario, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure(format!("{}: {e}", path.display())))?;
    model::load(&text, &path.display().to_string()).map_err(Failure)
}

/// A live, rewritten status line on a terminal; in logs and pipes, one plain line
/// per update (no control codes), so a hang shows the step it hung in.
fn progress(line: &str) {
    let stdout = std::io::stdout();
    if stdout.is_terminal() && std::env::var_os("CI").is_none() {
        print!("\r\x1b[2K{line}");
        let _ = stdout.lock().flush();
    } else {
        println!("{}", line.trim_end());
    }
}

pub async fn run_one<B: Backend>(backend: &B, scenario: &Scenario, file: &str, work: &Path) -> ScenarioResult {
    let started = Instant::now();
    let mut steps_done = Vec::new();
    let mut error = None;
    let mut timeline = Vec::new();
    match backend.start(scenario, work).await {
        Err(e) => error = Some(format!("starting the backend: {e}")),
        Ok(mut cluster) => {
            let guest = scenario.guest.clone();
            let setup =
                if guest.is_empty() { Ok(()) } else { steps::run_step(&mut cluster, &model::Step::Apply(guest)).await };
            if let Err(e) = setup {
                error = Some(format!("applying guest objects: {e}"));
            } else if let Err(e) = steps::upstream::seed(&cluster, &scenario.upstream_volumes).await {
                error = Some(format!("making the upstream driver's volumes: {e}"));
            }
            let deadline = Instant::now() + scenario.timeout;
            for (i, step) in scenario.steps.iter().enumerate() {
                if error.is_some() {
                    break;
                }
                let label = format!("{}. {}", i + 1, step.label());
                progress(&format!("  {} › {label}", scenario.name));
                let t = Instant::now();
                let left = deadline.saturating_duration_since(Instant::now());
                let r = match tokio::time::timeout(left, steps::run_step(&mut cluster, step)).await {
                    Ok(r) => r,
                    Err(_) => Err(Failure(format!("scenario timeout ({:?}) reached", scenario.timeout))),
                };
                let ok = r.is_ok();
                steps_done.push(StepResult {
                    label: label.clone(),
                    ok,
                    millis: t.elapsed().as_millis(),
                    error: r.as_ref().err().map(|e| e.0.clone()),
                });
                if let Err(e) = r {
                    error = Some(format!("step {label}: {e}"));
                }
            }
            let doubles = cluster.env().double_attached.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if error.is_none() && !doubles.is_empty() {
                error = Some(format!("a volume was attached to two VMs at once: {}", doubles.join("; ")));
            }
            let plugged = cluster.env().plugged_while_down.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if error.is_none() && !plugged.is_empty() {
                error = Some(format!("a disk was plugged into a VM that must get none: {}", plugged.join("; ")));
            }
            timeline = cluster.env().timeline.lock().unwrap_or_else(|p| p.into_inner()).clone();
            cluster.shutdown().await;
        }
    }
    ScenarioResult {
        name: scenario.name.clone(),
        file: file.into(),
        passed: error.is_none(),
        error,
        seconds: started.elapsed().as_secs_f64(),
        steps: steps_done,
        timeline,
    }
}

pub async fn run_all<B: Backend>(
    backend: &B,
    files: &[(PathBuf, Scenario)],
    work_root: &Path,
    keep_work: bool,
) -> (Vec<ScenarioResult>, Duration) {
    let started = Instant::now();
    let mut results = Vec::new();
    for (i, (path, scenario)) in files.iter().enumerate() {
        progress(&format!("[{}/{}] {}", i + 1, files.len(), scenario.name));
        let work = work_root.join(format!("{:02}-{}", i + 1, scenario.name));
        let _ = std::fs::remove_dir_all(&work);
        let r = run_one(backend, scenario, &path.display().to_string(), &work).await;
        progress(&format!(
            "[{}/{}] {} {} ({:.1}s)\n",
            i + 1,
            files.len(),
            scenario.name,
            if r.passed { "pass" } else { "FAIL" },
            r.seconds
        ));
        if r.passed && !keep_work {
            let _ = std::fs::remove_dir_all(&work);
        }
        results.push(r);
    }
    (results, started.elapsed())
}
