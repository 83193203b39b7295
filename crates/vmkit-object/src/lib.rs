//! A QOM-like type and object registry for Rust VMMs.
//!
//! QEMU creates every device, CPU and machine through QOM: types registered by name with
//! a parent, classes with overridable behaviour, objects with typed properties placed in a
//! composition tree (`/machine/peripheral/com2`) and brought to life by *realize*. This
//! crate gives a Rust VMM the same model without unsafe code or hand-written vtables, and
//! without any KVM dependency:
//!
//! - [`Registry`] holds types described with the [`TypeInfo`] builder: parent, abstract
//!   or not, [interfaces](TypeInfo::implements), [properties](PropertyDef), per-type
//!   Rust [state](TypeInfo::state), [class data](ClassData) and lifecycle hooks
//!   ([realize](TypeInfo::realize), [unrealize](TypeInfo::unrealize),
//!   [reset](TypeInfo::reset)) that subtypes inherit or override, chaining to the parent's
//!   implementation through [`ParentHook`].
//! - [`Registry::new_object`] creates an [`Object`] by type name; [`Object::is_a`],
//!   [`Object::cast`] and [`Object::downcast`] are checked casts up, down and to
//!   interfaces; [`Typed`] gives direct access to a device's state.
//! - Properties (bool, ranged signed / unsigned integers, strings, enums, links, children)
//!   are read and written by name as [`serde_json::Value`] or from option text, with
//!   errors for unknown properties, wrong types, out-of-range values, read-only properties
//!   and sets after realize.
//! - [`ObjectTree`] is the composition tree with QEMU's layout and the control-socket
//!   operations (`qom-list`, `qom-get`, `qom-set`, `device_add`, `device_del`);
//!   [`Registry::list_types`] and [`Registry::type_properties`] answer
//!   `qom-list-types` and `device-list-properties`.
//!
//! Objects are `Arc` handles, `Send + Sync`: a control-socket thread may read and set
//! properties while vCPU threads run the devices.
//!
//! # Example
//!
//! Two types, one abstract, and a device created by name from `-device` option text:
//!
//! ```
//! use vmkit_object::{Context, ObjectTree, PropertyDef, Registry, TypeInfo};
//!
//! /// What the machine hands to realize hooks: here, the ports claimed so far.
//! #[derive(Default)]
//! struct Wiring { claimed_ports: Vec<(u64, &'static str)> }
//!
//! let registry = Registry::new();
//! registry.register(
//!     TypeInfo::new("isa-device")
//!         .abstract_type()
//!         .property(PropertyDef::uint("irq", 0..=15).description("ISA IRQ line")),
//! )?;
//! registry.register(
//!     TypeInfo::new("isa-serial")
//!         .parent("isa-device")
//!         .default_value("irq", 4)
//!         .property(PropertyDef::uint("iobase", 0..=0xffff).default(0x3f8))
//!         .realize(|dev, ctx, parent| {
//!             parent.call(dev, ctx)?;
//!             let base = dev.get_u64("iobase")?;
//!             ctx.get::<Wiring>()?.claimed_ports.push((base, "serial"));
//!             Ok(())
//!         }),
//! )?;
//!
//! let tree = ObjectTree::new(&registry)?;
//! tree.set_machine(&registry.new_object("container")?)?;
//! let mut wiring = Wiring::default();
//! let com2 = tree.device_add_with(
//!     "isa-serial,id=com2,iobase=0x2f8,irq=3",
//!     &mut Context::new(&mut wiring),
//! )?;
//!
//! assert!(com2.is_a("isa-device") && com2.is_realized());
//! assert_eq!(com2.path().as_deref(), Some("/machine/peripheral/com2"));
//! assert_eq!(tree.get("/machine/peripheral/com2", "irq")?, 3);
//! assert_eq!(wiring.claimed_ports, [(0x2f8, "serial")]);
//! // The abstract base cannot be created, and realized devices refuse most sets.
//! assert!(registry.new_object("isa-device").is_err());
//! assert!(com2.set_property("iobase", 0x3e8.into()).is_err());
//! # Ok::<(), vmkit_object::Error>(())
//! ```
#![forbid(unsafe_code)]

mod class;
mod error;
mod object;
mod options;
mod property;
mod registry;
mod tree;
mod vmstate;

pub use class::{Class, ClassData, Context, InitFn, LifecycleFn, ParentHook, ParentReset, ResetFn};
pub use error::{Error, Result};
pub use object::{Lifecycle, Object, ObjectType, Typed, WeakObject};
pub use options::{check_id, split_items, ObjectOptions};
pub use property::{
    parse_integer, PropertyDef, PropertyGetter, PropertyInfo, PropertyKind, PropertySetter,
};
pub use registry::{Registry, TypeInfo, TypeSummary, TYPE_CONTAINER, TYPE_INTERFACE, TYPE_OBJECT};
pub use tree::ObjectTree;
pub use vmstate::{VmStateHandler, VmStateRegistry, VmStateSection};

/// Re-exported so users need no direct `serde_json` dependency for property values.
pub use serde_json::{json, Value};
