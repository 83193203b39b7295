//! PIO and MMIO buses for KVM VMMs: the path from a VM exit to a device.
//!
//! A [`PioBus`] (16-bit port space) and an [`MmioBus`] (64-bit guest-physical space) each map
//! disjoint address ranges to devices. Devices are vm-device's [`DevicePio`](vm_device::DevicePio)
//! and [`DeviceMmio`](vm_device::DeviceMmio) trait objects, so a device written for any rust-vmm
//! VMM plugs in unchanged; `Arc<Mutex<T>>` with `T: MutDevicePio` works through vm-device's
//! blanket impls.
//!
//! # Concurrency and cost
//!
//! The range table is an immutable sorted array swapped RCU-style with `arc-swap`: inserting
//! or removing a range copies the table and publishes the copy in one store. A vCPU thread
//! dispatching an exit never takes a bus lock and never waits for a writer; the only lock on
//! the path is the device's own (e.g. its `Mutex`), taken for that device's access alone.
//! Lookup is a branch-free binary search, O(log n). Dispatch does not allocate.
//!
//! vCPU threads should dispatch through their own [`PioHandle`]/[`MmioHandle`]
//! ([`PioBus::handle`]): it keeps the table it last saw, checks for a newer one with a single
//! atomic load, and owns a private counter shard, so a dispatch costs little more than the
//! device's own lock. The bus itself can also dispatch (`bus.read(..)`, `&self`, any thread);
//! that path takes an arc-swap guard and a shared atomic add per access, about twice the cost
//! of a handle in the crate's benchmark, which is fine for occasional callers.
//!
//! # What an access does
//!
//! [`read`](PioBus::read) and [`write`](PioBus::write) take the address and a buffer whose
//! length is the access size, and return a [`Dispatch`] saying what happened; they never fail.
//!
//! - **Inside one range**: the device gets the access with the range's base and the offset
//!   of the address within the range ([`Dispatch::Handled`]).
//! - **Unassigned** (no range holds any byte of it): as on a PC, a read returns all ones
//!   (every byte of the buffer is set to 0xFF) and a write is dropped ([`Dispatch::Unassigned`]).
//! - **Straddling a range boundary** (it starts in a range and runs past its end, or starts
//!   in unassigned space and runs into a range): the access is split into 1-byte accesses and
//!   each byte goes wherever it would go on its own, to the device holding it (at its own
//!   offset) or to unassigned space. Devices therefore only ever see sizes of 1, 2, 4 or 8
//!   bytes, and never an offset or length outside their range ([`Dispatch::Split`]). Bytes past
//!   the top of the address space (port 0x10000 and up, MMIO beyond `u64::MAX`) are
//!   unassigned; they do not wrap to address 0.
//! - **Size other than 1, 2, 4 or 8** (including 0): no device sees it; a read fills the
//!   buffer with 0xFF and a write is dropped ([`Dispatch::InvalidSize`]). KVM never produces
//!   such sizes, so one means a bug in the caller; it is counted in [`BusStats::invalid_size`].
//!
//! # Counters
//!
//! Every range counts reads and writes with relaxed atomics on its own cache-line-padded
//! block, so vCPUs hitting different devices do not share a line; the bus counts unassigned,
//! split and invalid-size accesses. [`PioBus::stats`] returns a [`BusStats`] snapshot with the
//! totals and one [`RangeStats`] per range.
//!
//! # Example
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vm_device::bus::{PioAddress, PioAddressOffset};
//! use vm_device::MutDevicePio;
//! use vmkit_bus::{Dispatch, PioBus, PioRange};
//!
//! /// A scratch register: remembers the last byte written.
//! #[derive(Default)]
//! struct Scratch(u8);
//!
//! impl MutDevicePio for Scratch {
//!     fn pio_read(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &mut [u8]) {
//!         data.fill(self.0);
//!     }
//!     fn pio_write(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &[u8]) {
//!         self.0 = data.first().copied().unwrap_or(0);
//!     }
//! }
//!
//! let bus = PioBus::new();
//! bus.insert(PioRange::new(0x3f8, 8)?, "com1", Arc::new(Mutex::new(Scratch::default())))?;
//!
//! // A vCPU thread dispatches through its own handle (the bus itself works too, from any thread).
//! let mut io = bus.handle();
//! assert_eq!(io.write(0x3ff, &[b'A']), Dispatch::Handled);
//! let mut data = [0u8; 1];
//! assert_eq!(bus.read(0x3ff, &mut data), Dispatch::Handled);
//! assert_eq!(data, [b'A']);
//!
//! // Nothing at 0x2f8: reads float high, writes vanish.
//! assert_eq!(bus.read(0x2f8, &mut data), Dispatch::Unassigned);
//! assert_eq!(data, [0xFF]);
//!
//! // Overlapping registrations are refused, naming both sides.
//! let err = bus
//!     .insert(PioRange::new(0x3f0, 16)?, "fdc", Arc::new(Mutex::new(Scratch::default())))
//!     .unwrap_err();
//! assert!(err.to_string().contains("\"fdc\"") && err.to_string().contains("\"com1\""));
//!
//! let stats = bus.stats();
//! assert_eq!((stats.ranges[0].reads, stats.ranges[0].writes), (1, 1));
//! assert_eq!(stats.unassigned_reads, 1);
//! # Ok::<(), vmkit_bus::Error>(())
//! ```
#![forbid(unsafe_code)]

