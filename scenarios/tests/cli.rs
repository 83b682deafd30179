//! The `scenarios` command as CI uses it: exit codes, error locations, the
//! summary and the JUnit file. The run test needs root (the embedded backend
//! uses loop devices and mounts) and the workspace's binaries next to this one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCENARIOS: &str = env!("CARGO_BIN_EXE_scenarios");

fn scenarios(args: &[&str]) -> Output {
    Command::new(SCENARIOS).args(args).env("CI", "true").output().expect("running scenarios")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CASE: &str = r#"name: NAME
proves: the runner reports what happened
world:
  profile: v1.5
  vms: [guest-1]
guest:
  - apiVersion: storage.k8s.io/v1
    kind: StorageClass
    metadata: {name: harvester}
    provisioner: driver.harvesterhci.io
  - apiVersion: v1
    kind: PersistentVolumeClaim
    metadata: {name: data, namespace: default}
    spec: {storageClassName: harvester, accessModes: [ReadWriteOnce], resources: {requests: {storage: 16Mi}}}
steps:
  - expect: {pvc: data, phase: PHASE, within: WITHIN}
"#;

fn case(dir: &Path, name: &str, phase: &str, within: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let body = CASE.replace("NAME", name).replace("PHASE", phase).replace("WITHIN", within);
    std::fs::write(&path, body).expect("writing a scenario");
    path
}

#[test]
fn validate_names_the_file_line_and_field_of_a_typo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = case(dir.path(), "typo", "Bound", "10s");
    let body = std::fs::read_to_string(&path).expect("read").replace("within:", "witin:");
    std::fs::write(&path, body).expect("write");
    let out = scenarios(&["validate", &path.display().to_string()]);
    assert!(!out.status.success(), "a typo must fail validation");
    let err = text(&out.stderr);
    assert!(err.contains("typo.yaml") && err.contains("witin") && err.contains("line 16"), "{err}");
}

#[test]
fn a_filter_that_matches_nothing_is_an_error_not_a_green_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = case(dir.path(), "one", "Bound", "10s");
    let out = scenarios(&["run", &path.display().to_string(), "--filter", "^nothing$"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("matches no scenario"), "{}", text(&out.stderr));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn a_failed_scenario_fails_the_run_and_the_junit_file_says_which() {
    if !is_root() {
        eprintln!("SKIP a_failed_scenario_fails_the_run…: the embedded backend needs root (loop devices, mounts)");
        return;
    }
    let bins = Path::new(SCENARIOS).parent().expect("binary dir");
    assert!(
        bins.join("harvester-sim").exists() && bins.join("harvester-csi-driver").exists(),
        "build the workspace binaries first (cargo test --workspace builds them)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    case(dir.path(), "binds", "Bound", "20s");
    case(dir.path(), "never-lost", "Lost", "1s");
    let junit = dir.path().join("junit.xml");
    let report = dir.path().join("report");
    let work = dir.path().join("work");
    let out = scenarios(&[
        "run",
        &dir.path().display().to_string(),
        "--junit",
        &junit.display().to_string(),
        "--report",
        &report.display().to_string(),
        "--work-dir",
        &work.display().to_string(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "one scenario failed: {stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("1 passed, 1 failed"), "{stdout}");

    let xml = std::fs::read_to_string(&junit).expect("the JUnit file is written on failure too");
    assert!(xml.contains(r#"tests="2" failures="1""#), "{xml}");
    let failed = xml.split("<testcase").find(|c| c.contains(r#"name="never-lost""#)).expect("never-lost listed");
    assert!(failed.contains("<failure message="), "{failed}");
    let passed = xml.split("<testcase").find(|c| c.contains(r#"name="binds""#)).expect("binds listed");
    assert!(!passed.contains("<failure"), "{passed}");

    // The failed scenario's work directory (logs) is kept; the passed one's is not.
    let kept: Vec<String> = std::fs::read_dir(&work)
        .expect("work dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert!(kept.iter().any(|n| n.ends_with("never-lost")), "{kept:?}");
    assert!(!kept.iter().any(|n| n.ends_with("binds")), "{kept:?}");
    assert!(std::fs::read_dir(&report).expect("report dir").count() > 0, "timelines are written");
}
