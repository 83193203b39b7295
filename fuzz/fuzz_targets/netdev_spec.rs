//! `-netdev` / `-nic` option text and MAC addresses (vmkit-net).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_net::{format_mac, parse_mac, NetdevSpec, NicSpec};

fuzz_target!(|text: &str| {
    let _ = NetdevSpec::parse(text);
    let _ = NicSpec::parse(text, 3);
    if let Ok(mac) = parse_mac(text) {
        assert_eq!(parse_mac(&format_mac(&mac)).ok(), Some(mac));
    }
});
