//! `-chardev` option text and the legacy `-serial`/`-monitor` backend syntax.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_chardev::{parse_legacy_backend, parse_legacy_backend_for, ChardevSpec};

fuzz_target!(|text: &str| {
    let _ = ChardevSpec::parse(text);
    let _ = parse_legacy_backend(text);
    let _ = parse_legacy_backend_for("-monitor", text);
});
