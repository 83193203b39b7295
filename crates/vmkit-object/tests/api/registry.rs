//! Type registration: successes and every registration error.

use vmkit_object::{Error, PropertyDef, Registry, TypeInfo};

use crate::fixture::fixture;

#[test]
fn builtin_types_exist() {
    let registry = Registry::new();
    assert!(registry.contains("object"));
    assert!(registry.contains("interface"));
    assert!(registry.contains("container"));
    assert!(registry.class("object").unwrap().is_abstract());
    assert!(registry.class("interface").unwrap().is_interface());
    assert_eq!(
        registry.class("container").unwrap().parent(),
        Some("object")
    );
}

#[test]
fn unknown_parent_is_an_error() {
    let registry = Registry::new();
    let err = registry
        .register(TypeInfo::new("isa-serial").parent("isa-device"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownParent { type_name, parent } if type_name == "isa-serial" && parent == "isa-device"),
        "{err}"
    );
    assert!(err.to_string().contains("'isa-device' is not registered"));
    assert!(!registry.contains("isa-serial"));
}

#[test]
fn duplicate_name_is_an_error() {
    let registry = Registry::new();
    registry.register(TypeInfo::new("i8254")).unwrap();
    let err = registry.register(TypeInfo::new("i8254")).unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateType(n) if n == "i8254"),
        "{err}"
    );
    // Also a builtin, and also within one batch.
    assert!(matches!(
        registry.register(TypeInfo::new("object")),
        Err(Error::DuplicateType(_))
    ));
    let err = registry
        .register_all([TypeInfo::new("a"), TypeInfo::new("a")])
        .unwrap_err();
    assert!(matches!(err, Error::DuplicateType(n) if n == "a"));
}

#[test]
fn cycles_are_errors() {
    let registry = Registry::new();
    let err = registry
        .register(TypeInfo::new("loop").parent("loop"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::TypeCycle(c) if c == &["loop", "loop"]),
        "{err}"
    );

    let err = registry
        .register_all([
            TypeInfo::new("a").parent("b"),
            TypeInfo::new("b").parent("c"),
            TypeInfo::new("c").parent("a"),
        ])
        .unwrap_err();
    let Error::TypeCycle(cycle) = &err else {
        panic!("{err}")
    };
    assert_eq!(cycle.len(), 4);
    assert_eq!(cycle.first(), cycle.last());
    assert!(
        err.to_string().starts_with("type hierarchy cycle: "),
        "{err}"
    );
    for name in ["a", "b", "c"] {
        assert!(
            !registry.contains(name),
            "nothing of a failed batch is registered"
        );
    }

    // A child-type edge closes a cycle as well.
    let err = registry
        .register_all([
            TypeInfo::new("x").child("y0", "y"),
            TypeInfo::new("y").child("x0", "x"),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::TypeCycle(_)), "{err}");
}

#[test]
fn batches_register_in_any_order_and_atomically() {
    let registry = Registry::new();
    registry
        .register_all([
            TypeInfo::new("leaf").parent("mid"),
            TypeInfo::new("mid").parent("base"),
            TypeInfo::new("base").abstract_type(),
        ])
        .unwrap();
    assert_eq!(
        registry.class("leaf").unwrap().ancestors(),
        ["object", "base", "mid", "leaf"]
    );

    // The last type is broken: none of the batch may stay registered.
    let err = registry
        .register_all([
            TypeInfo::new("ok1").parent("leaf"),
            TypeInfo::new("bad").property(PropertyDef::uint("x", 0..=1).default(7)),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTypeInfo { .. }), "{err}");
    assert!(!registry.contains("ok1"));
}

#[test]
fn interface_errors() {
    let f = fixture();
    let err = f
        .registry
        .register(TypeInfo::new("bad").implements("isa-serial"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotAnInterface { interface, .. } if interface == "isa-serial"),
        "{err}"
    );
    let err = f
        .registry
        .register(TypeInfo::new("bad").implements("no-such-if"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownDependency { what: "interface", name, .. } if name == "no-such-if"),
        "{err}"
    );
    let err = f
        .registry
        .register(TypeInfo::new("bad").parent("acpi-dev"))
        .unwrap_err();
    assert!(err.to_string().contains("implements()"), "{err}");
    let err = f
        .registry
        .register(TypeInfo::new_interface("bad-if").parent("device"))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTypeInfo { .. }), "{err}");
    let err = f
        .registry
        .register(TypeInfo::new_interface("bad-if").property(PropertyDef::bool("x")))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidTypeInfo { .. }), "{err}");
}

