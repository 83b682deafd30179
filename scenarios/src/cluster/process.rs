//! Long-running cluster processes: started in their own process group with
//! output to `<state>/logs/<name>.log` and `<pid> <start time>` in
//! `<state>/pids/<name>.pid`, so a later command (`cluster down`) stops exactly
//! them, and a reused pid is never mistaken for one of ours.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{ClusterError, Result};

pub fn log_path(state: &Path, name: &str) -> PathBuf {
    state.join("logs").join(format!("{name}.log"))
}

fn pid_path(state: &Path, name: &str) -> PathBuf {
    state.join("pids").join(format!("{name}.pid"))
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks) and the state letter.
fn stat(pid: u32) -> Option<(u64, char)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields count from its closing ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    Some((fields.get(19)?.parse().ok()?, state))
}

/// Starts `program args` as a daemon named `name`; returns its pid.
pub fn spawn(state: &Path, name: &str, program: &Path, args: &[String]) -> Result<u32> {
    spawn_with_env(state, name, program, args, &[])
}

pub fn spawn_with_env(
    state: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    env: &[(&str, String)],
) -> Result<u32> {
    use std::os::unix::process::CommandExt;
    let log = log_path(state, name);
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ClusterError::io("creating", dir, e))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| ClusterError::io("opening", &log, e))?;
    let err = out.try_clone().map_err(|e| ClusterError::io("opening", &log, e))?;
    let child = std::process::Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group: a Ctrl-C of the command that started it does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| ClusterError::Command {
            command: format!("{} ({name})", program.display()),
            detail: e.to_string(),
        })?;
    let pid = child.id();
    let started = stat(pid).map(|(t, _)| t).unwrap_or(0);
    let path = pid_path(state, name);
    super::write_file(&path, &format!("{pid} {started}\n"), 0o644)?;
    Ok(pid)
}

/// The pid of `name` if it is still the process we started.
pub fn running(state: &Path, name: &str) -> Option<u32> {
    let text = std::fs::read_to_string(pid_path(state, name)).ok()?;
    let mut parts = text.split_whitespace();
    let pid: u32 = parts.next()?.parse().ok()?;
    let started: u64 = parts.next()?.parse().ok()?;
    match stat(pid) {
        Some((t, s)) if t == started && s != 'Z' && s != 'X' => Some(pid),
        _ => None,
    }
}

pub fn describe(state: &Path, name: &str) -> String {
    match running(state, name) {
        Some(pid) => format!("running (pid {pid})"),
        None => "stopped".into(),
    }
}

/// Whether `pid` is gone (or a zombie); reaps it if it is our child.
pub fn gone(pid: u32) -> bool {
    let _ = nix::sys::wait::waitpid(Pid::from_raw(pid as i32), Some(nix::sys::wait::WaitPidFlag::WNOHANG));
    !matches!(stat(pid), Some((_, s)) if s != 'Z' && s != 'X')
}

/// SIGTERM, then SIGKILL after `grace`; waits until the process is gone.
pub async fn terminate(pid: u32, grace: Duration) {
    let p = Pid::from_raw(pid as i32);
    let _ = kill(p, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while !gone(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !gone(pid) {
        let _ = kill(p, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !gone(pid) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Stops `name` if it runs and forgets it.
pub async fn stop(state: &Path, name: &str) {
    if let Some(pid) = running(state, name) {
        terminate(pid, Duration::from_secs(10)).await;
    }
    let _ = std::fs::remove_file(pid_path(state, name));
}

/// SIGKILL, for processes found rather than started (a node's container processes).
pub fn kill_now(pid: u32) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

/// The last lines a process logged, for errors.
pub fn tail(state: &Path, name: &str, lines: usize) -> String {
    let text = std::fs::read_to_string(log_path(state, name)).unwrap_or_default();
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_daemon_is_found_by_its_pid_file_and_stopped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pid = spawn(dir.path(), "sleeper", Path::new("sleep"), &["60".into()]).expect("spawn");
        assert_eq!(running(dir.path(), "sleeper"), Some(pid));
        stop(dir.path(), "sleeper").await;
        assert!(gone(pid));
        assert_eq!(running(dir.path(), "sleeper"), None);
    }

    #[test]
    fn a_pid_file_naming_another_process_is_not_ours() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Our own pid with a start time that is not ours: a reused pid.
        super::super::write_file(&pid_path(dir.path(), "x"), &format!("{} 1\n", std::process::id()), 0o644)
            .expect("pid file");
        assert_eq!(running(dir.path(), "x"), None);
    }
}
