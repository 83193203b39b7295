//! Realize, unrealize and their failures; device_add rollback; contexts.

use vmkit_object::{json, Context, Error, Lifecycle, ObjectTree, Registry, TypeInfo};

use crate::fixture::{fixture, Log};

#[test]
fn realize_failure_leaves_the_object_unrealized() {
    let f = fixture();
    let s = f.registry.new_object("isa-serial").unwrap();
    s.set_property("chardev", json!("broken")).unwrap();
    let mut log = Log::default();
    let err = s.realize_with(&mut Context::new(&mut log)).unwrap_err();
    assert!(
        matches!(&err, Error::RealizeFailed { source, .. } if matches!(**source, Error::Failed(_))),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "realize of 'isa-serial' object (not in a tree) failed: chardev 'broken' cannot be opened"
    );
    assert_eq!(s.lifecycle(), Lifecycle::Unrealized);
    assert!(
        log.0.is_empty(),
        "the failing hook stopped before its parents ran"
    );
    // Still configurable, and realize can be retried.
    s.set_property("chardev", json!("ok")).unwrap();
    s.realize().unwrap();
    assert!(s.is_realized());
}

#[test]
fn required_properties_are_checked_at_realize() {
    let registry = Registry::new();
    registry
        .register_all([
            TypeInfo::new("needs")
                .property(vmkit_object::PropertyDef::string("chardev").required()),
            TypeInfo::new("needs-link")
                .property(vmkit_object::PropertyDef::link("bus", "object").required()),
        ])
        .unwrap();
    let o = registry.new_object("needs").unwrap();
    let err = o.realize().unwrap_err();
    assert_eq!(
        err.to_string(),
        "realize of 'needs' object (not in a tree) failed: required property 'chardev' of 'needs' is not set"
    );
    assert!(
        matches!(&err, Error::RealizeFailed { source, .. } if matches!(**source, Error::MissingProperty { .. }))
    );
    o.set_property("chardev", json!("s0")).unwrap();
    o.realize().unwrap();

    let l = registry.new_object("needs-link").unwrap();
    assert!(l.realize().is_err());
    let target = registry.new_object("container").unwrap();
    l.set_link("bus", Some(&target)).unwrap();
    l.realize().unwrap();
}

#[test]
fn double_realize_and_unrealize_of_unrealized() {
    let f = fixture();
    let s = f.registry.new_object("i8259").unwrap();
    let err = s.unrealize().unwrap_err();
    assert!(matches!(err, Error::NotRealized(_)), "{err}");
    s.realize().unwrap();
    let err = s.realize().unwrap_err();
    assert_eq!(
        err.to_string(),
        "'i8259' object (not in a tree) is already realized"
    );
    s.unrealize().unwrap();
    assert_eq!(s.lifecycle(), Lifecycle::Unrealized);
}

#[test]
fn unrealize_failure_keeps_the_object_realized() {
    let registry = Registry::new();
    registry
        .register(TypeInfo::new("stuck").unrealize(|_, _, parent| {
            assert!(!parent.exists());
            Err(Error::failed("device busy"))
        }))
        .unwrap();
    let tree = ObjectTree::new(&registry).unwrap();
    tree.set_machine(&registry.new_object("container").unwrap())
        .unwrap();
    let o = tree.device_add("stuck,id=s").unwrap();
    let err = tree.remove("/machine/peripheral/s").unwrap_err();
    assert!(matches!(err, Error::UnrealizeFailed { .. }), "{err}");
    assert!(err.to_string().ends_with("failed: device busy"), "{err}");
    assert!(o.is_realized());
    assert_eq!(
        o.path().as_deref(),
        Some("/machine/peripheral/s"),
        "left in place"
    );
}

