//! Results: a summary table, JUnit XML for CI, and a per-scenario timeline.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::env::Phase;

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub label: String,
    pub ok: bool,
    pub millis: u128,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub file: String,
    pub passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub seconds: f64,
    pub steps: Vec<StepResult>,
    pub timeline: Vec<Phase>,
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn junit(results: &[ScenarioResult], total: Duration) -> String {
    let failures = results.iter().filter(|r| !r.passed).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n  <testsuite name=\"scenarios\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">\n",
        results.len(),
        total.as_secs_f64(),
        results.len(),
        total.as_secs_f64()
    );
    for r in results {
        out.push_str(&format!(
            "    <testcase classname=\"scenarios\" name=\"{}\" file=\"{}\" time=\"{:.3}\">",
            xml(&r.name),
            xml(&r.file),
            r.seconds
        ));
        if let Some(e) = &r.error {
            out.push_str(&format!("\n      <failure message=\"{}\"/>\n    ", xml(e)));
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

pub fn summary(results: &[ScenarioResult]) -> String {
    let width = results.iter().map(|r| r.name.len()).max().unwrap_or(8).max(8);
    let mut out = format!("\n{:<width$}  {:<6}  {:>8}\n", "scenario", "result", "time");
    for r in results {
        out.push_str(&format!(
            "{:<width$}  {:<6}  {:>7.1}s\n",
            r.name,
            if r.passed { "pass" } else { "FAIL" },
            r.seconds
        ));
        if let Some(e) = &r.error {
            // Lines after the first (a diagnosis, a log tail) stay under the first.
            let indent = format!("\n{:width$}    ", "");
            out.push_str(&format!("{:width$}  └ {}\n", "", e.trim_end().replace('\n', &indent)));
        }
    }
    let passed = results.iter().filter(|r| r.passed).count();
    out.push_str(&format!("\n{} passed, {} failed\n", passed, results.len() - passed));
    out
}

/// Per-scenario timeline: which phase (provision, attach, stage, publish…) cost what.
pub fn timeline(r: &ScenarioResult) -> String {
    let mut out = format!(
        "# {} ({})\n\n| start ms | phase | subject | ms | ok |\n|---:|---|---|---:|---|\n",
        r.name,
        if r.passed { "pass" } else { "FAIL" }
    );
    for p in &r.timeline {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            p.start_ms,
            p.name,
            p.subject,
            p.duration_ms,
            if p.ok { "yes" } else { "no" }
        ));
    }
    out.push_str("\n| step | ms | ok |\n|---|---:|---|\n");
    for s in &r.steps {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            s.label,
            s.millis,
            if s.ok { "yes" } else { s.error.as_deref().unwrap_or("no") }
        ));
    }
    out
}

pub fn write_report(dir: &Path, results: &[ScenarioResult]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for r in results {
        let safe: String =
            r.name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        std::fs::write(dir.join(format!("{safe}.md")), timeline(r))?;
        std::fs::write(dir.join(format!("{safe}.json")), serde_json::to_vec_pretty(r).unwrap_or_default())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_of_several_lines_stays_under_its_scenario() {
        let result = |name: &str, error: Option<&str>| ScenarioResult {
            name: name.into(),
            file: format!("{name}.yaml"),
            passed: error.is_none(),
            error: error.map(String::from),
            seconds: 1.5,
            steps: Vec::new(),
            timeline: Vec::new(),
        };
        let text = summary(&[
            result("first", None),
            result("second", Some("not ready within 120s\nnode plugin on guest-1: pod p Pending\n")),
        ]);
        let want = "\n\
            scenario  result      time\n\
            first     pass        1.5s\n\
            second    FAIL        1.5s\n\
            \x20         └ not ready within 120s\n\
            \x20           node plugin on guest-1: pod p Pending\n\
            \n1 passed, 1 failed\n";
        assert_eq!(text, want);
    }
}
