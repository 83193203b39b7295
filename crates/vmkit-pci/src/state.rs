//! PCI state as plain data, for snapshots and migration (QEMU's `vmstate_pci_device` and
//! `msix_save`/`msix_load`).
//!
//! A function's state is its 256 configuration bytes (command, BAR addresses, interrupt
//! line, capability registers, device-specific registers) and, if it has MSI-X, the vector
//! table and the pending-bit array. Masks, BAR sizes and the capability layout are fixed at
//! build time and not part of the state: the destination builds the same function and
//! takes the state over it. A state whose identity (vendor, device, class, header type)
//! is not the function's is refused.
//!
//! Restoring never maps anything by itself: after the functions' states are in, the
//! machine calls [`PciBus::update_mappings`](crate::PciBus::update_mappings) for each one
//! (or [`PciBus::update_all_mappings`](crate::PciBus::update_all_mappings)), which maps the BARs the
//! restored command and BAR registers decode, as a guest's configuration write would.

use serde::{Deserialize, Serialize};

use crate::config::{CLASS, CONFIG_SPACE_SIZE, DEVICE_ID, HEADER_TYPE, VENDOR_ID};
use crate::msix::Entry;
use crate::{ConfigSpace, Error, Msix, PciHost, Result};

/// The layout version of [`ConfigSpaceState`], [`MsixState`] and [`HostState`].
pub const PCI_STATE_VERSION: u32 = 1;

/// A function's configuration space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSpaceState {
    /// Layout version, [`PCI_STATE_VERSION`].
    pub version: u32,
    /// The 256 configuration bytes.
    pub bytes: Vec<u8>,
}

/// MSI-X: Message Control's enable and function-mask bits, the table and the PBA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsixState {
    /// Layout version, [`PCI_STATE_VERSION`].
    pub version: u32,
    /// MSI-X enable.
    pub enabled: bool,
    /// Function mask.
    pub function_mask: bool,
    /// Per vector: address low, address high, data, vector control.
    pub table: Vec<[u32; 4]>,
    /// Pending bits, 64 vectors a word.
    pub pba: Vec<u64>,
}

/// Configuration mechanism #1's latched CONFIG_ADDRESS and the reset control register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    /// Layout version, [`PCI_STATE_VERSION`].
    pub version: u32,
    /// CONFIG_ADDRESS (0xCF8).
    pub config_address: u32,
    /// Reset control register (0xCF9).
    pub reset_control: u8,
}

fn check_version(what: &str, version: u32) -> Result<()> {
    if version != PCI_STATE_VERSION {
        return Err(Error::InvalidState(format!(
            "{what} state version {version} is not supported (this build reads version \
             {PCI_STATE_VERSION})"
        )));
    }
    Ok(())
}

impl ConfigSpace {
    /// The configuration bytes now.
    pub fn state(&self) -> ConfigSpaceState {
        ConfigSpaceState {
            version: PCI_STATE_VERSION,
            bytes: self.data.to_vec(),
        }
    }

    /// Takes `state`'s configuration bytes. Refused (and nothing changed) for another
    /// version, a length other than 256, or another identity (vendor, device ID, class
    /// code, header type).
    pub fn restore(&mut self, state: &ConfigSpaceState) -> Result<()> {
        check_version("configuration space", state.version)?;
        let bytes: [u8; CONFIG_SPACE_SIZE] = state.bytes.as_slice().try_into().map_err(|_| {
            Error::InvalidState(format!(
                "configuration space has {} bytes, expected {CONFIG_SPACE_SIZE}",
                state.bytes.len()
            ))
        })?;
        let fields = [
            ("vendor ID", VENDOR_ID, 2usize),
            ("device ID", DEVICE_ID, 2),
            ("class code", CLASS - 2, 3),
            ("header type", HEADER_TYPE, 1),
        ];
        for (name, off, len) in fields {
            let o = usize::from(off);
            if bytes[o..o + len] != self.data[o..o + len] {
                return Err(Error::InvalidState(format!(
                    "the saved function's {name} {:02x?} is not this function's {:02x?}",
                    &bytes[o..o + len],
                    &self.data[o..o + len]
                )));
            }
        }
        self.data = bytes;
        Ok(())
    }
}

impl Msix {
    /// The enable and mask bits, the table and the PBA now.
    pub fn state(&self) -> MsixState {
        MsixState {
            version: PCI_STATE_VERSION,
            enabled: self.enabled,
            function_mask: self.function_mask,
            table: self
                .table
                .iter()
                .map(|e| [e.addr_lo, e.addr_hi, e.data, e.control])
                .collect(),
            pba: self.pba.clone(),
        }
    }

    /// Takes `state` and reports every vector's route to the [`MsiSignal`]
    /// (`update_vector`), so the machine sets up its GSI routes and irqfds as it had them;
    /// pending vectors that are deliverable now go out. Refused for another version or a
    /// table or PBA of another size.
    ///
    /// [`MsiSignal`]: crate::MsiSignal
    pub fn restore(&mut self, state: &MsixState) -> Result<()> {
        check_version("MSI-X", state.version)?;
        if state.table.len() != self.table.len() || state.pba.len() != self.pba.len() {
            return Err(Error::InvalidState(format!(
                "MSI-X table of {} vectors ({} PBA words), this function has {} ({})",
                state.table.len(),
                state.pba.len(),
                self.table.len(),
                self.pba.len()
            )));
        }
        for (e, s) in self.table.iter_mut().zip(&state.table) {
            *e = Entry {
                addr_lo: s[0],
                addr_hi: s[1],
                data: s[2],
                control: s[3] & crate::MSIX_ENTRY_MASKED,
            };
        }
        self.pba.copy_from_slice(&state.pba);
        // Bits past the last vector stay clear.
        let extra = self.pba.len() * 64 - usize::from(self.vectors());
        if let Some(last) = self.pba.last_mut() {
            if extra > 0 {
                *last &= u64::MAX >> extra;
            }
        }
        self.enabled = state.enabled;
        self.function_mask = state.function_mask;
        for v in 0..self.vectors() {
            self.refresh(v);
        }
        Ok(())
    }
}

