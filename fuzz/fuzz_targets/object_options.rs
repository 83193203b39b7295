//! vmkit-object's option text: `-device`/`-object` item splitting, ids and integers.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_object::{check_id, parse_integer, split_items, ObjectOptions};

fuzz_target!(|text: &str| {
    if let Ok(options) = ObjectOptions::parse(text) {
        for (_, value) in &options.properties {
            let _ = parse_integer(value);
        }
    }
    let _ = split_items(text);
    let _ = check_id(text);
    let _ = parse_integer(text);
});
