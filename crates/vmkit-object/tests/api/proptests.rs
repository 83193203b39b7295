//! Property-based tests: option text round trips and numeric checking.

use proptest::prelude::*;
use vmkit_object::{json, Error, ObjectOptions, PropertyDef, Registry, TypeInfo};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

fn ranged_registry(min: u64, max: u64, imin: i64, imax: i64) -> Registry {
    let registry = Registry::new();
    registry
        .register(
            TypeInfo::new("ranged")
                .property(PropertyDef::uint("u", min..=max))
                .property(PropertyDef::int("i", imin..=imax)),
        )
        .unwrap();
    registry
}

proptest! {
    #![proptest_config(config())]

    /// Rendering options and parsing them back gives the same options, commas included.
    #[test]
    fn options_round_trip(
        type_name in "[a-z][a-z0-9-]{0,12}",
        id in proptest::option::of("[A-Za-z][A-Za-z0-9._-]{0,8}"),
        props in proptest::collection::btree_map("[a-z][a-z0-9-]{0,8}", "[ -~]{0,12}", 0..5),
    ) {
        let props: Vec<(String, String)> = props
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "id" | "driver" | "qom-type"))
            .collect();
        let opts = ObjectOptions { type_name, id, properties: props };
        let parsed = ObjectOptions::parse(&opts.to_string()).unwrap();
        prop_assert_eq!(parsed, opts);
    }

    /// Arbitrary text never panics the parser.
    #[test]
    fn option_parser_total(text in "[ -~]{0,40}") {
        let _ = ObjectOptions::parse(&text);
    }

    /// Unsigned values: accepted exactly inside the range, by JSON and by text (dec / hex).
    #[test]
    fn uint_range_is_exact(a in any::<u64>(), b in any::<u64>(), v in any::<u64>(), hex in any::<bool>()) {
        let (min, max) = (a.min(b), a.max(b));
        let registry = ranged_registry(min, max, 0, 0);
        let o = registry.new_object("ranged").unwrap();
        let inside = (min..=max).contains(&v);
        match o.set_property("u", json!(v)) {
            Ok(()) => prop_assert!(inside),
            Err(Error::OutOfRange { .. }) => prop_assert!(!inside),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
        let text = if hex { format!("{v:#x}") } else { v.to_string() };
        prop_assert_eq!(o.set_property_text("u", &text).is_ok(), inside);
        if inside {
            prop_assert_eq!(o.get_u64("u").unwrap(), v);
        }
    }

    /// Signed values, including negative text.
    #[test]
    fn int_range_is_exact(a in any::<i64>(), b in any::<i64>(), v in any::<i64>()) {
        let (min, max) = (a.min(b), a.max(b));
        let registry = ranged_registry(0, 0, min, max);
        let o = registry.new_object("ranged").unwrap();
        let inside = (min..=max).contains(&v);
        prop_assert_eq!(o.set_property("i", json!(v)).is_ok(), inside);
        prop_assert_eq!(o.set_property_text("i", &v.to_string()).is_ok(), inside);
        if inside {
            prop_assert_eq!(o.get_i64("i").unwrap(), v);
        }
    }
}
