//! Request bodies through the simulator's write path (simulator/src/api/ops.rs
//! and validate.rs), the way the HTTP layer hands them over: create, replace,
//! the three patch flavours, status writes and delete, on every resource type
//! the simulator serves. Input: up to eight operations separated by NUL bytes,
//! each `[operation][resource type]` followed by a JSON body.
//!
//! Checked beyond "no panic": every refusal is a 4xx (a 5xx would be the
//! server's own fault), and no stored object has a name that could leave a
//! directory (the simulator names backing files and device links after them).

#![no_main]

use std::sync::Arc;

use harvester_simulator::api::ops::{Api, DeleteOptions, PatchType, WriteOptions};
use harvester_simulator::api::resources::Registry;
use harvester_simulator::api::store::Store;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn check_name(obj: &Value) {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    assert!(
        !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0'),
        "stored an object named {name:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let api = Api::new(Arc::new(Store::new(64)), Registry::new(|_| true, true));
    let Some(namespaces) = api.resource("", "namespaces") else { panic!("namespaces are always served") };
    api.create(&namespaces, "", json!({"metadata": {"name": "default"}}), &WriteOptions::default())
        .expect("the default namespace");
    let types = api.registry.types().to_vec();
    for chunk in data.split(|b| *b == 0).take(8) {
        let [op, which, body @ ..] = chunk else { continue };
        let Ok(body) = serde_json::from_slice::<Value>(body) else { continue };
        let rt = &types[usize::from(*which) % types.len()];
        let name = body.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("obj-1").to_string();
        let opts = WriteOptions { dry_run: op & 0x80 != 0, ..Default::default() };
        let result = match op % 8 {
            0 => api.create(rt, "default", body, &opts),
            1 => api.replace(rt, "default", &name, "", body, &opts),
            2 => api.replace(rt, "default", &name, "status", body, &opts),
            3 => api.patch(rt, "default", &name, "", PatchType::Merge, &body, &opts),
            4 => api.patch(rt, "default", &name, "", PatchType::Json, &body, &opts),
            5 => api.patch(rt, "default", &name, "", PatchType::Strategic, &body, &opts),
            6 => api.patch(rt, "default", &name, "status", PatchType::Merge, &body, &opts),
            _ => api.delete(rt, "default", &name, &DeleteOptions { dry_run: op & 0x80 != 0, ..Default::default() }),
        };
        match result {
            Ok(obj) => check_name(&obj),
            Err(e) => assert!((400..500).contains(&e.code), "{} {}: refused with {e}", op % 8, rt.plural),
        }
    }
    for rt in &types {
        for obj in api.list(rt.group, rt.plural, None) {
            check_name(&obj);
        }
    }
});
