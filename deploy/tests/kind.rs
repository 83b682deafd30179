//! The kind configs, checked with kind's own v1alpha4 config types and strict
//! decoding (kind-config/validate, a Go program requiring sigs.k8s.io/kind): no
//! container engine runs here, so `kind create cluster` cannot. Needs Go and the
//! Go module proxy (or a module cache holding sigs.k8s.io/kind).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use deploy_checks::repo_root;

fn go() -> PathBuf {
    let local = PathBuf::from("/usr/local/go/bin/go");
    if Command::new("go").arg("version").output().is_ok_and(|o| o.status.success()) {
        PathBuf::from("go")
    } else {
        local
    }
}

/// The validator, built once per test run.
fn validator() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = std::env::temp_dir().join(format!("deploy-checks-kind-validate-{}", std::process::id()));
        let result = Command::new(go())
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(repo_root().join("kind-config/validate"))
            // The go.sum committed with it must be complete; no toolchain downloads.
            .env("GOFLAGS", "-mod=readonly -buildvcs=false")
            .env("GOTOOLCHAIN", "local")
            .output()
            .expect("go runs (Go is part of this project's toolchain)");
        assert!(result.status.success(), "go build kind-config/validate:\n{}", String::from_utf8_lossy(&result.stderr));
        out
    })
}

fn validate(file: &Path) -> (bool, String) {
    let out = Command::new(validator()).arg(file).output().expect("the validator runs");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn config_text() -> String {
    std::fs::read_to_string(repo_root().join("kind-config/kind-cluster.yaml")).expect("kind-cluster.yaml")
}

#[test]
fn the_kind_config_is_a_valid_strict_v1alpha4_cluster() {
    let (ok, out) = validate(&repo_root().join("kind-config/kind-cluster.yaml"));
    assert!(ok, "{out}");
    // One worker per VM of the simulator's default world.
    let text = config_text();
    for vm in ["guest-1", "guest-2", "guest-3"] {
        assert!(text.contains(&format!("/tmp/hcsi-kind/sim/vms/{vm}/root")), "no worker for {vm}");
    }
}

#[rstest::rstest]
#[case::misspelt_field("extraMounts:", "extraMount:", "unknown field \"extraMount\"")]
#[case::wrong_api_version("kind.x-k8s.io/v1alpha4", "kind.x-k8s.io/v1alpha3", "apiVersion")]
#[case::no_host_dev("containerPath: /dev\n", "containerPath: /devices\n", "/dev")]
#[case::two_control_planes(
    "  - role: worker\n    labels:\n      harvester-sim/vm: guest-3",
    "  - role: control-plane\n  - role: worker\n    labels:\n      harvester-sim/vm: guest-3",
    "control-plane"
)]
#[case::vm_twice("guest-2/root", "guest-1/root", "guest-1")]
#[case::relative_path("hostPath: /dev", "hostPath: dev", "absolute")]
fn a_broken_config_is_refused(#[case] from: &str, #[case] to: &str, #[case] message: &str) {
    let text = config_text();
    assert!(text.contains(from), "the config no longer contains {from:?}: update this case");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, text.replacen(from, to, 1)).expect("write");
    let (ok, out) = validate(&file);
    assert!(!ok, "accepted:\n{out}");
    assert!(out.contains(message), "the error does not name {message:?}:\n{out}");
}
