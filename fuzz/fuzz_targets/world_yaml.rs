//! World files (simulator/src/world.rs): any text is either a world the
//! simulator can start from or an error naming the file; never a panic.
//!
//! A world that loads must be one the simulator can seed: every name it
//! carries becomes an object name (and a VM name a directory under the state
//! dir), so each must be a valid Kubernetes name, refused at load otherwise.

#![no_main]

use harvester_simulator::world::World;
use libfuzzer_sys::fuzz_target;

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match World::parse(text, "fuzz.yaml") {
        Ok(world) => {
            assert!(world.check().is_ok(), "a loaded world must pass its own check");
            for ns in &world.namespaces {
                assert!(is_dns_label(ns), "loaded a world with namespace {ns:?}");
            }
            for node in &world.host_nodes {
                assert!(is_dns_subdomain(&node.name), "loaded a world with host node {:?}", node.name);
            }
            for vm in &world.vms {
                assert!(is_dns_label(&vm.name), "loaded a world with VM {:?}", vm.name);
                assert!(is_dns_label(&vm.namespace), "loaded a world with VM namespace {:?}", vm.namespace);
            }
            for class in &world.storage_classes {
                assert!(is_dns_subdomain(&class.name), "loaded a world with storage class {:?}", class.name);
            }
            for cred in world.credentials() {
                assert!(is_dns_label(&cred.namespace), "loaded credentials in namespace {:?}", cred.namespace);
                assert!(
                    is_dns_subdomain(&cred.service_account),
                    "loaded credentials for service account {:?}",
                    cred.service_account
                );
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz.yaml"), "the error must name the file: {e}"),
    }
});
