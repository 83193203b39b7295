//! Class behaviour inherited and overridden three levels deep.

use vmkit_object::{Context, PropertyDef, Registry, TypeInfo};

use crate::fixture::{fixture, DeviceClass, Log};

#[test]
fn realize_chains_through_three_levels() {
    let f = fixture();
    let fast = f.registry.new_object("isa-serial-fast").unwrap();
    fast.set_property("irq", 3.into()).unwrap();
    let mut log = Log::default();
    fast.realize_with(&mut Context::new(&mut log)).unwrap();
    assert_eq!(
        log.0,
        [
            "isa-serial-fast:before",
            "device:isa-serial-fast",
            "isa-device:irq3",
            "isa-serial:0x2f8",
            "isa-serial-fast:after"
        ]
    );
    assert_eq!(
        fast.with_state(|s: &mut crate::fixture::IsaState| s.wired_irq)
            .unwrap(),
        Some(3)
    );
}

#[test]
fn types_without_own_hook_inherit_it() {
    let f = fixture();
    let exit = f.registry.new_object("isa-debug-exit").unwrap();
    let mut log = Log::default();
    exit.realize_with(&mut Context::new(&mut log)).unwrap();
    assert_eq!(log.0, ["device:isa-debug-exit", "isa-device:irq0"]);
    assert!(f.registry.class("isa-debug-exit").unwrap().has_realize());
    assert!(!f.registry.class("i8259").unwrap().has_realize());
}

#[test]
fn reset_overrides_call_their_parents() {
    let f = fixture();
    let fast = f.registry.new_object("isa-serial-fast").unwrap();
    assert!(!fast.reset(), "unrealized objects are not reset");
    assert!(f.resets.lock().unwrap().is_empty());
    fast.realize().unwrap();
    assert!(fast.reset());
    assert_eq!(
        *f.resets.lock().unwrap(),
        ["isa-serial-fast", "device", "isa-serial"]
    );
    assert_eq!(
        fast.with_state(|s: &mut crate::fixture::SerialState| s.resets)
            .unwrap(),
        1
    );
}

#[test]
fn class_data_is_inherited_and_overridable() {
    let f = fixture();
    let get = |t: &str| f.registry.class(t).unwrap().data::<DeviceClass>().cloned();
    let base = DeviceClass {
        category: "misc",
        user_creatable: true,
    };
    assert_eq!(get("device"), Some(base.clone()));
    assert_eq!(get("isa-device"), Some(base.clone()));
    assert_eq!(get("isa-serial"), Some(base.clone()));
    assert_eq!(
        get("isa-serial-fast"),
        Some(DeviceClass {
            category: "serial",
            ..base
        })
    );
    assert_eq!(get("i8259"), None);
}

#[test]
fn properties_are_inherited_three_levels_deep() {
    let f = fixture();
    let fast = f.registry.new_object("isa-serial-fast").unwrap();
    // From isa-device (default set by isa-serial), isa-serial, and isa-serial-fast's default.
    assert_eq!(fast.get_u64("irq").unwrap(), 4);
    assert_eq!(fast.get_string("mode").unwrap(), "rs232");
    assert_eq!(fast.get_u64("iobase").unwrap(), 0x2f8);
    let serial = f.registry.new_object("isa-serial").unwrap();
    assert_eq!(
        serial.get_u64("iobase").unwrap(),
        0x3f8,
        "the parent keeps its default"
    );
}

#[test]
fn class_data_behaviour_closures_can_chain_to_the_parent() {
    // A class "method" kept in class data: the subtype keeps the parent's closure and calls it.
    type Describe = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;
    #[derive(Clone)]
    struct Methods {
        describe: Describe,
    }
    let registry = Registry::new();
    registry
        .register_all([
            TypeInfo::new("a").class_data(Methods {
                describe: std::sync::Arc::new(|n| format!("a({n})")),
            }),
            TypeInfo::new("b").parent("a"),
            TypeInfo::new("c").parent("b").class_init(|class| {
                if let Some(m) = class.get_mut::<Methods>() {
                    let parent = m.describe.clone();
                    m.describe = std::sync::Arc::new(move |n| format!("c[{}]", parent(n)));
                }
            }),
        ])
        .unwrap();
    let call = |t: &str| {
        (registry
            .class(t)
            .unwrap()
            .data::<Methods>()
            .unwrap()
            .describe)("x")
    };
    assert_eq!(call("a"), "a(x)");
    assert_eq!(call("b"), "a(x)");
    assert_eq!(call("c"), "c[a(x)]");
}

#[test]
fn instance_init_runs_ancestors_first() {
    let registry = Registry::new();
    registry
        .register_all([
            TypeInfo::new("base")
                .property(PropertyDef::string("trail").default(""))
                .instance_init(|o| {
                    let t = o.get_string("trail")? + "base;";
                    o.update_property("trail", t.into())
                }),
            TypeInfo::new("derived").parent("base").instance_init(|o| {
                let t = o.get_string("trail")? + "derived;";
                o.update_property("trail", t.into())
            }),
        ])
        .unwrap();
    let o = registry.new_object("derived").unwrap();
    assert_eq!(o.get_string("trail").unwrap(), "base;derived;");
}