impl PciHost {
    /// CONFIG_ADDRESS and the reset control register now.
    pub fn state(&self) -> HostState {
        HostState {
            version: PCI_STATE_VERSION,
            config_address: self.address,
            reset_control: self.rcr,
        }
    }

    /// Takes `state` (reserved CONFIG_ADDRESS bits are dropped, as a guest write would).
    pub fn restore(&mut self, state: &HostState) -> Result<()> {
        check_version("PCI host", state.version)?;
        self.address = state.config_address & crate::CONFIG_ADDRESS_MASK;
        self.rcr = state.reset_control & crate::RCR_SYSTEM_RESET;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{BarDef, BarKind, MsiMessage, MsiSignal, RegionIndex};

    #[derive(Default)]
    struct Routes(Mutex<Vec<(u16, Option<MsiMessage>)>>);
    impl MsiSignal for Routes {
        fn signal(&self, _vector: u16, _message: MsiMessage) {}
        fn update_vector(&self, vector: u16, route: Option<MsiMessage>) {
            self.0.lock().unwrap().push((vector, route));
        }
    }

    fn function() -> ConfigSpace {
        let mut cfg = ConfigSpace::new(0x1af4, 0x1001, 0x01, 0x00, 0x00, 0);
        cfg.add_bar(
            0,
            BarDef {
                kind: BarKind::Io,
                size: 0x40,
                prefetchable: false,
            },
        )
        .unwrap();
        cfg
    }

    #[test]
    fn configuration_space_round_trips_through_json_with_its_bar_mapping() {
        let mut a = function();
        a.write(0x10, &0xc040u32.to_le_bytes());
        a.write(0x04, &1u16.to_le_bytes());
        a.write(0x3c, &[11]);
        let json = serde_json::to_string(&a.state()).unwrap();
        let mut b = function();
        assert_eq!(b.bar_mapping(RegionIndex::Bar(0)), None);
        b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(
            b.bar_mapping(RegionIndex::Bar(0)),
            a.bar_mapping(RegionIndex::Bar(0))
        );
        assert_eq!((b.byte(0x3c), b.command()), (11, 1));
        // Sizing still works after a restore (the masks are the function's own).
        b.write(0x10, &u32::MAX.to_le_bytes());
        assert_eq!(b.dword(0x10), 0xffff_ffc1);
    }

    #[test]
    fn another_function_or_version_is_refused_and_nothing_changes() {
        let a = function();
        let mut other = ConfigSpace::new(0x8086, 0x1237, 0x06, 0x00, 0x00, 2);
        let before = other.clone();
        let err = other.restore(&a.state()).unwrap_err().to_string();
        assert!(err.contains("vendor ID"), "{err}");
        assert_eq!(other, before);
        let mut state = a.state();
        state.version = 7;
        let err = function().restore(&state).unwrap_err().to_string();
        assert!(err.contains("version 7"), "{err}");
        state.version = PCI_STATE_VERSION;
        state.bytes.truncate(64);
        let err = function().restore(&state).unwrap_err().to_string();
        assert!(err.contains("64 bytes"), "{err}");
    }

    #[test]
    fn msix_table_and_pba_come_back_and_routes_are_reported() {
        let routes = Arc::new(Routes::default());
        let (_, pba) = Msix::exclusive_bar_layout(3);
        let mut cfg = function();
        let mut a = Msix::new(3, 1, 0, 1, pba, Arc::new(crate::NullMsiSignal)).unwrap();
        let cap = a.add_capability(&mut cfg).unwrap();
        a.table_write(0x10, &0xfee0_1000u32.to_le_bytes());
        a.table_write(0x18, &0x45u32.to_le_bytes());
        a.table_write(0x1c, &0u32.to_le_bytes());
        cfg.write(cap + 2, &crate::MSIX_CONTROL_ENABLE.to_le_bytes());
        a.config_written(&cfg);
        // Vector 2 is masked: its interrupt waits in the PBA.
        assert_eq!(a.notify(2), crate::MsixDelivery::Pending);
        let state: MsixState =
            serde_json::from_str(&serde_json::to_string(&a.state()).unwrap()).unwrap();

        let mut b = Msix::new(3, 1, 0, 1, pba, routes.clone()).unwrap();
        b.restore(&state).unwrap();
        assert!(b.is_enabled() && b.is_pending(2) && !b.is_masked(1));
        assert_eq!(
            b.message(1),
            Some(MsiMessage {
                address: 0xfee0_1000,
                data: 0x45
            })
        );
        assert_eq!(*routes.0.lock().unwrap(), vec![(1, b.message(1))]);

        let mut small = Msix::new(2, 1, 0, 1, pba, routes.clone()).unwrap();
        let err = small.restore(&state).unwrap_err().to_string();
        assert!(err.contains("3 vectors"), "{err}");
    }

    #[test]
    fn host_latch_round_trips() {
        let mut a = PciHost::new(crate::PciBus::new());
        a.address = 0x8000_1804;
        let mut b = PciHost::new(crate::PciBus::new());
        b.restore(&a.state()).unwrap();
        assert_eq!(b.config_address(), 0x8000_1804);
    }
}
