//! Running external tools with a deadline and keeping what they said.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

use super::MountError;

/// Error messages end up in Kubernetes events and gRPC status; a full
/// `xfs_repair` transcript would drown the useful last lines.
const MAX_DIAGNOSTIC_BYTES: usize = 4096;

#[derive(Debug)]
pub(crate) struct Output {
    /// `None` if the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// What to show a human when the command went wrong. Several tools
    /// (e2fsck, xfs_repair) report problems on stdout, so fall back to it.
    pub fn diagnostic(&self) -> String {
        let text = match self.stderr.trim() {
            "" => self.stdout.trim(),
            stderr => stderr,
        };
        tail(text, MAX_DIAGNOSTIC_BYTES)
    }

    /// Both streams, for callers that search the output for known phrases.
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

pub(crate) struct Cmd {
    program: OsString,
    args: Vec<OsString>,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd { program: program.as_ref().to_owned(), args: Vec::new() }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// The command line as it would be typed, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(self.program.to_string_lossy())
            .chain(self.args.iter().map(|a| a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs to completion and returns the output whatever the exit status;
    /// fails only if the program cannot be started or overruns `timeout`.
    pub async fn output(&self, timeout: Duration) -> Result<Output, MountError> {
        let cmd = self.display();
        tracing::debug!(%cmd, "running");
        let child = Command::new(&self.program)
            .args(&self.args)
            // Callers match on messages such as "target is busy"; translated
            // output would silently break that.
            .env("LC_ALL", "C")
            // Anything that prompts must fail rather than wait for an answer.
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Dropping the wait future on timeout must not leave e.g. a
            // half-finished mkfs running behind our back.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| MountError::io("start", Path::new(&self.program), e))?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(res) => res.map_err(|e| MountError::io("wait for", Path::new(&self.program), e))?,
            Err(_) => {
                tracing::warn!(%cmd, ?timeout, "command timed out, killing it");
                return Err(MountError::Timeout { cmd, after: timeout });
            }
        };
        let out = Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        tracing::debug!(%cmd, code = ?out.code, "finished");
        Ok(out)
    }

    /// Like [`Cmd::output`] but a non-zero exit is an error.
    pub async fn run(&self, timeout: Duration) -> Result<Output, MountError> {
        let out = self.output(timeout).await?;
        if out.code == Some(0) {
            Ok(out)
        } else {
            Err(self.failed(&out))
        }
    }

    pub fn failed(&self, out: &Output) -> MountError {
        MountError::CommandFailed { cmd: self.display(), code: out.code, stderr: out.diagnostic() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn success_returns_stdout() {
        let out = Cmd::new("sh").args(["-c", "echo hello"]).run(SECOND * 10).await.expect("sh runs");
        assert_eq!(out.stdout, "hello\n");
        assert_eq!(out.code, Some(0));
    }

    #[tokio::test]
    async fn failure_carries_command_status_and_stderr() {
        let cmd = Cmd::new("sh").args(["-c", "echo out; echo 'it broke' >&2; exit 3"]);
        match cmd.run(SECOND * 10).await {
            Err(MountError::CommandFailed { cmd, code, stderr }) => {
                assert!(cmd.starts_with("sh -c echo out"), "{cmd}");
                assert_eq!(code, Some(3));
                assert_eq!(stderr, "it broke");
            }
            other => panic!("expected CommandFailed, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn output_does_not_treat_nonzero_as_error() {
        let out = Cmd::new("sh").args(["-c", "exit 8"]).output(SECOND * 10).await.expect("sh runs");
        assert_eq!(out.code, Some(8));
    }

    #[tokio::test]
    async fn stdout_is_the_diagnostic_when_stderr_is_silent() {
        let err = Cmd::new("sh").args(["-c", "echo only-stdout; exit 1"]).run(SECOND * 10).await.expect_err("exit 1");
        assert!(matches!(err, MountError::CommandFailed { ref stderr, .. } if stderr == "only-stdout"));
    }

    #[tokio::test]
    async fn timeout_kills_the_command() {
        let started = std::time::Instant::now();
        let err = Cmd::new("sleep").arg("30").run(Duration::from_millis(200)).await.expect_err("must time out");
        assert!(matches!(err, MountError::Timeout { ref cmd, .. } if cmd == "sleep 30"), "{err:?}");
        assert!(started.elapsed() < SECOND * 5);
    }

    #[tokio::test]
    async fn missing_program_is_an_io_error() {
        let err = Cmd::new("definitely-not-a-real-program-xyz").run(SECOND).await.expect_err("no such program");
        assert!(matches!(err, MountError::Io { op: "start", .. }), "{err:?}");
    }

    #[test]
    fn diagnostic_keeps_the_tail_of_long_output() {
        let long = format!("{}END", "é".repeat(5000));
        let out = Output { code: Some(1), stdout: String::new(), stderr: long };
        let diag = out.diagnostic();
        assert!(diag.ends_with("END"));
        assert!(diag.len() <= MAX_DIAGNOSTIC_BYTES + 3);
    }
}
