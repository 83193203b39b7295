//! Option text: syntax, typed value parsing, errors.

use vmkit_object::{Error, ObjectOptions, ObjectTree};

use crate::fixture::fixture;

#[test]
fn parses_type_id_and_properties() {
    let o = ObjectOptions::parse("isa-serial,id=com2,iobase=0x2f8,irq=3").unwrap();
    assert_eq!(o.type_name, "isa-serial");
    assert_eq!(o.id.as_deref(), Some("com2"));
    assert_eq!(
        o.properties,
        [
            ("iobase".to_owned(), "0x2f8".to_owned()),
            ("irq".to_owned(), "3".to_owned())
        ]
    );
    let o = ObjectOptions::parse("driver=isa-serial,chardev=a,,b,id=x").unwrap();
    assert_eq!(o.type_name, "isa-serial");
    assert_eq!(o.properties, [("chardev".to_owned(), "a,b".to_owned())]);
    assert_eq!(o.to_string(), "isa-serial,id=x,chardev=a,,b");
    let o: ObjectOptions = "i8259".parse().unwrap();
    assert!(o.id.is_none() && o.properties.is_empty());
    assert_eq!(
        ObjectOptions::parse("x,path=a=b").unwrap().properties[0].1,
        "a=b"
    );
    assert_eq!(
        ObjectOptions::parse("x,chardev=").unwrap().properties[0].1,
        ""
    );
}

#[test]
fn syntax_errors_are_clear() {
    let cases = [
        ("", "the text is empty"),
        (",id=x", "item 1 is empty"),
        ("isa-serial,iobase", "'iobase' is not of the form key=value"),
        ("isa-serial,=3", "has no key"),
        ("isa-serial,irq=3,irq=4", "'irq' is given twice"),
        ("isa-serial,id=a,id=b", "'id' is given twice"),
        ("isa-serial,id=2com", "ids must start with a letter"),
        ("isa-serial,id=com 2", "ids may only contain"),
        ("isa-serial,id=", "ids must not be empty"),
        ("iobase=3", "no type given"),
        ("isa-serial,driver=isa-serial", "the type is given twice"),
        ("driver=", "needs a type name"),
        ("isa-serial,irq=3,", "item 3 is empty"),
    ];
    for (text, needle) in cases {
        let err = ObjectOptions::parse(text).unwrap_err();
        assert!(matches!(err, Error::OptionSyntax { .. }), "{text:?}: {err}");
        assert!(err.to_string().contains(needle), "{text:?}: {err}");
    }
    // ",," at the start is an escaped comma in the type name, and then no such type.
    let o = ObjectOptions::parse("isa-serial,,").unwrap();
    assert_eq!(o.type_name, "isa-serial,");
    let f = fixture();
    assert!(matches!(
        f.registry.new_object_from_options(&o),
        Err(Error::UnknownType(_))
    ));
}

#[test]
fn values_are_parsed_by_property_type() {
    let f = fixture();
    let opts = ObjectOptions::parse(
        "isa-serial,iobase=0x2F8,irq=0b11,wakeup=on,skew=-7,mode=loopback,chardev=0x10",
    )
    .unwrap();
    let s = f.registry.new_object_from_options(&opts).unwrap();
    assert_eq!(s.get_u64("iobase").unwrap(), 0x2f8);
    assert_eq!(s.get_u64("irq").unwrap(), 3);
    assert!(s.get_bool("wakeup").unwrap());
    assert_eq!(s.get_i64("skew").unwrap(), -7);
    assert_eq!(s.get_string("mode").unwrap(), "loopback");
    assert_eq!(
        s.get_string("chardev").unwrap(),
        "0x10",
        "strings stay text"
    );
    for (text, expected) in [
        ("on", true),
        ("off", false),
        ("true", true),
        ("false", false),
        ("yes", true),
        ("no", false),
    ] {
        s.set_property_text("wakeup", text).unwrap();
        assert_eq!(s.get_bool("wakeup").unwrap(), expected, "{text}");
    }
}

#[test]
fn value_errors_are_clear() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    let err = s.set_property_text("iobase", "0x2g8").unwrap_err();
    assert_eq!(
        err.to_string(),
        "property 'iobase' of 'isa-serial': \"0x2g8\" is not an unsigned integer (decimal, 0x hex or 0b binary)"
    );
    let err = s.set_property_text("wakeup", "maybe").unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
    assert!(err.to_string().contains("on/off"), "{err}");
    assert!(matches!(
        s.set_property_text("skew", "1.5"),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        s.set_property_text("irq", "-1"),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        s.set_property_text("irq", "0x10"),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        s.set_property_text("iobase", "99999999999999999999"),
        Err(Error::InvalidValue { .. })
    ));
    assert!(matches!(
        s.set_property_text("mode", "rs485"),
        Err(Error::InvalidEnum { .. })
    ));
    assert!(matches!(
        s.set_property_text("type", "x"),
        Err(Error::ReadOnly { .. })
    ));

    let tree = ObjectTree::new(&f.registry).unwrap();
    tree.set_machine(&f.registry.new_object("pc").unwrap())
        .unwrap();
    let err = tree
        .device_add("isa-serial,id=com2,iobase=0x2f8,irq=three")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "property 'irq' of 'isa-serial': \"three\" is not an unsigned integer (decimal, 0x hex or 0b binary)"
    );
    let err = tree
        .device_add("isa-serial,id=com2,speed=9600")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "object of type 'isa-serial' has no property 'speed'"
    );
}

#[test]
fn link_values_in_option_text_resolve_in_the_tree() {
    let f = fixture();
    let tree = ObjectTree::new(&f.registry).unwrap();
    tree.set_machine(&f.registry.new_object("container").unwrap())
        .unwrap();
    let com1 = tree.device_add("isa-serial,id=com1").unwrap();
    let pc = tree.object_add("pc,id=board,boot-device=com1").unwrap();
    assert_eq!(pc.get_link("boot-device").unwrap(), Some(com1));
    // Outside a tree the same text cannot resolve.
    let opts = ObjectOptions::parse("pc,boot-device=com1").unwrap();
    let err = f.registry.new_object_from_options(&opts).unwrap_err();
    assert!(matches!(err, Error::BadLink { .. }), "{err}");
}
