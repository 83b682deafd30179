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

/// Where progress goes. One scenario at a time on a terminal: a live status
/// line, rewritten. In logs and pipes, or with scenarios side by side: plain
/// lines (no control codes), each naming its scenario, so a hang shows the
/// step it hung in and interleaved lines stay readable.
pub struct Output {
    pub parallel: bool,
}

impl Output {
    fn live(&self) -> bool {
        !self.parallel && std::io::stdout().is_terminal() && std::env::var_os("CI").is_none()
    }

    /// A step starting: rewritten in place when live.
    fn line(&self, line: &str) {
        if self.live() {
            print!("\r\x1b[2K{line}");
            let _ = std::io::stdout().lock().flush();
        } else {
            println!("{}", line.trim_end());
        }
    }

    /// A scenario finished: a line of its own that stays.
    fn done(&self, line: &str) {
        if self.live() {
            println!("\r\x1b[2K{line}");
        } else {
            println!("{line}");
        }
    }
}

pub async fn run_one<B: Backend>(
    backend: &B,
    scenario: &Scenario,
    file: &str,
    work: &Path,
    out: &Output,
) -> ScenarioResult {
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
                out.line(&format!("  {} › {label}", scenario.name));
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
            // After the shutdown: the cluster backend reads its timeline from the
            // driver's metrics there, before the chart goes.
            let env = cluster.env().clone();
            cluster.shutdown().await;
            timeline = env.timeline.lock().unwrap_or_else(|p| p.into_inner()).clone();
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

/// How many scenarios run side by side when `--jobs` is not given: they mostly
/// wait (on hotplug latencies, processes starting, the kubelet's loop), so
/// two per core keep the machine busy without stretching the whole run.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()) * 2
}

/// Runs every scenario, at most `jobs` at once, each in its own work
/// directory (its own simulator port, sockets, state and loop devices).
/// Results come back in file order whatever order they finished in.
pub async fn run_all<B: Backend>(
    backend: &B,
    files: &[(PathBuf, Scenario)],
    work_root: &Path,
    keep_work: bool,
    jobs: usize,
) -> (Vec<ScenarioResult>, Duration) {
    use futures::StreamExt;
    let started = Instant::now();
    let total = files.len();
    let finished = std::sync::atomic::AtomicUsize::new(0);
    let out = Output { parallel: jobs > 1 };
    let mut results: Vec<(usize, ScenarioResult)> = futures::stream::iter(start_order(files))
        .map(|i| {
            let (path, scenario) = &files[i];
            let (finished, out) = (&finished, &out);
            async move {
                if !out.parallel {
                    out.line(&format!("[{}/{total}] {}", i + 1, scenario.name));
                }
                let work = work_root.join(format!("{:02}-{}", i + 1, scenario.name));
                let r = match clear_work(&work) {
                    Ok(()) => run_one(backend, scenario, &path.display().to_string(), &work, out).await,
                    Err(e) => ScenarioResult {
                        name: scenario.name.clone(),
                        file: path.display().to_string(),
                        passed: false,
                        error: Some(e),
                        seconds: 0.0,
                        steps: Vec::new(),
                        timeline: Vec::new(),
                    },
                };
                let done = finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                out.done(&format!(
                    "[{done}/{total}] {} {} ({:.1}s)",
                    scenario.name,
                    if r.passed { "pass" } else { "FAIL" },
                    r.seconds
                ));
                if r.passed && !keep_work {
                    let _ = std::fs::remove_dir_all(&work);
                }
                (i, r)
            }
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    results.sort_by_key(|(i, _)| *i);
    (results.into_iter().map(|(_, r)| r).collect(), started.elapsed())
}

/// The order scenarios start in when several run at once: the ones with the
/// most steps first, so a long one does not start last and keep the suite
/// waiting alone at the end; file order among equals and when run one by one
/// would not change the total.
fn start_order(files: &[(PathBuf, Scenario)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files[i].1.steps.len()));
    order
}

/// Removes what an earlier run left in a scenario's work directory (a failed
/// one keeps it), mounts below it first: a simulator killed with an RWX export
/// mounted leaves that mount, `remove_dir_all` then stops at it and the next
/// simulator would restore the old run's state from what is left.
fn clear_work(work: &Path) -> Result<(), String> {
    let mut mounts = crate::work_dir::mounts_below(work);
    // Deepest first; lazily, so a mount still busy for a moment goes anyway.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in &mounts {
        let out = std::process::Command::new("umount").arg("-l").arg(m).output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Err(format!(
                    "unmounting {m} (left by an earlier run): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => return Err(format!("unmounting {m} (left by an earlier run): umount: {e}")),
        }
    }
    crate::work_dir::remove(work)
        .map_err(|e| format!("removing {} (an earlier run's work directory): {e}", work.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[ignore = "needs root: mounts a tmpfs below a temporary directory"]
    fn an_earlier_runs_work_directory_goes_with_its_mounts() {
        let root = tempfile::tempdir().expect("temp dir");
        let work = root.path().join("01-case");
        let mounted = work.join("host/exports/pvc-1");
        std::fs::create_dir_all(&mounted).expect("dirs");
        std::fs::write(work.join("host/state.json"), "{}").expect("state");
        let status =
            std::process::Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&mounted).status().expect("mount");
        assert!(status.success(), "mount tmpfs");
        std::fs::write(mounted.join("f"), "x").expect("a file in the mount");
        clear_work(&work).expect("cleared");
        assert!(!work.exists(), "the work directory is gone");
        let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!info.contains(&mounted.display().to_string()), "the mount is gone");
    }

    #[test]
    fn a_missing_work_directory_is_already_clear() {
        let root = tempfile::tempdir().expect("temp dir");
        clear_work(&root.path().join("never-made")).expect("nothing to clear");
    }
}