#[test]
#[allow(clippy::reversed_empty_ranges)] // an empty range is one of the errors under test
fn property_definition_errors() {
    let f = fixture();
    // Redefining an inherited property.
    let err = f
        .registry
        .register(
            TypeInfo::new("bad")
                .parent("isa-serial")
                .property(PropertyDef::uint("iobase", 0..=0xffff)),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateProperty { type_name, property } if type_name == "bad" && property == "iobase"),
        "{err}"
    );
    let cases = [
        TypeInfo::new("bad").property(PropertyDef::uint("irq", 0..=15).default(16)),
        TypeInfo::new("bad").property(PropertyDef::int("x", 5..=1)),
        TypeInfo::new("bad").property(PropertyDef::enumeration::<&str>("x", &[])),
        TypeInfo::new("bad").property(PropertyDef::enumeration("x", &["a", "a"])),
        TypeInfo::new("bad").property(PropertyDef::string("type")),
        TypeInfo::new("bad").property(PropertyDef::link("l", "device").default("x")),
        TypeInfo::new("bad").child("c", "isa-device"),
        TypeInfo::new("bad")
            .parent("isa-serial")
            .default_value("nope", 1),
        TypeInfo::new("bad")
            .parent("isa-serial")
            .default_value("irq", 99),
        TypeInfo::new("bad").property(PropertyDef::bool("b").default("yes")),
    ];
    for info in cases {
        let desc = format!("{info:?}");
        let err = f.registry.register(info).unwrap_err();
        assert!(
            matches!(err, Error::InvalidTypeInfo { .. }),
            "{desc}: {err}"
        );
    }
    let err = f
        .registry
        .register(TypeInfo::new("bad").property(PropertyDef::bool("a/b")))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidName { .. }), "{err}");
    let err = f
        .registry
        .register(TypeInfo::new("bad").child("c", "nope"))
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownDependency { what: "child", .. }),
        "{err}"
    );
}

#[test]
fn invalid_type_names() {
    let registry = Registry::new();
    for name in ["", "a/b", "a,b", "a=b", "a b"] {
        let err = registry.register(TypeInfo::new(name)).unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }), "{name:?}: {err}");
    }
}

#[test]
fn creation_errors() {
    let f = fixture();
    let err = f.registry.new_object("isa-device").unwrap_err();
    assert!(
        matches!(&err, Error::AbstractType(n) if n == "isa-device"),
        "{err}"
    );
    assert!(matches!(
        f.registry.new_object("acpi-dev"),
        Err(Error::AbstractType(_))
    ));
    assert!(matches!(
        f.registry.new_object("object"),
        Err(Error::AbstractType(_))
    ));
    let err = f.registry.new_object("nope").unwrap_err();
    assert_eq!(err.to_string(), "type 'nope' is not registered");
}

#[test]
fn failing_instance_init_aborts_creation() {
    let registry = Registry::new();
    registry
        .register(TypeInfo::new("fussy").instance_init(|_| Err(Error::failed("no backend"))))
        .unwrap();
    let err = registry.new_object("fussy").unwrap_err();
    assert_eq!(err.to_string(), "no backend");
}

#[test]
fn list_types_filters_by_type_and_interface() {
    let f = fixture();
    let names =
        |list: Vec<vmkit_object::TypeSummary>| list.into_iter().map(|t| t.name).collect::<Vec<_>>();
    assert_eq!(
        names(f.registry.list_types(Some("isa-device"), false)),
        ["isa-debug-exit", "isa-serial", "isa-serial-fast"]
    );
    assert_eq!(
        names(f.registry.list_types(Some("isa-device"), true)),
        [
            "isa-debug-exit",
            "isa-device",
            "isa-serial",
            "isa-serial-fast"
        ]
    );
    assert_eq!(
        names(f.registry.list_types(Some("acpi-dev"), false)),
        ["isa-serial", "isa-serial-fast"]
    );
    assert!(f.registry.list_types(Some("no-such"), true).is_empty());
    let all = f.registry.list_types(None, true);
    assert!(all.windows(2).all(|w| w[0].name < w[1].name));
    let serial = all.iter().find(|t| t.name == "isa-serial").unwrap();
    assert_eq!(
        serial.to_json(),
        vmkit_object::json!({"name": "isa-serial", "parent": "isa-device"})
    );
    let dev = all.iter().find(|t| t.name == "device").unwrap();
    assert_eq!(dev.to_json()["abstract"], true);
}

#[test]
fn type_properties_lists_inherited_first_with_types_and_descriptions() {
    let f = fixture();
    let props = f.registry.type_properties("isa-serial-fast").unwrap();
    let names: Vec<&str> = props.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["irq", "iobase", "chardev", "mode", "wakeup", "skew", "baud", "rx-bytes"]
    );
    let irq = &props[0];
    assert_eq!(irq.type_name, "uint8");
    assert_eq!(irq.description.as_deref(), Some("ISA interrupt line"));
    assert_eq!(
        irq.default,
        Some(4.into()),
        "default overridden by isa-serial"
    );
    assert_eq!(props[1].type_name, "uint16");
    assert_eq!(
        props[1].default,
        Some(0x2f8.into()),
        "default overridden by isa-serial-fast"
    );
    assert_eq!(props[3].enum_values, ["rs232", "loopback"]);
    assert_eq!(props[5].type_name, "int8");
    assert!(props[6].runtime_settable && !props[6].read_only);
    assert!(props[7].read_only);
    assert_eq!(
        props[1].to_json(),
        vmkit_object::json!({"name": "iobase", "type": "uint16", "description": "I/O base port", "default-value": 0x2f8})
    );
    assert!(matches!(
        f.registry.type_properties("nope"),
        Err(Error::UnknownType(_))
    ));
}
