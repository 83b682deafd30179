//! Finding helm 3 and helm 4 and running them on the chart. Both are built from
//! the Go module proxy by `ci/cluster/build-tools.sh helm helm4` into a cache
//! outside the clone; `$HELM` / `$HELM4` point at other binaries.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{chart_dir, repo_root};

/// Release name and namespace every rendering uses, so snapshots are stable.
pub const RELEASE: &str = "harvester-csi-driver";
pub const NAMESPACE: &str = "kube-system";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Major {
    V3,
    V4,
}

impl Major {
    pub const ALL: [Major; 2] = [Major::V3, Major::V4];

    fn env(self) -> &'static str {
        match self {
            Major::V3 => "HELM",
            Major::V4 => "HELM4",
        }
    }
    fn version_var(self) -> &'static str {
        match self {
            Major::V3 => "HELM_VERSION",
            Major::V4 => "HELM4_VERSION",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            Major::V3 => "v3.",
            Major::V4 => "v4.",
        }
    }
}

impl fmt::Display for Major {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Major::V3 => "helm 3",
            Major::V4 => "helm 4",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    #[error("{major} not found at {path}: set ${env} or run ci/cluster/build-tools.sh helm helm4")]
    NotFound { major: Major, env: &'static str, path: String },
    #[error("{0} is not {1} (its `version --short` says {2:?})")]
    WrongMajor(String, Major, String),
    #[error("ci/cluster/versions.sh: {0}")]
    Versions(String),
    #[error("running {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("{0}")]
    Unsupported(&'static str),
    /// `output`: stdout then stderr (lint reports findings on stdout, template on stderr).
    #[error("`{command}` failed ({status}):\n{output}")]
    Failed { command: String, status: String, output: String },
}

/// What to render: values files, `--set` pairs and `--api-versions`.
#[derive(Debug, Clone, Default)]
pub struct Render {
    pub values: Vec<PathBuf>,
    pub set: Vec<String>,
    pub api_versions: Vec<String>,
}

impl Render {
    pub fn values(mut self, file: impl Into<PathBuf>) -> Self {
        self.values.push(file.into());
        self
    }
    pub fn set(mut self, pair: impl Into<String>) -> Self {
        self.set.push(pair.into());
        self
    }
    pub fn api_version(mut self, gv: impl Into<String>) -> Self {
        self.api_versions.push(gv.into());
        self
    }

    fn args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for v in &self.values {
            args.push("--values".to_string());
            args.push(v.display().to_string());
        }
        for s in &self.set {
            args.push("--set".to_string());
            args.push(s.clone());
        }
        for a in &self.api_versions {
            args.push("--api-versions".to_string());
            args.push(a.clone());
        }
        args
    }
}

#[derive(Debug, Clone)]
pub struct Helm {
    pub major: Major,
    pub path: PathBuf,
}

/// `NAME=value` from a shell file of plain assignments.
fn shell_var(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| l.trim().strip_prefix(name)?.strip_prefix('=').map(|v| v.trim_matches('"').to_string()))
}

impl Helm {
    /// `$HELM` / `$HELM4`, else the tools cache at the version `ci/cluster/versions.sh` names.
    pub fn locate(major: Major) -> Result<Helm, HelmError> {
        let path = match std::env::var_os(major.env()) {
            Some(p) => PathBuf::from(p),
            None => {
                let versions_file = repo_root().join("ci/cluster/versions.sh");
                let text = std::fs::read_to_string(&versions_file).map_err(|e| HelmError::Versions(e.to_string()))?;
                let version = shell_var(&text, major.version_var())
                    .ok_or_else(|| HelmError::Versions(format!("no {}", major.version_var())))?;
                let cache = std::env::var_os("HCSI_TOOLS_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from("/var/cache/harvester-csi-tools"));
                cache.join(format!("helm-{version}")).join("bin/helm")
            }
        };
        if !path.is_file() {
            return Err(HelmError::NotFound { major, env: major.env(), path: path.display().to_string() });
        }
        let helm = Helm { major, path };
        let version = helm.run(&["version", "--short"])?;
        if !version.trim().starts_with(major.prefix()) {
            return Err(HelmError::WrongMajor(helm.path.display().to_string(), major, version.trim().to_string()));
        }
        Ok(helm)
    }

    /// Runs helm with its config, cache and data under a scratch directory, so
    /// nothing from the user's helm setup (repositories, plugins) leaks in.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<String, HelmError> {
        let home = std::env::temp_dir().join("deploy-checks-helm-home");
        let shown = format!(
            "{} {}",
            self.path.display(),
            args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
        );
        let out = Command::new(&self.path)
            .args(args)
            .env("HELM_CONFIG_HOME", home.join("config"))
            .env("HELM_CACHE_HOME", home.join("cache"))
            .env("HELM_DATA_HOME", home.join("data"))
            .env_remove("KUBECONFIG")
            .output()
            .map_err(|e| HelmError::Spawn(shown.clone(), e))?;
        if !out.status.success() {
            return Err(HelmError::Failed {
                command: shown,
                status: out.status.to_string(),
                output: format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `helm template` of the chart as release `harvester-csi-driver` in `kube-system`.
    pub fn template(&self, render: &Render) -> Result<String, HelmError> {
        let chart = chart_dir();
        let mut args = vec!["template".to_string(), RELEASE.into(), chart.display().to_string()];
        args.extend(["--namespace".to_string(), NAMESPACE.into()]);
        args.extend(render.args());
        self.run(&args)
    }

    /// `helm lint --strict` of the chart with these values (lint takes no `--api-versions`).
    pub fn lint(&self, render: &Render) -> Result<String, HelmError> {
        if !render.api_versions.is_empty() {
            return Err(HelmError::Unsupported("helm lint has no --api-versions"));
        }
        let chart = chart_dir();
        let mut args = vec!["lint".to_string(), "--strict".into(), chart.display().to_string()];
        args.extend(["--namespace".to_string(), NAMESPACE.into()]);
        args.extend(render.args());
        self.run(&args)
    }
}

/// A values file of the chart tests (`deploy/tests/values/NAME.yaml`).
pub fn test_values(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/values").join(format!("{name}.yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_shell_assignments() {
        let text = "# comment\nHELM_VERSION=v3.22.0\nHELM4_VERSION=\"v4.3.1\"\n";
        assert_eq!(shell_var(text, "HELM_VERSION").as_deref(), Some("v3.22.0"));
        assert_eq!(shell_var(text, "HELM4_VERSION").as_deref(), Some("v4.3.1"));
        assert_eq!(shell_var(text, "HELM"), None);
    }

    #[test]
    fn render_options_become_helm_flags() {
        let r = Render::default().values("a.yaml").set("x=1").api_version("snapshot.storage.k8s.io/v1");
        assert_eq!(r.args(), ["--values", "a.yaml", "--set", "x=1", "--api-versions", "snapshot.storage.k8s.io/v1"]);
    }
}
