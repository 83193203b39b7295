//! is_a, checked casts up / down / to interfaces, typed state access.

use vmkit_object::{Error, ObjectType, Registry, TypeInfo};

use crate::fixture::{fixture, AcpiInfo, IsaState, SerialState};

#[test]
fn is_a_follows_ancestors_and_interfaces() {
    let f = fixture();
    let fast = f.registry.new_object("isa-serial-fast").unwrap();
    for t in [
        "isa-serial-fast",
        "isa-serial",
        "isa-device",
        "device",
        "object",
    ] {
        assert!(fast.is_a(t), "{t}");
    }
    for i in ["acpi-dev-ospm", "acpi-dev", "interface"] {
        assert!(fast.is_a(i), "{i}");
    }
    assert!(!fast.is_a("isa-debug-exit"));
    assert!(!fast.is_a("i8259"));
    assert_eq!(fast.class().interfaces(), ["acpi-dev", "acpi-dev-ospm"]);

    let exit = f.registry.new_object("isa-debug-exit").unwrap();
    assert!(exit.is_a("isa-device") && !exit.is_a("acpi-dev"));
}

#[test]
fn casts_up_and_to_interfaces_succeed() {
    let f = fixture();
    let serial = f.registry.new_object("isa-serial").unwrap();
    assert_eq!(serial.cast("device").unwrap(), &serial);
    assert_eq!(serial.cast("acpi-dev").unwrap().type_name(), "isa-serial");
    // Interface class data comes with the implementation.
    assert_eq!(
        serial.class().data::<AcpiInfo>(),
        Some(&AcpiInfo { hid: "PNP0000" })
    );
}

#[test]
fn wrong_casts_name_both_types() {
    let f = fixture();
    let exit = f.registry.new_object("isa-debug-exit").unwrap();
    let err = exit.cast("isa-serial").unwrap_err();
    assert!(
        matches!(&err, Error::InvalidCast { object_type, target } if object_type == "isa-debug-exit" && target == "isa-serial"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "cannot cast object of type 'isa-debug-exit' to 'isa-serial'"
    );
    let err = exit.cast("acpi-dev").unwrap_err();
    assert!(err.to_string().contains("'acpi-dev'"));
    let err = exit.downcast::<SerialState>().unwrap_err();
    assert!(matches!(err, Error::InvalidCast { .. }), "{err}");
}

#[test]
fn downcast_gives_each_layer_of_state() {
    let f = fixture();
    // Down: from an untyped object to the concrete type's state.
    let obj = f.registry.new_object("isa-serial-fast").unwrap();
    let serial = obj.downcast::<SerialState>().unwrap();
    serial.lock().baud = 38_400;
    assert_eq!(
        obj.get_u64("baud").unwrap(),
        38_400,
        "the getter reads the same state"
    );
    // Up: the base type's layer is a separate value.
    let isa = obj.downcast::<IsaState>().unwrap();
    assert_eq!(isa.lock().wired_irq, None);
    assert_eq!(isa.object(), &obj);
    // The state handle outlives the typed view and is the same Arc.
    let handle = std::sync::Arc::clone(serial.state());
    assert!(std::sync::Arc::ptr_eq(
        &handle,
        &obj.state::<SerialState>().unwrap()
    ));
}

#[test]
fn typed_creation_and_missing_state() {
    let f = fixture();
    let serial = f.registry.new_typed::<SerialState>().unwrap();
    assert_eq!(serial.type_name(), "isa-serial");
    assert_eq!(serial.lock().baud, 9600);

    let exit = f.registry.new_object("isa-debug-exit").unwrap();
    let err = exit.state::<SerialState>().unwrap_err();
    assert!(
        matches!(&err, Error::NoState { object_type, .. } if object_type == "isa-debug-exit"),
        "{err}"
    );
    assert!(err.to_string().contains("SerialState"));

    // Right QOM type, no Rust state registered for it.
    struct Bare;
    impl ObjectType for Bare {
        const TYPE_NAME: &'static str = "bare";
    }
    let registry = Registry::new();
    registry.register(TypeInfo::new("bare")).unwrap();
    assert!(matches!(
        registry.new_typed::<Bare>(),
        Err(Error::NoState { .. })
    ));
}
