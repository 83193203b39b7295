//! Guest memory for vmkit, shaped after QEMU's `memory.c`.
//!
//! An [`AddressSpace`] owns a tree of regions:
//! - **RAM** ([`AddressSpace::new_ram`]): anonymous host memory owned by the region;
//! - **ROM** ([`AddressSpace::new_rom`]): the same, read-only to the guest (the VMM can still
//!   write it, e.g. to load firmware);
//! - **I/O** ([`AddressSpace::new_io`]): MMIO with no backing; accesses go to the VMM's bus;
//! - **containers** ([`AddressSpace::new_container`]) holding subregions at offsets and
//!   priorities (higher priority wins where siblings overlap; among equals, the newest);
//! - **aliases** ([`AddressSpace::new_alias`]): a window of another region shown elsewhere
//!   (e.g. the top 128 KiB of the BIOS ROM also below 1 MiB).
//!
//! The tree is flattened into a **flat view**: sorted, non-overlapping [`Section`]s
//! ("flat ranges"), each saying what the guest sees there (RAM/ROM with host address, or I/O
//! with its owner). Holes are unassigned. Every topology change recomputes the view and sends
//! each registered [`MemoryListener`] the difference (`region_del` / `region_add` /
//! `region_nop`, `log_start` / `log_stop`) between `begin` and `commit`; transactions batch
//! many changes into one update. The KVM listener (in `vmkit-kvm`) turns those calls into
//! memory slots. I/O regions can carry ioeventfds ([`AddressSpace::add_eventfd`], QEMU's
//! `memory_region_add_eventfd`): listeners get `eventfd_add` / `eventfd_del` with the guest
//! address whenever such a region enters, leaves or moves in the view (a BAR reprogrammed),
//! in the same bracket, as QEMU's `address_space_update_ioeventfds`; the KVM listener turns
//! them into `KVM_IOEVENTFD`s. [`DirtyBitmap`] holds dirty-page logs in KVM's word layout, and
//! [`AddressSpace::guest_memory`] gives a vm-memory view of the RAM/ROM for loaders and
//! devices.
//!
//! ```
//! use vmkit_memory::{AddressSpace, RecordingListener, SectionKind};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! const MIB: u64 = 1 << 20;
//! let mut space = AddressSpace::new("system");
//! let root = space.root();
//! let ram = space.new_ram("pc.ram", 128 * MIB)?;
//! let bios = space.new_rom("pc.bios", 128 * 1024)?;
//! let uart = space.new_io("mmio-uart", 8)?;
//! space.add_subregion(root, 0, ram)?;
//! space.add_subregion(root, 4096 * MIB - 128 * 1024, bios)?;
//! // The I/O region overlays the start of a RAM page with a higher priority.
//! space.add_subregion_overlap(root, 0xa0000, uart, 1)?;
//!
//! // A new listener first receives the whole current view.
//! let recorder = RecordingListener::new();
//! space.register_listener(Box::new(recorder.clone()))?;
//! for event in recorder.take_summary() {
//!     println!("{event:?}");
//! }
//!
//! for s in space.flat_view() {
//!     println!("{:#012x} +{:#x} {:?} {}", s.guest_addr, s.size, s.kind, s.name);
//! }
//! let layout: Vec<_> = space
//!     .flat_view()
//!     .iter()
//!     .map(|s| (s.guest_addr, s.size, s.kind, s.name.to_string()))
//!     .collect();
//! assert_eq!(
//!     layout,
//!     vec![
//!         (0, 0xa0000, SectionKind::Ram, "pc.ram".to_string()),
//!         (0xa0000, 8, SectionKind::Io, "mmio-uart".to_string()),
//!         (0xa0008, 128 * MIB - 0xa0008, SectionKind::Ram, "pc.ram".to_string()),
//!         (4096 * MIB - 128 * 1024, 128 * 1024, SectionKind::Rom, "pc.bios".to_string()),
//!     ]
//! );
//!
//! // Firmware is loaded through the guest-memory snapshot, ROM included.
//! let snapshot = space.memory_snapshot();
//! snapshot.write_obj(0xeau8, GuestAddress(0xffff_fff0)).unwrap();
//! let mut byte = [0u8];
//! space.read_region(bios, 0x1fff0, &mut byte)?;
//! assert_eq!(byte[0], 0xea);
//! # Ok::<(), vmkit_memory::Error>(())
//! ```
//!
//! Not modelled: QEMU's ROM device mode (romd), IOMMU regions, RAM containers that also
//! have their own memory, resizing regions, more than one address space sharing regions, and
//! dirty tracking of writes made through the vm-memory snapshot (only the listeners' logs).

pub mod atomic;
mod dirty;
mod error;
mod eventfd;
mod flat;
mod listener;
mod region;
mod snapshot;
mod space;

pub use dirty::DirtyBitmap;
pub use error::{Error, ListenerError, ListenerResult, Result};
pub use eventfd::IoEventFd;
pub use flat::{FlatRange, Section, SectionKind};
pub use listener::{ListenerEvent, MemoryListener, RecordingListener};
pub use region::{RegionAccess, RegionId, RegionKind, PAGE_SIZE};
pub use snapshot::{BackingRef, GuestMemoryView};
pub use space::{AddressSpace, ListenerId};
