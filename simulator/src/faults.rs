//! Fault injection: error rates and latency per verb/resource, and stuck hotplug
//! phases. Set from the world file and changed at run time through the admin API.

use std::sync::RwLock;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::api::http::RequestFaults;

fn star() -> String {
    "*".into()
}

fn default_code() -> u16 {
    500
}

fn one() -> f64 {
    1.0
}

/// Fail a share of matching requests with the given HTTP status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ErrorFault {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, or `*`.
    #[serde(default = "star")]
    pub verb: String,
    /// Plural resource, optionally `resource.group` or `resource/subresource`; `*` for all.
    #[serde(default = "star")]
    pub resource: String,
    /// Probability in [0, 1].
    #[serde(default = "one")]
    pub rate: f64,
    #[serde(default = "default_code")]
    pub code: u16,
    /// Stop after this many injected failures (unlimited when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Delay matching requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LatencyFault {
    #[serde(default = "star")]
    pub verb: String,
    #[serde(default = "star")]
    pub resource: String,
    pub millis: u64,
}

/// Keep a hot-plugged volume in one phase (`Pending`, `Bound`, `AttachedToNode`, `MountedToPod`, `Detaching`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StuckHotplug {
    /// Volume name, or `*`.
    #[serde(default = "star")]
    pub volume: String,
    pub phase: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FaultSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ErrorFault>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<LatencyFault>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stuck_hotplug: Vec<StuckHotplug>,
}

pub const HOTPLUG_PHASES: &[&str] = &["Pending", "Bound", "AttachedToNode", "MountedToPod", "Detaching"];

impl FaultSpec {
    /// Rejects what cannot mean anything, so a typo is not a silent no-op.
    pub fn validate(&self) -> Result<(), String> {
        for e in &self.errors {
            if !(0.0..=1.0).contains(&e.rate) {
                return Err(format!("errors: rate {} is outside [0, 1]", e.rate));
            }
            if !(400..=599).contains(&e.code) {
                return Err(format!("errors: code {} is not an HTTP error status", e.code));
            }
        }
        for s in &self.stuck_hotplug {
            if !HOTPLUG_PHASES.contains(&s.phase.as_str()) {
                return Err(format!("stuckHotplug: phase {:?} is not one of {}", s.phase, HOTPLUG_PHASES.join(", ")));
            }
        }
        Ok(())
    }
}

fn matches(pattern_verb: &str, pattern_resource: &str, verb: &str, group: &str, resource: &str) -> bool {
    let verb_ok = pattern_verb == "*" || pattern_verb.eq_ignore_ascii_case(verb);
    let resource_ok = pattern_resource == "*"
        || pattern_resource == resource
        || (!group.is_empty() && pattern_resource == format!("{resource}.{group}"))
        || resource.split('/').next() == Some(pattern_resource);
    verb_ok && resource_ok
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        406 => "NotAcceptable",
        409 => "Conflict",
        410 => "Expired",
        413 => "RequestEntityTooLarge",
        415 => "UnsupportedMediaType",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

#[derive(Debug, Default)]
pub struct Faults {
    spec: RwLock<FaultSpec>,
}

impl Faults {
    pub fn new(spec: FaultSpec) -> Self {
        Self { spec: RwLock::new(spec) }
    }

    pub fn get(&self) -> FaultSpec {
        self.spec.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, spec: FaultSpec) {
        *self.spec.write().unwrap_or_else(|p| p.into_inner()) = spec;
    }

    pub fn stuck_phase(&self, volume: &str) -> Option<String> {
        let spec = self.spec.read().unwrap_or_else(|p| p.into_inner());
        spec.stuck_hotplug.iter().find(|s| s.volume == "*" || s.volume == volume).map(|s| s.phase.clone())
    }
}

/// What the API server consults on every resource request.
impl RequestFaults for Faults {
    fn latency_for(&self, verb: &str, group: &str, resource: &str) -> Duration {
        let spec = self.spec.read().unwrap_or_else(|p| p.into_inner());
        let ms: u64 = spec
            .latency
            .iter()
            .filter(|l| matches(&l.verb, &l.resource, verb, group, resource))
            .map(|l| l.millis)
            .sum();
        Duration::from_millis(ms)
    }

    /// An injected failure for this request, if the dice say so.
    fn error_for(&self, verb: &str, group: &str, resource: &str) -> Option<ApiError> {
        let mut spec = self.spec.write().unwrap_or_else(|p| p.into_inner());
        let mut rng = rand::rng();
        for e in spec.errors.iter_mut() {
            if !matches(&e.verb, &e.resource, verb, group, resource) || e.count == Some(0) {
                continue;
            }
            if rng.random::<f64>() < e.rate {
                if let Some(c) = e.count.as_mut() {
                    *c -= 1;
                }
                let message = e.message.clone().unwrap_or_else(|| format!("injected fault: {verb} {resource}"));
                return Some(ApiError::new(e.code, reason_for(e.code), message));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_errors_run_out() {
        let f = Faults::new(FaultSpec {
            errors: vec![ErrorFault {
                verb: "get".into(),
                resource: "persistentvolumeclaims".into(),
                rate: 1.0,
                code: 503,
                count: Some(2),
                message: None,
            }],
            ..Default::default()
        });
        assert_eq!(f.error_for("get", "", "persistentvolumeclaims").map(|e| e.reason), Some("ServiceUnavailable"));
        assert!(f.error_for("list", "", "persistentvolumeclaims").is_none());
        assert!(f.error_for("get", "", "persistentvolumeclaims").is_some());
        assert!(f.error_for("get", "", "persistentvolumeclaims").is_none());
    }

    #[test]
    fn group_qualified_and_subresource_patterns_match() {
        assert!(matches("*", "volumes.longhorn.io", "get", "longhorn.io", "volumes"));
        assert!(!matches("*", "volumes.longhorn.io", "get", "", "pods"));
        assert!(matches(
            "update",
            "virtualmachines",
            "update",
            "subresources.kubevirt.io",
            "virtualmachines/addvolume"
        ));
    }

    #[test]
    fn injected_errors_carry_the_reason_the_server_itself_uses() {
        for (code, reason) in [
            (405, "MethodNotAllowed"),
            (406, "NotAcceptable"),
            (413, "RequestEntityTooLarge"),
            (415, "UnsupportedMediaType"),
        ] {
            assert_eq!(reason_for(code), reason, "{code}");
        }
    }

    #[test]
    fn bad_specs_are_refused() {
        let spec = FaultSpec {
            stuck_hotplug: vec![StuckHotplug { volume: "*".into(), phase: "Nope".into() }],
            ..Default::default()
        };
        assert!(spec.validate().unwrap_err().contains("AttachedToNode"));
    }
}
