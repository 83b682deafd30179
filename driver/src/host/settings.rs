//! Harvester settings (cluster-scoped, `value` overriding `default`).

use serde_json::Value;

use super::{setting_resource, str_at, Host};
use crate::error::Result;

impl Host {
    /// The effective value of a setting, `None` if it does not exist.
    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let api = self.dynamic(&setting_resource(), None);
        let Some(obj) = self.call_opt("get setting", api.get(name)).await? else { return Ok(None) };
        let data = Value::Object(obj.data.as_object().cloned().unwrap_or_default());
        let value = str_at(&data, "/value");
        Ok(Some(if value.is_empty() { str_at(&data, "/default").to_string() } else { value.to_string() }))
    }
}

/// Whether a Harvester version string selects declarative hotplug (≥ v1.8).
/// Non-semver values (`dev`, `master-…`) mean a development build: newest behaviour.
pub fn is_at_least(version: &str, major: u64, minor: u64) -> bool {
    let v = version.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    let nums: Option<Vec<u64>> = parts.iter().map(|p| p.parse().ok()).collect();
    match nums.as_deref() {
        Some([ma, mi, _]) | Some([ma, mi]) => (*ma, *mi) >= (major, minor),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("v1.8.0", true)]
    #[case("v1.8.2", true)]
    #[case("v1.8.0-rc1", true)]
    #[case("v1.7.3", false)]
    #[case("v1.10.0", true)]
    #[case("dev", true)]
    #[case("master-abc-head", true)]
    #[case("v2.0.0", true)]
    fn version_gate(#[case] v: &str, #[case] declarative: bool) {
        assert_eq!(is_at_least(v, 1, 8), declarative);
    }
}
