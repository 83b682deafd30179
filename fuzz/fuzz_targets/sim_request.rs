//! The simulator's request front: the URL path (`request::parse`), label and
//! field selectors, and resource quantities in bodies. Input lines: path,
//! label selector, field selector, quantity, then a JSON object the selectors
//! are matched against.
//!
//! Checked beyond "no panic": a parsed route never carries a path segment
//! that could leave its directory (`..`, `/`, empty), an accepted quantity
//! prints back to itself, and its value is the quantity's (no silent saturation).

#![no_main]

use harvester_simulator::api::quantity::{format_bytes, parse_bytes};
use harvester_simulator::api::request::{parse, Route};
use harvester_simulator::api::selector::{FieldSelector, LabelSelector};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn namespaced(_group: &str, _version: &str, plural: &str) -> bool {
    matches!(plural, "pods" | "persistentvolumeclaims" | "virtualmachines" | "status")
}

fn safe_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/')
}

/// The quantity's value by a second, simpler reading: digits with an optional
/// fraction, times a suffix, in floating point.
fn approximate(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+')).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let value: f64 = num.strip_prefix('+').unwrap_or(num).parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        other => 10f64.powi(other.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    Some(value * multiplier)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut lines = text.splitn(5, '\n');
    let path = lines.next().unwrap_or("");
    let labels = lines.next().unwrap_or("");
    let fields = lines.next().unwrap_or("");
    let quantity = lines.next().unwrap_or("");
    let object: Value = serde_json::from_str(lines.next().unwrap_or("")).unwrap_or(Value::Null);

    match parse(path, namespaced) {
        Ok(Route::Resource(r)) => {
            assert!(safe_segment(&r.resource), "{path:?} → resource {:?}", r.resource);
            for part in [&r.namespace, &r.name, &r.subresource].into_iter().flatten() {
                assert!(safe_segment(part), "{path:?} → segment {part:?}");
            }
        }
        Ok(Route::Group(g)) => assert!(safe_segment(&g), "{path:?} → group {g:?}"),
        Ok(Route::GroupVersion { group, version }) => {
            assert!(safe_segment(&version), "{path:?} → version {version:?}");
            assert!(group.is_empty() || safe_segment(&group), "{path:?} → group {group:?}");
        }
        Ok(_) => {}
        Err(e) => assert!((400..500).contains(&e.code), "{path:?} refused with {e}"),
    }

    let meta_labels = object.pointer("/metadata/labels").and_then(Value::as_object);
    if let Ok(selector) = LabelSelector::parse(labels) {
        let hit = selector.matches(meta_labels);
        assert!(!selector.is_empty() || hit, "the empty label selector must match everything");
    }
    if let Ok(selector) = FieldSelector::parse(fields) {
        let hit = selector.matches(&object);
        assert!(!selector.is_empty() || hit, "the empty field selector must match everything");
        for field in selector.fields() {
            let _ = selector.equality_value(field);
        }
    }

    if let Some(bytes) = parse_bytes(quantity) {
        assert_eq!(parse_bytes(&format_bytes(bytes)), Some(bytes), "{quantity:?} → {bytes} does not print back");
        if let Some(want) = approximate(quantity) {
            let got = bytes as f64;
            assert!(
                (got - want.ceil()).abs() <= want.abs() * 1e-9 + 1.0,
                "{quantity:?} is about {want} bytes, parsed as {bytes}"
            );
        }
    }
});
