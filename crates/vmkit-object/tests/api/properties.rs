//! Property get / set by name and every property error.

use vmkit_object::{json, Error, PropertyDef, Registry, TypeInfo, Value};

use crate::fixture::{fixture, SerialState};

#[test]
fn get_and_set_each_kind() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    assert_eq!(s.get_property("type").unwrap(), "isa-serial");
    assert_eq!(s.get_property("iobase").unwrap(), 0x3f8);
    assert_eq!(
        s.get_property("chardev").unwrap(),
        Value::Null,
        "no default: unset"
    );

    s.set_property("iobase", json!(0x2f8)).unwrap();
    s.set_property("chardev", json!("serial0")).unwrap();
    s.set_property("mode", json!("loopback")).unwrap();
    s.set_property("wakeup", json!(true)).unwrap();
    s.set_property("skew", json!(-100)).unwrap();
    assert_eq!(s.get_u64("iobase").unwrap(), 0x2f8);
    assert_eq!(s.get_string("chardev").unwrap(), "serial0");
    assert_eq!(s.get_string("mode").unwrap(), "loopback");
    assert!(s.get_bool("wakeup").unwrap());
    assert_eq!(s.get_i64("skew").unwrap(), -100);
    assert!(s.property_is_set("chardev").unwrap());
}

#[test]
fn unknown_property() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    let err = s.set_property("iobas", json!(1)).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownProperty { object_type, property } if object_type == "isa-serial" && property == "iobas"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "object of type 'isa-serial' has no property 'iobas'"
    );
    assert!(matches!(
        s.get_property("nope"),
        Err(Error::UnknownProperty { .. })
    ));
    assert!(matches!(
        s.set_property_text("nope", "1"),
        Err(Error::UnknownProperty { .. })
    ));
    assert!(matches!(
        s.update_property("nope", json!(1)),
        Err(Error::UnknownProperty { .. })
    ));
}

#[test]
fn wrong_type() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    let cases = [
        ("iobase", json!("0x2f8")),
        ("iobase", json!(1.5)),
        ("iobase", json!(null)),
        ("skew", json!(0.5)),
        ("wakeup", json!(1)),
        ("wakeup", json!("on")),
        ("chardev", json!(3)),
        ("mode", json!(["rs232"])),
    ];
    for (name, value) in cases {
        let err = s.set_property(name, value.clone()).unwrap_err();
        assert!(
            matches!(&err, Error::WrongType { property, .. } if property == name),
            "{name} = {value}: {err}"
        );
    }
    let err = s.set_property("iobase", json!("x")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "property 'iobase' of 'isa-serial' expects an unsigned integer in 0..=65535, got string \"x\""
    );
    // Values are unchanged by failed sets.
    assert_eq!(s.get_u64("iobase").unwrap(), 0x3f8);
    // Typed getters check the type too.
    assert!(matches!(s.get_bool("iobase"), Err(Error::WrongType { .. })));
    assert!(matches!(s.get_u64("mode"), Err(Error::WrongType { .. })));
    assert!(
        matches!(s.get_u64("skew").map(|_| ()), Ok(())),
        "0 is a valid u64 too"
    );
}

#[test]
fn out_of_range() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    let err = s.set_property("irq", json!(16)).unwrap_err();
    assert!(
        matches!(&err, Error::OutOfRange { value, min, max, .. } if value == "16" && min == "0" && max == "15"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "property 'irq' of 'isa-serial': 16 is out of range 0..=15"
    );
    assert!(matches!(
        s.set_property("irq", json!(-1)),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        s.set_property("iobase", json!(0x1_0000)),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        s.set_property("skew", json!(101)),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        s.set_property("skew", json!(-101)),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        s.set_property("skew", json!(u64::MAX)),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        s.set_property("baud", json!(49)),
        Err(Error::OutOfRange { .. })
    ));
    // The edges are accepted.
    s.set_property("irq", json!(15)).unwrap();
    s.set_property("irq", json!(0)).unwrap();
    s.set_property("iobase", json!(0xffff)).unwrap();
}

