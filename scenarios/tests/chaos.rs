//! `scenarios chaos` as a user runs it: `--print` gives a scenario file the suite
//! accepts, and (root) seeds run end to end on the embedded backend.

use std::process::{Command, Output};

const SCENARIOS: &str = env!("CARGO_BIN_EXE_scenarios");

fn scenarios(args: &[&str]) -> Output {
    Command::new(SCENARIOS).args(args).env("CI", "true").output().expect("running scenarios")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_printed_seed_is_a_valid_scenario_file_and_prints_the_same_twice() {
    let first = scenarios(&["chaos", "--print", "42"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let again = scenarios(&["chaos", "--print", "42"]);
    assert_eq!(first.stdout, again.stdout, "a seed names one scenario");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("chaos-seed-42.yaml");
    std::fs::write(&file, &first.stdout).expect("write");
    let out = scenarios(&["validate", &file.display().to_string()]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), text(&first.stdout));
    assert!(text(&first.stdout).contains("name: chaos-seed-42"), "{}", text(&first.stdout));
}

#[test]
#[ignore = "needs root: the embedded backend uses loop devices and mounts (and the workspace's harvester-sim and harvester-csi-driver next to this binary)"]
fn two_seeds_run_end_to_end_and_leave_nothing_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let work = dir.path().join("work");
    let out = scenarios(&[
        "chaos",
        "--seeds",
        "2",
        "--first-seed",
        "1",
        "--work-dir",
        &work.display().to_string(),
        "--write",
        &dir.path().join("failed").display().to_string(),
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for seed in [1, 2] {
        assert!(stdout.contains(&format!("seed {seed} pass")), "{stdout}");
    }
    assert!(stdout.contains("2 seed(s): 2 passed, 0 failed"), "{stdout}");
    // Passed seeds keep no work directory, and no failing scenario was written.
    assert_eq!(std::fs::read_dir(&work).expect("work dir").count(), 0, "{stdout}");
    assert!(!dir.path().join("failed").exists());
}