#[test]
fn device_add_failures_leave_no_trace() {
    let f = fixture();
    let tree = ObjectTree::new(&f.registry).unwrap();
    tree.set_machine(&f.registry.new_object("pc").unwrap())
        .unwrap();
    let peripheral = tree.resolve("/machine/peripheral").unwrap();

    let err = tree
        .device_add("isa-serial,id=com1,chardev=broken")
        .unwrap_err();
    assert!(matches!(err, Error::RealizeFailed { .. }), "{err}");
    assert!(peripheral.children().is_empty());

    let err = tree.device_add("isa-serial,id=com1,irq=16").unwrap_err();
    assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    assert!(peripheral.children().is_empty());
    assert!(matches!(
        tree.device_add("no-such,id=x"),
        Err(Error::UnknownType(_))
    ));
    assert!(matches!(
        tree.device_add("isa-device"),
        Err(Error::AbstractType(_))
    ));

    // Nothing kept the failed objects alive.
    assert_eq!(f.serial_drops.load(std::sync::atomic::Ordering::SeqCst), 2);
    tree.device_add("isa-serial,id=com1").unwrap();
    let err = tree.device_add("isa-serial,id=com1").unwrap_err();
    assert!(matches!(err, Error::DuplicateChild { .. }), "{err}");
}

#[test]
fn hooks_can_demand_a_context() {
    struct Machine {
        ports: Vec<u64>,
    }
    let registry = Registry::new();
    registry
        .register(
            TypeInfo::new("wired")
                .realize(|o, ctx, _| {
                    let machine = ctx.get::<Machine>()?;
                    machine.ports.push(o.get_u64("port")?);
                    Ok(())
                })
                .property(vmkit_object::PropertyDef::uint("port", 0..=0xffff).default(0x80)),
        )
        .unwrap();
    let o = registry.new_object("wired").unwrap();
    let err = o.realize().unwrap_err();
    assert!(
        err.to_string().contains("does not hold a value of type"),
        "{err}"
    );
    assert!(err.to_string().contains("Machine"), "{err}");
    let mut machine = Machine { ports: vec![] };
    o.realize_with(&mut Context::new(&mut machine)).unwrap();
    assert_eq!(machine.ports, [0x80]);
}

#[test]
fn reset_tree_resets_realized_objects_parents_first() {
    let f = fixture();
    let tree = ObjectTree::new(&f.registry).unwrap();
    tree.set_machine(&f.registry.new_object("pc").unwrap())
        .unwrap();
    tree.device_add("isa-serial,id=a").unwrap();
    tree.device_add("isa-serial-fast,id=b").unwrap();
    let unrealized = f.registry.new_object("isa-serial").unwrap();
    tree.add_unattached(&unrealized).unwrap();
    tree.root().reset_tree();
    assert_eq!(
        *f.resets.lock().unwrap(),
        [
            "device",
            "isa-serial",
            "isa-serial-fast",
            "device",
            "isa-serial"
        ]
    );
}

#[test]
fn objects_being_realized_refuse_reentry_and_plain_sets() {
    let registry = Registry::new();
    registry
        .register(
            TypeInfo::new("selfish")
                .property(vmkit_object::PropertyDef::uint("n", 0..=9).default(0))
                .property(
                    vmkit_object::PropertyDef::uint("computed", 0..=9)
                        .default(0)
                        .read_only(),
                )
                .realize(|o, _, _| {
                    assert_eq!(o.lifecycle(), Lifecycle::Realizing);
                    let again = o.realize().unwrap_err();
                    assert!(matches!(again, Error::Busy(_)), "{again}");
                    let set = o.set_property("n", json!(1)).unwrap_err();
                    assert!(matches!(set, Error::SetAfterRealize { .. }), "{set}");
                    // The hook's own way to record a computed value.
                    o.update_property("computed", json!(7))
                }),
        )
        .unwrap();
    let o = registry.new_object("selfish").unwrap();
    o.realize().unwrap();
    assert_eq!(o.get_u64("computed").unwrap(), 7);
    assert_eq!(o.get_u64("n").unwrap(), 0);
}
