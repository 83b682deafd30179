//! The simulator's three patch flavours (simulator/src/api/patch.rs): the
//! first byte picks the flavour and, for strategic merge, the kind whose list
//! strategies apply; the rest is the target object and the patch, two JSON
//! documents separated by a NUL byte.
//!
//! Checked beyond "no panic": a refused patch leaves the target untouched (the
//! store must never see half a patch), and a merge patch applied twice changes
//! nothing the second time (RFC 7386 patches are idempotent).

#![no_main]

use harvester_simulator::api::patch::{json_patch, merge_patch, strategic_merge_patch};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KINDS: [&str; 8] =
    ["Pod", "Deployment", "CronJob", "Node", "Service", "PersistentVolumeClaim", "VirtualMachine", "Setting"];

fuzz_target!(|data: &[u8]| {
    let [selector, rest @ ..] = data else { return };
    let mut parts = rest.splitn(2, |b| *b == 0);
    let (Some(target), Some(patch)) = (parts.next(), parts.next()) else { return };
    let (Ok(target), Ok(patch)) = (serde_json::from_slice::<Value>(target), serde_json::from_slice::<Value>(patch))
    else {
        return;
    };
    let mut patched = target.clone();
    match selector % 3 {
        0 => {
            merge_patch(&mut patched, &patch);
            let once = patched.clone();
            merge_patch(&mut patched, &patch);
            assert_eq!(patched, once, "a merge patch applied twice must change nothing more");
        }
        1 => {
            if json_patch(&mut patched, &patch).is_err() {
                assert_eq!(patched, target, "a refused JSON patch changed the target");
            }
        }
        _ => {
            let kind = KINDS[usize::from(selector / 3) % KINDS.len()];
            if strategic_merge_patch(&mut patched, &patch, kind).is_err() {
                assert_eq!(patched, target, "a refused strategic merge patch changed the target");
            }
        }
    }
});
