//! The standard set of PC ISA devices.

use vmkit_object::{Context, Object, ObjectTree};

use super::{serial_handle, IsaContext, SerialHandle};
use crate::Result;

/// Which optional parts of the standard ISA set to create and how to connect them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsaConfig {
    /// The serial backend id (`chardev`) of COM1..COM4; `None` leaves the port unconnected
    /// (its output is discarded). All four ports always exist.
    pub serial: [Option<String>; 4],
    /// `(iobase, iosize)` of an `isa-debug-exit` device, if wanted (QEMU's default is
    /// `(0x501, 2)`; test kernels often use `(0xf4, 4)`).
    pub debug_exit: Option<(u16, u16)>,
}

impl Default for IsaConfig {
    /// COM1 on backend `serial0`, COM2-COM4 unconnected, no debug-exit.
    fn default() -> Self {
        Self {
            serial: [Some("serial0".into()), None, None, None],
            debug_exit: None,
        }
    }
}

/// The objects [`add_pc_isa_devices`] created (all realized, under
/// `/machine/peripheral/<id>`).
#[derive(Debug, Clone)]
pub struct IsaDevices {
    /// `pic`: the userspace 8259A pair (userspace model only).
    pub pic: Option<Object>,
    /// `pit`: the userspace 8254 (userspace model only).
    pub pit: Option<Object>,
    /// `com1`..`com4`.
    pub serial: Vec<Object>,
    /// `i8042`.
    pub i8042: Object,
    /// `rtc`.
    pub rtc: Object,
    /// `port80`.
    pub port80: Object,
    /// `debug-exit`, when configured.
    pub debug_exit: Option<Object>,
}

impl IsaDevices {
    /// The handle of COM`n+1` (`index` 0 = COM1).
    ///
    /// # Errors
    /// [`crate::Error::NoSuchSerial`] if there is no such port.
    pub fn serial_handle(&self, index: usize) -> Result<SerialHandle> {
        let object = self
            .serial
            .get(index)
            .ok_or(crate::Error::NoSuchSerial(index))?;
        serial_handle(object)
    }
}

/// Escapes a value for option text (`,` doubles).
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Creates and realizes the standard PC ISA devices at their standard ports and IRQs, each
/// through `tree.device_add_with` with option text, exactly as `-device` would:
///
/// - `pic` (`i8259`) and `pit` (`i8254`) in the userspace interrupt model only (in the
///   in-kernel model KVM has them);
/// - `com1`..`com4` (`isa-serial,index=N`), connected to `config.serial`'s backends;
/// - `i8042`, `rtc` (`mc146818rtc`), `port80`;
/// - `debug-exit` (`isa-debug-exit`) when `config.debug_exit` is set.
///
/// The tree must have a machine ([`ObjectTree::set_machine`]) and the registry the ISA types
/// ([`crate::register_isa_types`]).
///
/// # Errors
/// The first device that fails to be created or realized (a missing backend, a port
/// already taken by a device added earlier...). Devices created before it stay.
pub fn add_pc_isa_devices(
    tree: &ObjectTree,
    ctx: &mut IsaContext,
    config: &IsaConfig,
) -> Result<IsaDevices> {
    let kernel = ctx.model.is_kernel();
    let mut add = |options: String| -> Result<Object> {
        Ok(tree.device_add_with(&options, &mut Context::new(&mut *ctx))?)
    };
    let (pic, pit) = if kernel {
        (None, None)
    } else {
        (
            Some(add("i8259,id=pic".into())?),
            Some(add("i8254,id=pit".into())?),
        )
    };
    let mut serial = Vec::with_capacity(config.serial.len());
    for (index, chardev) in config.serial.iter().enumerate() {
        let number = index.saturating_add(1);
        let mut options = format!("isa-serial,id=com{number},index={index}");
        if let Some(id) = chardev {
            options.push_str(",chardev=");
            options.push_str(&escape(id));
        }
        serial.push(add(options)?);
    }
    let i8042 = add("i8042,id=i8042".into())?;
    let rtc = add("mc146818rtc,id=rtc".into())?;
    let port80 = add("port80,id=port80".into())?;
    let debug_exit = match config.debug_exit {
        Some((iobase, iosize)) => Some(add(format!(
            "isa-debug-exit,id=debug-exit,iobase={iobase:#x},iosize={iosize}"
        ))?),
        None => None,
    };
    Ok(IsaDevices {
        pic,
        pit,
        serial,
        i8042,
        rtc,
        port80,
        debug_exit,
    })
}
