//! Scenario files (scenarios/src/model.rs `load`): any text is either a
//! scenario the runner can play or an error naming the file; never a panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match scenarios::model::load(text, "fuzz.yaml") {
        Ok(scenario) => {
            for step in &scenario.steps {
                let _ = step.label();
            }
            let _ = scenario.world.simulator_world();
        }
        Err(e) => assert!(e.contains("fuzz.yaml"), "the error must name the file: {e}"),
    }
});
