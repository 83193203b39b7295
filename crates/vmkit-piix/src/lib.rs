//! Register models of the chipset functions of QEMU's `pc` machine, on [`vmkit_pci`]'s
//! configuration space: device ids, power-on values and write masks as QEMU's
//! `hw/pci-host/i440fx.c`, `hw/isa/piix.c`, `hw/ide/piix.c` and `hw/acpi/piix4.c` set them,
//! so firmware and guests cannot tell vmkit's pc from QEMU's.
//!
//! | function | BDF | id | what it models |
//! |---|---|---|---|
//! | [`I440fx`] | 00:00.0 | 8086:1237 | PAM0-6 (shadow RAM routing, told to a [`PamListener`]), SMRAM |
//! | [`Piix3`] | 00:01.0 | 8086:7000 | PIRQRC A-D (PCI INTx to ISA IRQ, [`PciIntx`]), QEMU's reset values |
//! | [`Piix3Ide`] | 00:01.1 | 8086:7010 | config space and BAR4; no drives ([`IdeNoDrives`]) |
//! | [`Piix4Pm`] | 00:01.3 | 8086:7113 | PMBA/PMREGMISC, PM1a event/control, PM timer, GPE0, APM, SCI, S5 |
//!
//! The models know registers only: PAM changes, the SCI level and sleep requests leave
//! through traits ([`PamListener`], [`vmkit_hw::IrqLine`], [`PowerEvents`]) the machine
//! implements, time comes from a [`vmkit_hw::Clock`].
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_hw::{ManualClock, RecordingLine};
//! use vmkit_pci::{DevFn, PciBus, PciDevice};
//! use vmkit_piix::{NoPam, NoPower, I440fx, Piix4Pm, PM_TIMER_HZ};
//!
//! let mut host = I440fx::new(Arc::new(NoPam));
//! let mut id = [0u8; 4];
//! host.config_read(0, &mut id);
//! assert_eq!(u32::from_le_bytes(id), 0x1237_8086);
//!
//! let clock = ManualClock::new(0);
//! let sci = Arc::new(RecordingLine::default());
//! let mut pm = Piix4Pm::new(Arc::new(clock.clone()), sci.clone(), Arc::new(NoPower));
//! pm.config_write(0x40, &0x601u32.to_le_bytes()); // PMBA = 0x600, as SeaBIOS sets it
//! pm.config_write(0x80, &[1]); // PMREGMISC: PM I/O on
//! assert_eq!(pm.pm_base(), Some(0x600));
//! clock.advance(1_000_000_000);
//! assert_eq!(u64::from(pm.timer()), PM_TIMER_HZ); // one second of the 3.58 MHz timer
//! pm.pm_write(2, &0x100u16.to_le_bytes()); // PWRBTN_EN
//! pm.power_button();
//! assert!(sci.level());
//! let bus = PciBus::new();
//! bus.add(DevFn::new(0, 0), Arc::new(std::sync::Mutex::new(host)))?;
//! # Ok::<(), vmkit_pci::Error>(())
//! ```
#![forbid(unsafe_code)]

pub mod i440fx;
pub mod piix3;
pub mod pm;

pub use i440fx::{
    pam_segments, I440fx, I440fxState, NoPam, PamListener, PamMode, PamSegment,
    I440FX_STATE_VERSION,
};
pub use piix3::{
    pirq_route, IdeNoDrives, PciIntx, Piix3, Piix3Ide, Piix3State, PirqListener,
    PIIX3_STATE_VERSION,
};
pub use pm::{NoPower, Piix4Pm, PmState, PowerEvents, PM_STATE_VERSION, PM_TIMER_HZ};
