//! A small PC-like type hierarchy shared by the tests.
//!
//! ```text
//! object
//! ├── device (abstract; DeviceClass data; realize/reset log "device")
//! │   └── isa-device (abstract; irq 0..=15; IsaState; realize chains, logs "isa-device")
//! │       ├── isa-serial (implements acpi-dev; iobase, chardev, mode, baud getter, ...)
//! │       │   └── isa-serial-fast (overrides realize + reset, class_init edits DeviceClass)
//! │       └── isa-debug-exit (iobase, iosize)
//! ├── i8259 (elcr, runtime settable "trace")
//! └── pc (child "pic": i8259; link "boot-device": isa-device)
//! interface
//! └── acpi-dev (AcpiInfo class data)
//!     └── acpi-dev-ospm
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use vmkit_object::{Error, ObjectType, PropertyDef, Registry, TypeInfo, Value};

/// What tests pass as the realize context: a log of hook calls.
#[derive(Debug, Default)]
pub struct Log(pub Vec<String>);

/// Class data of every device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceClass {
    pub category: &'static str,
    pub user_creatable: bool,
}

/// Class data an interface supplies with a default.
#[derive(Debug, Clone, PartialEq)]
pub struct AcpiInfo {
    pub hid: &'static str,
}

/// State of the isa-device layer.
#[derive(Debug, Default)]
pub struct IsaState {
    pub wired_irq: Option<u64>,
}

impl ObjectType for IsaState {
    const TYPE_NAME: &'static str = "isa-device";
}

/// State of the isa-serial layer.
#[derive(Debug)]
pub struct SerialState {
    pub baud: u64,
    pub divisor_writes: u32,
    pub resets: u32,
    pub drops: Arc<AtomicUsize>,
}

impl Drop for SerialState {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

impl ObjectType for SerialState {
    const TYPE_NAME: &'static str = "isa-serial";
}

/// Counts SerialState drops for the registry built by [`registry`].
pub struct Fixture {
    pub registry: Registry,
    pub serial_drops: Arc<AtomicUsize>,
    pub resets: Arc<Mutex<Vec<&'static str>>>,
}

fn log(ctx: &mut vmkit_object::Context<'_>, line: String) {
    if let Some(log) = ctx.try_get::<Log>() {
        log.0.push(line);
    }
}

pub fn fixture() -> Fixture {
    let registry = Registry::new();
    let serial_drops = Arc::new(AtomicUsize::new(0));
    let resets: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let drops = Arc::clone(&serial_drops);
    let (r1, r2, r3) = (
        Arc::clone(&resets),
        Arc::clone(&resets),
        Arc::clone(&resets),
    );

    registry
        .register_all([
            TypeInfo::new_interface("acpi-dev").class_data(AcpiInfo { hid: "PNP0000" }),
            TypeInfo::new_interface("acpi-dev-ospm").parent("acpi-dev"),
            TypeInfo::new("device")
                .abstract_type()
                .class_data(DeviceClass {
                    category: "misc",
                    user_creatable: true,
                })
                .realize(|dev, ctx, parent| {
                    parent.call(dev, ctx)?;
                    log(ctx, format!("device:{}", dev.type_name()));
                    Ok(())
                })
                .reset(move |dev, parent| {
                    // The root of the reset chain: nothing to chain to, so this is a no-op.
                    parent.call(dev);
                    r1.lock().unwrap().push("device");
                }),
            TypeInfo::new("isa-device")
                .parent("device")
                .abstract_type()
                .state(IsaState::default)
                .property(
                    PropertyDef::uint("irq", 0..=15)
                        .description("ISA interrupt line")
                        .required(),
                )
                .realize(|dev, ctx, parent| {
                    parent.call(dev, ctx)?;
                    let irq = dev.get_u64("irq")?;
                    dev.with_state(|s: &mut IsaState| s.wired_irq = Some(irq))?;
                    log(ctx, format!("isa-device:irq{irq}"));
                    Ok(())
                }),
            TypeInfo::new("isa-serial")
                .parent("isa-device")
                .implements("acpi-dev-ospm")
                .description("16550A UART")
                .default_value("irq", 4)
                .state(move || SerialState {
                    baud: 9600,
                    divisor_writes: 0,
                    resets: 0,
                    drops: Arc::clone(&drops),
                })
                .property(
                    PropertyDef::uint("iobase", 0..=0xffff)
                        .default(0x3f8)
                        .description("I/O base port"),
                )
                .property(PropertyDef::string("chardev").description("backend id"))
                .property(PropertyDef::enumeration("mode", &["rs232", "loopback"]).default("rs232"))
                .property(PropertyDef::bool("wakeup").default(false))
                .property(PropertyDef::int("skew", -100..=100).default(0))
                .property(
                    PropertyDef::uint("baud", 50..=115_200)
                        .description("line speed")
                        .runtime_settable()
                        .getter(|dev| {
                            Ok(Value::from(dev.with_state(|s: &mut SerialState| s.baud)?))
                        })
                        .setter(|dev, v| {
                            let baud = v.as_u64().ok_or_else(|| Error::failed("baud"))?;
                            dev.with_state(|s: &mut SerialState| {
                                s.baud = baud;
                                s.divisor_writes += 1;
                            })
                        }),
                )
                .property(
                    PropertyDef::uint("rx-bytes", 0..=u64::MAX)
                        .default(0)
                        .read_only(),
                )
                .realize(|dev, ctx, parent| {
                    if dev.get_string("chardev").is_ok_and(|c| c == "broken") {
                        return Err(Error::failed("chardev 'broken' cannot be opened"));
                    }
                    parent.call(dev, ctx)?;
                    log(ctx, format!("isa-serial:{:#x}", dev.get_u64("iobase")?));
                    Ok(())
                })
                .reset(move |dev, parent| {
                    parent.call(dev);
                    let _ = dev.with_state(|s: &mut SerialState| s.resets += 1);
                    r2.lock().unwrap().push("isa-serial");
                }),
            TypeInfo::new("isa-serial-fast")
                .parent("isa-serial")
                .default_value("iobase", 0x2f8)
                .class_init(|class| {
                    if let Some(dc) = class.get_mut::<DeviceClass>() {
                        dc.category = "serial";
                    }
                })
                .realize(|dev, ctx, parent| {
                    log(ctx, "isa-serial-fast:before".into());
                    parent.call(dev, ctx)?;
                    log(ctx, "isa-serial-fast:after".into());
                    Ok(())
                })
                .reset(move |dev, parent| {
                    r3.lock().unwrap().push("isa-serial-fast");
                    parent.call(dev);
                }),
            TypeInfo::new("isa-debug-exit")
                .parent("isa-device")
                .default_value("irq", 0)
                .property(PropertyDef::uint("iobase", 0..=0xffff).default(0x501))
                .property(PropertyDef::uint("iosize", 1..=4).default(2)),
            TypeInfo::new("i8259")
                .property(PropertyDef::uint("elcr-mask", 0..=0xff).default(0xf8))
                .property(PropertyDef::bool("trace").default(false).runtime_settable()),
            TypeInfo::new("pc")
                .child("pic", "i8259")
                .property(PropertyDef::link("boot-device", "isa-device"))
                .property(PropertyDef::link("console", "acpi-dev")),
        ])
        .expect("fixture types register");
    Fixture {
        registry,
        serial_drops,
        resets,
    }
}
