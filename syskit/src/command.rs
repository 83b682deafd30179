//! Running external tools with a deadline and keeping what they said.

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Error messages end up in Kubernetes events and gRPC status; a full
/// `xfs_repair` transcript would drown the useful last lines.
pub const MAX_DIAGNOSTIC_BYTES: usize = 4096;

/// Where admin tools live when PATH lacks them (see [`find_program`]).
const ADMIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("start {}: {source}", program.display())]
    Start {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("wait for {}: {source}", program.display())]
    Wait {
        program: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("`{cmd}` did not finish within {after:?} and was killed")]
    Timeout { cmd: String, after: Duration },

    /// `code` is `None` when the command was killed by a signal; `diagnostic`
    /// is [`Output::diagnostic`].
    #[error("`{cmd}` failed (exit status {}): {diagnostic}", code.map_or_else(|| "none: killed by signal".to_owned(), |c| c.to_string()))]
    Failed { cmd: String, code: Option<i32>, diagnostic: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// `None` if the process was killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

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

/// The program `name` as found on PATH, else in the sbin and bin directories,
/// else `name` itself (so starting it reports it as missing).
///
/// Admin tools (losetup, mkfs) live in sbin, which is often missing from PATH
/// when a process is started by a service manager or `sudo` without a login
/// shell.
pub fn find_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(ADMIN_DIRS.map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// A command line to run with [`Cmd::output`] or [`Cmd::run`].
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    search_admin_dirs: bool,
}

impl Cmd {
    /// Runs `program` as given: a bare name is looked up on PATH only.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd { program: program.as_ref().to_owned(), args: Vec::new(), search_admin_dirs: false }
    }

    /// Looks the program up with [`find_program`] when it starts, so sbin tools
    /// are found without sbin on PATH. Logs and errors still show the bare name.
    pub fn admin_tool(name: &str) -> Self {
        Cmd { search_admin_dirs: true, ..Cmd::new(name) }
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

    fn executable(&self) -> PathBuf {
        match self.program.to_str() {
            Some(name) if self.search_admin_dirs && !name.contains('/') => find_program(name),
            _ => PathBuf::from(&self.program),
        }
    }

    /// Runs to completion and returns the output whatever the exit status;
    /// fails only if the program cannot be started or overruns `timeout`.
    pub async fn output(&self, timeout: Duration) -> Result<Output, CommandError> {
        let cmd = self.display();
        tracing::debug!(%cmd, "running");
        let exe = self.executable();
        let child = Command::new(&exe)
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
            .map_err(|source| CommandError::Start { program: Path::new(&self.program).to_owned(), source })?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(res) => {
                res.map_err(|source| CommandError::Wait { program: Path::new(&self.program).to_owned(), source })?
            }
            Err(_) => {
                tracing::warn!(%cmd, ?timeout, "command timed out, killing it");
                return Err(CommandError::Timeout { cmd, after: timeout });
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
    pub async fn run(&self, timeout: Duration) -> Result<Output, CommandError> {
        let out = self.output(timeout).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(self.failed(&out))
        }
    }

    /// The error for this command having finished with `out`.
    pub fn failed(&self, out: &Output) -> CommandError {
        CommandError::Failed { cmd: self.display(), code: out.code, diagnostic: out.diagnostic() }
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
        assert!(out.success());
    }

    #[tokio::test]
    async fn failure_carries_command_status_and_stderr() {
        let cmd = Cmd::new("sh").args(["-c", "echo out; echo 'it broke' >&2; exit 3"]);
        let err = cmd.run(SECOND * 10).await.expect_err("exit 3");
        match &err {
            CommandError::Failed { cmd, code, diagnostic } => {
                assert!(cmd.starts_with("sh -c echo out"), "{cmd}");
                assert_eq!(*code, Some(3));
                assert_eq!(diagnostic, "it broke");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(err.to_string().ends_with("failed (exit status 3): it broke"), "{err}");
    }

    #[test]
    fn killed_by_signal_is_said_so() {
        let err = CommandError::Failed { cmd: "x".into(), code: None, diagnostic: String::new() };
        assert!(err.to_string().contains("killed by signal"), "{err}");
    }

    #[tokio::test]
    async fn output_does_not_treat_nonzero_as_error() {
        let out = Cmd::new("sh").args(["-c", "exit 8"]).output(SECOND * 10).await.expect("sh runs");
        assert_eq!(out.code, Some(8));
        assert!(!out.success());
    }

    #[tokio::test]
    async fn stdout_is_the_diagnostic_when_stderr_is_silent() {
        let err = Cmd::new("sh").args(["-c", "echo only-stdout; exit 1"]).run(SECOND * 10).await.expect_err("exit 1");
        assert!(matches!(err, CommandError::Failed { ref diagnostic, .. } if diagnostic == "only-stdout"));
    }

    #[tokio::test]
    async fn timeout_kills_the_command() {
        let err = Cmd::new("sleep").arg("30").run(Duration::from_millis(200)).await.expect_err("must time out");
        assert!(matches!(err, CommandError::Timeout { ref cmd, .. } if cmd == "sleep 30"), "{err:?}");
    }

    #[tokio::test]
    async fn missing_program_cannot_start() {
        let err = Cmd::new("definitely-not-a-real-program-xyz").run(SECOND).await.expect_err("no such program");
        assert!(
            matches!(&err, CommandError::Start { program, .. } if program == Path::new("definitely-not-a-real-program-xyz")),
            "{err:?}"
        );
        let err = Cmd::admin_tool("definitely-not-a-real-program-xyz").run(SECOND).await.expect_err("nowhere either");
        assert!(matches!(err, CommandError::Start { .. }), "{err:?}");
    }

    #[test]
    fn admin_tools_are_looked_up_but_shown_by_name() {
        // `sh` is in /bin or /usr/bin on every Linux system.
        let found = find_program("sh");
        assert!(found.is_absolute() && found.ends_with("sh"), "{}", found.display());
        let cmd = Cmd::admin_tool("sh").args(["-c", "exit 0"]);
        assert_eq!(cmd.display(), "sh -c exit 0");
        assert_eq!(cmd.executable(), found);
        assert_eq!(Cmd::new("sh").executable(), Path::new("sh"), "plain commands leave the lookup to PATH");
        assert_eq!(Cmd::admin_tool("/opt/x/tool").executable(), Path::new("/opt/x/tool"), "a path is taken as given");
        assert_eq!(find_program("definitely-not-a-real-program-xyz"), Path::new("definitely-not-a-real-program-xyz"));
    }

    #[test]
    fn diagnostic_keeps_the_tail_of_long_output() {
        let long = format!("{}END", "é".repeat(5000));
        let out = Output { code: Some(1), stdout: String::new(), stderr: long };
        let diag = out.diagnostic();
        assert!(diag.ends_with("END"));
        assert!(diag.starts_with("..."));
        assert!(diag.len() <= MAX_DIAGNOSTIC_BYTES + 3);
    }

    #[test]
    fn combined_holds_both_streams() {
        let out = Output { code: Some(1), stdout: "a".into(), stderr: "b".into() };
        assert_eq!(out.combined(), "a\nb");
    }
}
