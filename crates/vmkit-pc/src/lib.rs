//! The `pc` machine of vmkit: memory map, firmware mapping, Linux boot and boot CPU state.
//!
//! This crate lays out a PC the way QEMU's `pc` machine does and puts a vCPU in the state a
//! guest expects at its first instruction. It builds on [`vmkit_memory::AddressSpace`] (the
//! region tree and flat view) and [`vmkit_kvm::Vcpu`]; a VMM registers a
//! [`vmkit_kvm::KvmMemoryListener`] on the address space so the RAM and ROM created here
//! become KVM memory slots.
//!
//! - [`layout`]: the memory map for a RAM size ([`MemoryLayout`]): RAM below the PCI hole at
//!   3 GiB (minus the legacy hole 0xa0000-0xfffff), the rest from 4 GiB; [`build_memory`]
//!   creates it in an address space; [`MemoryLayout::e820`] gives the matching [`E820Map`].
//! - [`firmware`]: [`map_firmware`] / [`load_firmware`] map a BIOS image as `-bios FILE`
//!   does: ROM ending at 4 GiB, its last 128 KiB also just below 1 MiB.
//! - [`boot`]: [`reset_vector`] (power-on state), [`real_mode_at`], [`protected_mode_32_at`]
//!   and [`long_mode_at`] (GDT + identity page tables in low RAM, documented in [`boot`]).
//!
//! # Example
//!
//! A 16 MiB machine booting a one-page "BIOS" whose reset vector writes to port 0x10 and
//! halts:
//!
//! ```
//! use std::sync::Arc;
//! use vmkit_kvm::{KvmMemoryListener, KvmSystem, VcpuExit};
//! use vmkit_memory::AddressSpace;
//! use vmkit_pc::{build_memory, configure_kvm_pages, map_firmware, reset_vector, E820Type};
//!
//! let mut space = AddressSpace::new("system");
//! let layout = build_memory(&mut space, 16 << 20)?;
//! assert_eq!(layout.e820().total(E820Type::Ram), layout.usable_ram());
//!
//! // The reset vector is the 16th byte from the image's end: mov al, 0x2a; out 0x10, al; hlt
//! let mut bios = vec![0xf4u8; 4096];
//! bios[4096 - 16..4096 - 11].copy_from_slice(&[0xb0, 0x2a, 0xe6, 0x10, 0xf4]);
//! let firmware = map_firmware(&mut space, &bios)?;
//! assert_eq!(firmware.layout.base, 0xffff_f000);
//!
//! let kvm = match KvmSystem::open() {
//!     Ok(kvm) => kvm,
//!     Err(e) => {
//!         // Documentation builds on machines without KVM still pass.
//!         eprintln!("skipping the KVM part of the example: {e}");
//!         return Ok(());
//!     }
//! };
//! let vm = Arc::new(kvm.create_vm()?);
//! configure_kvm_pages(&vm)?;
//! // SAFETY: the listener is only driven by this address space.
//! let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), u32::MAX) };
//! space.register_listener(Box::new(listener))?;
//! let mut vcpu = vm.create_vcpu(0)?;
//! reset_vector(&vcpu)?;
//! match vcpu.run()? {
//!     VcpuExit::IoOut { port, data, .. } => assert_eq!((port, data[0]), (0x10, 0x2a)),
//!     other => panic!("unexpected exit {other:?}"),
//! }
//! assert!(matches!(vcpu.run()?, VcpuExit::Hlt));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//! - [`linux`]: Linux boot ([`LinuxBoot`], [`load_linux`]): bzImage or ELF vmlinux, initrd
//!   and command line as the x86 boot protocol (64-bit entry, zero page) or PVH describes
//!   them; the bzImage optionally decompressed on the host ([`KernelDecompress::Host`]).
//! - [`machine`]: the whole `pc` machine ([`PcMachine::build`]): memory, the boot source
//!   ([`BootSource`]), vCPUs with vmkit-cpu's CPUID ([`CpuModel`]) and boot MSRs, the MP table
//!   for Linux, and the ISA devices in either interrupt model.
//!
//! - [`chipset`]: QEMU's pc chipset on PCI (i440FX, PIIX3, PIIX3 IDE, PIIX4 PM) and fw_cfg;
//!   [`pam`]: the i440FX's shadow-RAM windows in the region tree; [`firmware_cfg`]: what
//!   fw_cfg tells firmware (e820, ACPI tables and their table-loader).

// The one unsafe block registers the KVM memory listener (see machine.rs).
#![deny(unsafe_code)]

pub mod boot;
pub mod chipset;
mod e820;
mod error;
pub mod firmware;
pub mod firmware_cfg;
pub mod hpet;
pub mod image_file;
pub mod irq;
pub mod layout;
pub mod linux;
pub mod machine;
pub mod pam;
pub mod pci_devices;

pub use boot::{
    long_mode_at, long_mode_at_with, protected_mode_32_at, real_mode_at, real_mode_segment_at,
    reset_vector, reset_vector_with_signature, IdentityMap,
};
pub use e820::{E820Entry, E820Map, E820Type};
pub use error::{Error, Result};
pub use firmware::{load_firmware, map_firmware, Firmware, FirmwareLayout};
pub use irq::KernelIrqRouter;
pub use layout::{build_memory, configure_kvm_pages, MemoryLayout, RamRange, RamRegions};
pub use linux::{
    load_linux, set_linux_entry, FirmwareLinux, KernelDecompress, KernelFormat, LinuxBoot,
    LinuxEntry, LoadedLinux,
};
pub use machine::{BootSource, FlatMode, IrqchipMode, PcConfig, PcMachine};
/// The `-cpu` model [`PcConfig::cpu`] takes (from vmkit-cpu).
pub use vmkit_cpu::CpuModel;
