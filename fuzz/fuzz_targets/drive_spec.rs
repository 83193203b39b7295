//! `-drive` option text (vmkit-block's DriveSpec).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_block::{valid_id, DriveSpec};

fuzz_target!(|text: &str| {
    if let Ok(spec) = DriveSpec::parse(text) {
        let _ = spec.raw_options();
    }
    let _ = valid_id(text);
});