#[test]
fn enum_values_are_checked() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    let err = s.set_property("mode", json!("rs485")).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidEnum { allowed, .. } if allowed == "rs232, loopback"),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains("\"rs485\" is not one of: rs232, loopback"));
}

#[test]
fn read_only_properties() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    for name in ["type", "rx-bytes"] {
        let err = s.set_property(name, json!(1)).unwrap_err();
        assert!(
            matches!(&err, Error::ReadOnly { property, .. } if property == name),
            "{err}"
        );
    }
    assert_eq!(
        s.set_property("rx-bytes", json!(5))
            .unwrap_err()
            .to_string(),
        "property 'rx-bytes' of 'isa-serial' is read-only"
    );
    // The device itself may update a read-only value, still type checked.
    s.update_property("rx-bytes", json!(42)).unwrap();
    assert_eq!(s.get_u64("rx-bytes").unwrap(), 42);
    assert!(matches!(
        s.update_property("rx-bytes", json!("x")),
        Err(Error::WrongType { .. })
    ));
    // Child properties are read-only, declared or added at run time.
    let pc = f.registry.new_object("pc").unwrap();
    assert!(matches!(
        pc.set_property("pic", json!("x")),
        Err(Error::ReadOnly { .. })
    ));
    let extra = f.registry.new_object("i8259").unwrap();
    pc.add_child("slave-pic", &extra).unwrap();
    assert!(matches!(
        pc.set_property("slave-pic", json!("x")),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        pc.update_property("pic", json!("x")),
        Err(Error::ReadOnly { .. })
    ));
    // A getter without a setter is read-only.
    let registry = Registry::new();
    registry
        .register(
            TypeInfo::new("clock")
                .property(PropertyDef::uint("now", 0..=u64::MAX).getter(|_| Ok(json!(7)))),
        )
        .unwrap();
    let clock = registry.new_object("clock").unwrap();
    assert_eq!(clock.get_u64("now").unwrap(), 7);
    assert!(matches!(
        clock.set_property("now", json!(1)),
        Err(Error::ReadOnly { .. })
    ));
}

#[test]
fn set_after_realize_unless_runtime_settable() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    s.realize().unwrap();
    let err = s.set_property("iobase", json!(0x2f8)).unwrap_err();
    assert!(
        matches!(&err, Error::SetAfterRealize { property, .. } if property == "iobase"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "property 'iobase' of 'isa-serial' cannot be changed once the object is realized"
    );
    assert_eq!(s.get_u64("iobase").unwrap(), 0x3f8);
    // Runtime-settable: accepted, goes through the setter into the device state.
    s.set_property("baud", json!(115_200)).unwrap();
    assert_eq!(s.get_u64("baud").unwrap(), 115_200);
    assert_eq!(
        s.with_state(|st: &mut SerialState| st.divisor_writes)
            .unwrap(),
        1
    );
    // The type / range checks still run first.
    assert!(matches!(
        s.set_property("baud", json!(1)),
        Err(Error::OutOfRange { .. })
    ));
    // After unrealize the property is writable again.
    s.unrealize().unwrap();
    s.set_property("iobase", json!(0x2f8)).unwrap();
}

#[test]
fn getters_read_live_state() {
    let f = fixture();
    let s = f.registry.new_typed::<SerialState>().unwrap();
    assert_eq!(s.get_property("baud").unwrap(), 9600);
    s.lock().baud = 1200;
    assert_eq!(s.get_property("baud").unwrap(), 1200);
}

