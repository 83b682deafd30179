//! Harvester settings (cluster-scoped, `value` overriding `default`), and the ones the
//! driver reads: `csi-driver-config` (snapshot class per provisioner).

use serde::Deserialize;
use serde_json::Value;

use super::setting_resource;
use super::shape::typed;
use super::Host;
use crate::error::{Error, Result};

/// A Harvester Setting (harvesterhci.io/v1beta1): a string value over a string default.
#[derive(Debug, Clone, Default, Deserialize)]
struct Setting {
    value: Option<String>,
    default: Option<String>,
}

impl Setting {
    /// The value when set (non-empty), else the default ("" when neither).
    fn effective(&self) -> &str {
        match self.value.as_deref().unwrap_or("") {
            "" => self.default.as_deref().unwrap_or(""),
            value => value,
        }
    }
}

/// The host VolumeSnapshotClass for a provisioner in a `csi-driver-config` value: a JSON
/// object keyed by provisioner, `{"driver.longhorn.io": {"volumeSnapshotClassName": …}}`.
/// The setting is free text an admin edits: an entry of another shape means no class.
fn snapshot_class_in(config: &str, provisioner: &str) -> Result<Option<String>> {
    let parsed: Value = serde_json::from_str(config)
        .map_err(|e| Error::Internal(format!("Harvester setting csi-driver-config is not JSON: {e}")))?;
    Ok(parsed
        .get(provisioner)
        .and_then(|entry| entry.get("volumeSnapshotClassName"))
        .and_then(Value::as_str)
        .map(String::from))
}

impl Host {
    /// The effective value of a setting, `None` if it does not exist.
    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let api = self.dynamic(&setting_resource(), None);
        let Some(obj) = self.call_opt("get setting", api.get(name)).await? else { return Ok(None) };
        Ok(Some(typed::<Setting>(&obj, "Setting")?.effective().to_string()))
    }

    /// The host VolumeSnapshotClass for `provisioner`, from Harvester's `csi-driver-config`
    /// (`None`: no setting, or no class configured for that provisioner).
    pub async fn snapshot_class_for(&self, provisioner: &str) -> Result<Option<String>> {
        match self.setting("csi-driver-config").await? {
            Some(config) => snapshot_class_in(&config, provisioner),
            None => Ok(None),
        }
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
    use serde_json::json;

    #[rstest]
    #[case::value_wins(json!({"value": "v", "default": "d"}), "v")]
    #[case::empty_value_means_default(json!({"value": "", "default": "d"}), "d")]
    #[case::no_value(json!({"default": "d"}), "d")]
    #[case::neither(json!({}), "")]
    #[case::nulls(json!({"value": null, "default": null}), "")]
    fn setting_value(#[case] v: serde_json::Value, #[case] want: &str) {
        let s: Setting = serde_json::from_value(v).expect("Setting fixture parses");
        assert_eq!(s.effective(), want);
    }

    const CONFIG: &str = r#"{"driver.longhorn.io": {"volumeSnapshotClassName": "longhorn-snapshot", "backupVolumeSnapshotClassName": "longhorn"},
        "lvm.driver.harvesterhci.io": {"volumeSnapshotClassName": "lvm-snapshot"},
        "odd.example.com": "not an object", "empty.example.com": {}, "number.example.com": {"volumeSnapshotClassName": 7}}"#;

    #[rstest]
    #[case::longhorn(CONFIG, "driver.longhorn.io", Some("longhorn-snapshot"))]
    #[case::lvm(CONFIG, "lvm.driver.harvesterhci.io", Some("lvm-snapshot"))]
    #[case::unknown_provisioner(CONFIG, "other.example.com", None)]
    #[case::entry_not_an_object(CONFIG, "odd.example.com", None)]
    #[case::entry_without_class(CONFIG, "empty.example.com", None)]
    #[case::class_not_a_string(CONFIG, "number.example.com", None)]
    #[case::not_an_object(r#"["driver.longhorn.io"]"#, "driver.longhorn.io", None)]
    #[case::empty_object("{}", "driver.longhorn.io", None)]
    fn snapshot_classes(#[case] config: &str, #[case] provisioner: &str, #[case] want: Option<&str>) {
        assert_eq!(snapshot_class_in(config, provisioner).expect("valid JSON").as_deref(), want);
    }

    #[rstest]
    #[case::empty("")]
    #[case::truncated(r#"{"driver.longhorn.io": {"#)]
    fn snapshot_class_config_must_be_json(#[case] config: &str) {
        let err = snapshot_class_in(config, "driver.longhorn.io").expect_err("not JSON");
        assert!(err.to_string().contains("csi-driver-config is not JSON"), "{err}");
    }

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
