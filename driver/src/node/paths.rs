//! Paths the CO hands the node plugin, which mounts on them as root: they must
//! lie under the kubelet's root directory (`--kubelet-root`), without `..`,
//! without a symbolic link leading out of it, and the path itself must not be
//! a symbolic link (a mount follows it). Anything else is refused before a
//! single mount or mkdir happens.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct KubeletRoot {
    /// As configured (what paths are compared with lexically).
    given: PathBuf,
    /// With symbolic links resolved, when it exists (a kubelet root may itself be a link).
    resolved: PathBuf,
}

impl KubeletRoot {
    pub fn new(given: impl Into<PathBuf>) -> Self {
        let given = given.into();
        let resolved = std::fs::canonicalize(&given).unwrap_or_else(|_| given.clone());
        Self { given, resolved }
    }

    pub fn path(&self) -> &Path {
        &self.given
    }

    /// `p` as a path the node plugin may mount on, or INVALID_ARGUMENT naming `field`.
    pub fn check<'a>(&self, field: &str, p: &'a str) -> Result<&'a Path> {
        let invalid = |why: String| Error::InvalidArgument(format!("{field} {p:?} {why}"));
        if p.is_empty() {
            return Err(Error::InvalidArgument(format!("{field} is required")));
        }
        // No system call takes a path with a NUL byte: refuse it here, as the CO's
        // mistake, rather than fail the mkdir later as if it were ours.
        if p.contains('\0') {
            return Err(invalid("contains a NUL byte".into()));
        }
        let path = Path::new(p);
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(invalid("must be an absolute path without '..'".into()));
        }
        let under = |root: &Path, candidate: &Path| candidate.starts_with(root) && candidate != root;
        if !under(&self.given, path) && !under(&self.resolved, path) {
            return Err(invalid(format!("is outside the kubelet root {}", self.given.display())));
        }
        // Without its root every path would resolve through an ancestor of the root
        // and look like an escape; the cause is the configuration, so say so.
        if std::fs::symlink_metadata(&self.resolved).is_err() {
            return Err(Error::FailedPrecondition(format!(
                "the kubelet root {} does not exist on this node: --kubelet-root must name the kubelet's root directory",
                self.given.display()
            )));
        }
        // The parent is resolved, not the path: a stale mount at the path itself would
        // make a stat hang or fail, and unpublishing it must still be possible.
        if let Some(parent) = existing_ancestor(path.parent().unwrap_or(path)) {
            match std::fs::canonicalize(&parent) {
                Ok(real) if real.starts_with(&self.resolved) || real.starts_with(&self.given) => {}
                Ok(real) => {
                    return Err(invalid(format!(
                        "leads outside the kubelet root through a symbolic link ({} is {})",
                        parent.display(),
                        real.display()
                    )))
                }
                Err(e) => return Err(invalid(format!("cannot be resolved: {e}"))),
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => Err(invalid("is a symbolic link".into())),
            Ok(_) => Ok(path),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(path),
            // ESTALE, ENOTCONN...: a dead mount is still ours to take down.
            Err(_) => Ok(path),
        }
    }
}

/// The deepest ancestor of `p` (itself included) that exists.
fn existing_ancestor(p: &Path) -> Option<PathBuf> {
    p.ancestors().find(|a| std::fs::symlink_metadata(a).is_ok()).map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    /// The rules on paths spelled under a kubelet root that exists (a temporary
    /// one: the machine's own /var/lib/kubelet may or may not be there).
    #[rstest]
    #[case("/pods/x/volumes/kubernetes.io~csi/pv/mount", true)]
    #[case("", false)]
    #[case("-other/x", false)]
    #[case("/../../etc", false)]
    #[case("/pods/x\0y/mount", false)]
    fn lexical_rules_under_the_root(#[case] suffix: &str, #[case] ok: bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubelet = dir.path().join("kubelet");
        std::fs::create_dir(&kubelet).expect("kubelet root");
        let root = KubeletRoot::new(&kubelet);
        let p = format!("{}{suffix}", kubelet.display());
        assert_eq!(root.check("target path", &p).is_ok(), ok, "{p:?}");
    }

    #[rstest]
    #[case("/etc/passwd")]
    #[case("relative/path")]
    #[case("")]
    fn paths_outside_any_root_are_refused(#[case] p: &str) {
        let err = KubeletRoot::new("/var/lib/kubelet").check("target path", p).expect_err(p);
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }

    #[test]
    fn a_missing_kubelet_root_is_named_as_the_configuration_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubelet = dir.path().join("not-there");
        let root = KubeletRoot::new(&kubelet);
        let err = root.check("target path", &kubelet.join("pods/x/mount").display().to_string()).expect_err("no root");
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(err.to_string().contains("--kubelet-root"), "{err}");
    }

    #[test]
    fn a_symlink_out_of_the_root_is_refused_and_one_within_it_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubelet = dir.path().join("kubelet");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(kubelet.join("pods/real")).expect("dirs");
        std::fs::create_dir_all(&outside).expect("outside");
        std::os::unix::fs::symlink(&outside, kubelet.join("pods/escape")).expect("escape link");
        std::os::unix::fs::symlink(kubelet.join("pods/real"), kubelet.join("pods/inner")).expect("inner link");
        let root = KubeletRoot::new(&kubelet);
        let s = |p: PathBuf| p.display().to_string();
        let escape = s(kubelet.join("pods/escape/mount"));
        let err = root.check("target path", &escape).expect_err("escapes");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(root.check("target path", &s(kubelet.join("pods/inner/mount"))).is_ok());
        // The path itself may not be a link, wherever it points.
        let err = root.check("target path", &s(kubelet.join("pods/inner"))).expect_err("a link");
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(root.check("target path", &s(kubelet.join("pods/new/deep/mount"))).is_ok(), "not there yet is fine");
    }

    #[test]
    fn a_kubelet_root_that_is_a_link_accepts_both_spellings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("data/kubelet");
        std::fs::create_dir_all(real.join("pods")).expect("dirs");
        let link = dir.path().join("var-lib-kubelet");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        let root = KubeletRoot::new(&link);
        assert!(root.check("target path", &link.join("pods/x/mount").display().to_string()).is_ok());
        assert!(root.check("target path", &real.join("pods/x/mount").display().to_string()).is_ok());
    }
}
