//! KVM handle layers for vmkit, shaped after QEMU-KVM.
//!
//! QEMU talks to KVM through three file descriptors: the system (`/dev/kvm`, `KVMState`), the
//! VM (`vmfd`) and one per vCPU (`cpu->kvm_fd` with its `kvm_run` mapping). This crate gives
//! each its own type over [kvm-ioctls](https://docs.rs/kvm-ioctls):
//!
//! - [`KvmSystem`]: opens `/dev/kvm`, checks the API version and required capabilities
//!   (naming every missing one), lists supported CPUID leaves and MSRs, creates VMs.
//! - [`Vm`]: memory slots with validation (alignment, overlap, slot limits, read-only, dirty
//!   logging), the in-kernel irqchip and PIT, IRQ lines, irqfds and ioeventfds, vCPUs.
//! - [`Vcpu`]: register state, `run()` returning the crate's own allocation-free
//!   [`VcpuExit`], interrupt injection and the interrupt window for userspace interrupt
//!   controllers, and a [`VcpuKicker`] that other threads use to force the vCPU out of
//!   `KVM_RUN` (see the [`kick`] module for why that never loses a kick).
//! - [`KvmMemoryListener`]: a [`vmkit_memory::MemoryListener`] that keeps the VM's slots equal
//!   to the RAM and ROM of a `vmkit_memory::AddressSpace` flat view.
//! - [`KvmIoeventfdListener`]: the ioeventfds of an address space (memory or port) become
//!   `KVM_IOEVENTFD`s, with datamatch and KVM's no-length MMIO ioeventfd, and follow their
//!   regions when the guest moves a BAR.
//! - [`GsiRouting`]: `KVM_SET_GSI_ROUTING` keeping KVM's default PIC/IOAPIC routes, with MSI
//!   routes added and updated per vector; irqfds ([`Vm::register_irqfd`]) on those GSIs
//!   inject MSIs from device threads.
//!
//! # Example
//!
//! A real-mode guest that writes a byte to port 0x10 and halts:
//!
//! ```
//! use vmkit_kvm::{KvmSystem, MemorySlot, SlotFlags, VcpuExit};
//!
//! let kvm = match KvmSystem::open() {
//!     Ok(kvm) => kvm,
//!     Err(e) => {
//!         // Documentation builds on machines without KVM still pass.
//!         eprintln!("skipping the example: {e}");
//!         return Ok(());
//!     }
//! };
//! let vm = kvm.create_vm()?;
//!
//! // One page of guest RAM at guest physical 0x1000 holding `mov al, 0x2a; out 0x10, al; hlt`.
//! let size = 0x1000;
//! // SAFETY: a fresh anonymous private mapping; checked for failure below.
//! let host = unsafe {
//!     libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE,
//!                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
//! };
//! assert_ne!(host, libc::MAP_FAILED);
//! let code = [0xb0, 0x2a, 0xe6, 0x10, 0xf4];
//! // SAFETY: the mapping is `size` bytes long and writable.
//! unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), host.cast::<u8>(), code.len()) };
//! let slot = MemorySlot { slot: 0, guest_addr: 0x1000, size: size as u64,
//!                         host_addr: host as u64, flags: SlotFlags::default() };
//! // SAFETY: the mapping outlives the VM (it is never unmapped in this example).
//! unsafe { vm.set_memory_slot(slot)? };
//!
//! let mut vcpu = vm.create_vcpu(0)?;
//! let mut sregs = vcpu.sregs()?;
//! sregs.cs.base = 0;
//! sregs.cs.selector = 0;
//! vcpu.set_sregs(&sregs)?;
//! let mut regs = vcpu.regs()?;
//! regs.rip = 0x1000;
//! regs.rflags = 2;
//! vcpu.set_regs(&regs)?;
//!
//! match vcpu.run()? {
//!     VcpuExit::IoOut { port, size, data, .. } => {
//!         assert_eq!((port, size, data), (0x10, 1, &[0x2a][..]));
//!     }
//!     other => panic!("unexpected exit {other:?}"),
//! }
//! assert!(matches!(vcpu.run()?, VcpuExit::Hlt));
//! # Ok::<(), vmkit_kvm::Error>(())
//! ```

mod coalesced;
mod error;
mod exit;
mod interrupts;
mod ioeventfd;
pub mod kick;
mod listener;
mod routing;
pub mod state;
mod system;
mod vcpu;
mod vm;

pub use coalesced::{CoalescedRing, CoalescedWrite};
pub use error::{Error, Result};
pub use exit::{ExitKind, InternalError, SystemEvent, SystemEventKind, VcpuExit};
pub use interrupts::{InterruptController, InterruptWindow};
pub use ioeventfd::{IoeventfdSpace, KvmIoeventfdListener};
pub use kick::{default_kick_signal, set_kick_signal, VcpuKicker};
pub use listener::KvmMemoryListener;
pub use routing::{GsiRouting, MsiRoute, IOAPIC_PINS, PIC_PINS};
pub use system::{KvmSystem, BASE_CAPABILITIES, KVM_DEVICE_PATH};
pub use vcpu::Vcpu;
pub use vm::{
    MemorySlot, SlotFlags, Vm, DEFAULT_IDENTITY_MAP_ADDRESS, DEFAULT_TSS_ADDRESS, PAGE_SIZE,
};

/// Re-exported so users need not depend on kvm-ioctls / kvm-bindings for common types.
pub use kvm_bindings;
/// Re-exported for [`kvm_ioctls::Cap`] and [`kvm_ioctls::IoEventAddress`].
pub use kvm_ioctls;
