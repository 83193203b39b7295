//! Object creation by type name and property get / set, in nanoseconds per operation.

use std::hint::black_box;

use criterion::{criterion_main, Criterion};
use vmkit_object::{json, PropertyDef, Registry, TypeInfo};

#[derive(Default)]
struct SerialState {
    baud: u64,
}

/// A three-level hierarchy like the pc machine's serial port.
fn registry() -> Registry {
    let registry = Registry::new();
    registry
        .register_all([
            TypeInfo::new("device").abstract_type(),
            TypeInfo::new("isa-device")
                .parent("device")
                .abstract_type()
                .property(PropertyDef::uint("irq", 0..=15).default(4)),
            TypeInfo::new("isa-serial")
                .parent("isa-device")
                .state(SerialState::default)
                .property(PropertyDef::uint("iobase", 0..=0xffff).default(0x3f8))
                .property(PropertyDef::string("chardev"))
                .property(PropertyDef::bool("wakeup").default(false))
                .property(
                    PropertyDef::uint("baud", 0..=115_200)
                        .runtime_settable()
                        .getter(|o| Ok(json!(o.with_state(|s: &mut SerialState| s.baud)?)))
                        .setter(|o, v| {
                            let baud = v.as_u64().unwrap_or_default();
                            o.with_state(|s: &mut SerialState| s.baud = baud)
                        }),
                ),
        ])
        .expect("bench types register");
    registry
}

fn benches(c: &mut Criterion) {
    let registry = registry();
    c.bench_function("new_object(\"isa-serial\")", |b| {
        b.iter(|| {
            registry
                .new_object(black_box("isa-serial"))
                .expect("create")
        })
    });
    c.bench_function("new_object(\"container\")", |b| {
        b.iter(|| registry.new_object(black_box("container")).expect("create"))
    });

    let serial = registry.new_object("isa-serial").expect("create");
    c.bench_function("get_property(\"iobase\") stored", |b| {
        b.iter(|| serial.get_property(black_box("iobase")).expect("get"))
    });
    c.bench_function("get_u64(\"irq\") inherited", |b| {
        b.iter(|| serial.get_u64(black_box("irq")).expect("get"))
    });
    c.bench_function("get_property(\"baud\") getter", |b| {
        b.iter(|| serial.get_property(black_box("baud")).expect("get"))
    });
    c.bench_function("set_property(\"iobase\", 0x2f8)", |b| {
        b.iter(|| {
            serial
                .set_property(black_box("iobase"), json!(0x2f8))
                .expect("set")
        })
    });
    c.bench_function("set_property(\"baud\") setter", |b| {
        b.iter(|| {
            serial
                .set_property(black_box("baud"), json!(9600))
                .expect("set")
        })
    });
    c.bench_function("set_property_text(\"iobase\", \"0x2f8\")", |b| {
        b.iter(|| {
            serial
                .set_property_text(black_box("iobase"), black_box("0x2f8"))
                .expect("set")
        })
    });
}

// criterion_group! generates an undocumented public function.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(object, super::benches);
}
criterion_main!(harness::object);