#[test]
fn unset_values_report_unset() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    let err = s.get_string("chardev").unwrap_err();
    assert!(matches!(err, Error::Unset { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "property 'chardev' of 'isa-serial' is not set"
    );
}

#[test]
fn links_resolve_paths_check_types_and_are_weak() {
    let f = fixture();
    let tree = vmkit_object::ObjectTree::new(&f.registry).unwrap();
    let pc = f.registry.new_object("pc").unwrap();
    tree.set_machine(&pc).unwrap();
    let com1 = tree.device_add("isa-serial,id=com1").unwrap();
    let exit = tree.device_add("isa-debug-exit").unwrap();

    pc.set_property("boot-device", json!("/machine/peripheral/com1"))
        .unwrap();
    assert_eq!(pc.get_link("boot-device").unwrap(), Some(com1.clone()));
    assert_eq!(
        pc.get_property("boot-device").unwrap(),
        "/machine/peripheral/com1"
    );
    // Partial paths, and the interface as the link's target type.
    pc.set_property("console", json!("com1")).unwrap();
    assert_eq!(pc.get_link("console").unwrap(), Some(com1.clone()));
    pc.set_property("boot-device", json!("peripheral-anon/device[0]"))
        .unwrap();
    assert_eq!(pc.get_link("boot-device").unwrap(), Some(exit.clone()));

    let err = pc
        .set_property("console", json!("/machine/peripheral-anon/device[0]"))
        .unwrap_err();
    assert!(matches!(&err, Error::BadLink { .. }), "{err}");
    assert!(err.to_string().contains("is not a 'acpi-dev'"), "{err}");
    let err = pc
        .set_property("console", json!("/machine/nowhere"))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("no object at path '/machine/nowhere'"),
        "{err}"
    );
    let err = pc.set_link("console", Some(&exit)).unwrap_err();
    assert!(matches!(err, Error::BadLink { .. }), "{err}");
    assert!(matches!(
        pc.set_link("pic", None),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        com1.set_link("iobase", None),
        Err(Error::WrongType { .. })
    ));

    // Clearing with "" or null.
    pc.set_property("console", json!("")).unwrap();
    assert_eq!(pc.get_link("console").unwrap(), None);
    pc.set_property("console", json!("com1")).unwrap();
    pc.set_property("console", Value::Null).unwrap();
    assert_eq!(pc.get_property("console").unwrap(), Value::Null);

    // Weak: removing the target from the tree and dropping it empties the link.
    pc.set_property("console", json!("com1")).unwrap();
    drop(com1);
    tree.remove("/machine/peripheral/com1").unwrap();
    assert_eq!(pc.get_link("console").unwrap(), None);
    assert_eq!(f.serial_drops.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn links_on_objects_outside_a_tree() {
    let f = fixture();
    let pc = f.registry.new_object("pc").unwrap();
    let err = pc
        .set_property("boot-device", json!("/machine"))
        .unwrap_err();
    assert!(err.to_string().contains("not in a tree yet"), "{err}");
    let com = f.registry.new_object("isa-serial").unwrap();
    pc.set_link("boot-device", Some(&com)).unwrap();
    assert_eq!(pc.get_link("boot-device").unwrap(), Some(com));
    assert_eq!(
        pc.get_property("boot-device").unwrap(),
        Value::Null,
        "no path to show"
    );
    assert!(matches!(
        pc.get_link("nope"),
        Err(Error::UnknownProperty { .. })
    ));
    assert!(matches!(
        pc.get_link("type"),
        Err(Error::UnknownProperty { .. })
    ));
}

#[test]
fn qom_list_shows_type_declared_and_dynamic_children() {
    let f = fixture();
    let pc = f.registry.new_object("pc").unwrap();
    pc.add_child("extra", &f.registry.new_object("i8259").unwrap())
        .unwrap();
    let list = pc.list_properties();
    let rows: Vec<(&str, &str)> = list
        .iter()
        .map(|p| (p.name.as_str(), p.type_name.as_str()))
        .collect();
    assert_eq!(
        rows,
        [
            ("type", "str"),
            ("pic", "child<i8259>"),
            ("boot-device", "link<isa-device>"),
            ("console", "link<acpi-dev>"),
            ("extra", "child<i8259>")
        ]
    );
    assert!(list[0].read_only && list[1].read_only && !list[2].read_only);
}