mod bus;
mod core;
mod mmio;
mod pio;
mod range;
mod stats;

use std::fmt;

pub use bus::{Bus, BusHandle, BusKind};
pub use mmio::{Mmio, MmioBus, MmioDevice, MmioHandle};
pub use pio::{Pio, PioBus, PioDevice, PioHandle};
pub use range::{MmioRange, PioRange};
pub use stats::{BusStats, RangeStats};

/// Which address space an error or range is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// The 16-bit I/O port space.
    Pio,
    /// The 64-bit memory-mapped I/O space.
    Mmio,
}

impl Space {
    /// The highest address of the space.
    pub fn max_address(self) -> u64 {
        match self {
            Space::Pio => u64::from(u16::MAX),
            Space::Mmio => u64::MAX,
        }
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Pio => "port",
            Space::Mmio => "MMIO",
        })
    }
}

/// What the bus did with one access. Dispatch never fails and never allocates; this says which
/// of the documented cases applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    /// One device got the whole access.
    Handled,
    /// No device holds any byte of it: a read returned all ones, a write was dropped.
    Unassigned,
    /// It straddled a range boundary and went out as 1-byte accesses, each to the device
    /// holding that byte or to unassigned space.
    Split,
    /// Its size was not 1, 2, 4 or 8: no device saw it; a read returned all ones.
    InvalidSize,
}

impl Dispatch {
    /// Whether a single device handled the whole access.
    pub fn is_handled(self) -> bool {
        self == Dispatch::Handled
    }
}

/// Errors of bus configuration (dispatch itself cannot fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A range of size 0 was requested.
    #[error("empty {space} range at {base:#x}: a range needs a size of at least 1")]
    EmptyRange {
        /// Address space of the range.
        space: Space,
        /// Requested base.
        base: u64,
    },
    /// The range would run past the top of its address space.
    #[error(
        "{space} range at {base:#x} with size {size:#x} runs past the last {space} address \
         {max:#x}: lower the base or the size"
    )]
    RangeOverflow {
        /// Address space of the range.
        space: Space,
        /// Requested base.
        base: u64,
        /// Requested size.
        size: u64,
        /// The highest address of the space.
        max: u64,
    },
    /// The range overlaps one that is already mapped.
    #[error(
        "cannot map {name:?} at {space} {base:#x}..={last:#x}: it overlaps {existing_name:?} \
         at {existing_base:#x}..={existing_last:#x}; remove that one first or pick a free range"
    )]
    Overlap {
        /// Address space of both ranges.
        space: Space,
        /// Name of the device being inserted.
        name: String,
        /// First address of the new range.
        base: u64,
        /// Last address of the new range (inclusive).
        last: u64,
        /// Name of the device already mapped.
        existing_name: String,
        /// First address of the existing range.
        existing_base: u64,
        /// Last address of the existing range (inclusive).
        existing_last: u64,
    },
    /// No range holds the given address.
    #[error("no device is mapped at {space} address {addr:#x}")]
    NotFound {
        /// Address space searched.
        space: Space,
        /// The address.
        addr: u64,
    },
}

/// Result of bus configuration.
pub type Result<T> = std::result::Result<T, Error>;
