//! The KVM ioeventfd listener: the ioeventfds of an address space's flat view become
//! `KVM_IOEVENTFD`s (QEMU's `kvm_mem_ioeventfd_add` / `kvm_io_ioeventfd_add`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use kvm_ioctls::IoEventAddress;
use vmkit_memory::{IoEventFd, ListenerError, ListenerResult, MemoryListener};

use crate::vm::Vm;

/// Which KVM bus an address space's ioeventfds go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoeventfdSpace {
    /// Guest physical memory (MMIO writes).
    Mmio,
    /// The 16-bit port space (`out` instructions; `KVM_IOEVENTFD_FLAG_PIO`).
    Pio,
}

/// Keeps a VM's ioeventfds equal to those an address space's flat view reaches.
///
/// Register one on the memory address space ([`IoeventfdSpace::Mmio`]) and one on the port
/// address space ([`IoeventfdSpace::Pio`]), as QEMU's `kvm_memory_listener` and
/// `kvm_io_listener`. Each `eventfd_add` is a `KVM_IOEVENTFD` with the ioeventfd's address,
/// length (0 = any, KVM's no-length ioeventfd) and datamatch
/// ([`Vm::register_ioeventfd_sized`]); `eventfd_del` deassigns it. KVM refusing one (a
/// second ioeventfd on the same address, length and datamatch, or a port above 0xFFFF) is
/// refused to the address space, which undoes the change. Dropping the listener deassigns
/// all it holds.
#[derive(Debug)]
pub struct KvmIoeventfdListener {
    vm: Arc<Vm>,
    space: IoeventfdSpace,
    registered: Vec<IoEventFd>,
    count: Arc<AtomicUsize>,
}

impl KvmIoeventfdListener {
    /// A listener registering ioeventfds of one address space on `vm`'s `space` bus.
    pub fn new(vm: Arc<Vm>, space: IoeventfdSpace) -> Self {
        Self {
            vm,
            space,
            registered: Vec::new(),
            count: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A counter of the ioeventfds KVM holds for this listener, readable after the listener
    /// went into its address space.
    pub fn count_handle(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.count)
    }

    /// The ioeventfds registered now.
    pub fn registered(&self) -> &[IoEventFd] {
        &self.registered
    }

    fn address(&self, ev: &IoEventFd) -> Result<IoEventAddress, ListenerError> {
        match self.space {
            IoeventfdSpace::Mmio => Ok(IoEventAddress::Mmio(ev.guest_addr)),
            IoeventfdSpace::Pio => {
                let port = u16::try_from(ev.guest_addr)
                    .ok()
                    .filter(|p| u64::from(*p) + ev.size.max(1) <= 0x1_0000);
                port.map(|p| IoEventAddress::Pio(u64::from(p)))
                    .ok_or_else(|| {
                        ListenerError::new(format!(
                            "ioeventfd of {} at {:#x} (size {}) is outside the 16-bit port space",
                            ev.name, ev.guest_addr, ev.size
                        ))
                    })
            }
        }
    }

    fn len(ev: &IoEventFd) -> Result<u32, ListenerError> {
        u32::try_from(ev.size)
            .map_err(|_| ListenerError::new(format!("ioeventfd size {} is too large", ev.size)))
    }
}

impl MemoryListener for KvmIoeventfdListener {
    fn name(&self) -> &str {
        match self.space {
            IoeventfdSpace::Mmio => "kvm ioeventfd (mmio)",
            IoeventfdSpace::Pio => "kvm ioeventfd (pio)",
        }
    }

    fn eventfd_add(&mut self, ev: &IoEventFd) -> ListenerResult {
        let addr = self.address(ev)?;
        self.vm
            .register_ioeventfd_sized(&ev.eventfd, addr, Self::len(ev)?, ev.datamatch)
            .map_err(|e| {
                ListenerError::with_source(
                    format!(
                        "registering the ioeventfd of {} at {:#x} (size {}, datamatch {:?})",
                        ev.name, ev.guest_addr, ev.size, ev.datamatch
                    ),
                    e,
                )
            })?;
        self.registered.push(ev.clone());
        self.count.store(self.registered.len(), Ordering::Release);
        Ok(())
    }

    fn eventfd_del(&mut self, ev: &IoEventFd) -> ListenerResult {
        let Some(pos) = self.registered.iter().position(|r| r == ev) else {
            return Ok(());
        };
        let addr = self.address(ev)?;
        self.vm
            .unregister_ioeventfd_sized(&ev.eventfd, addr, Self::len(ev)?, ev.datamatch)
            .map_err(|e| {
                ListenerError::with_source(
                    format!(
                        "removing the ioeventfd of {} at {:#x}",
                        ev.name, ev.guest_addr
                    ),
                    e,
                )
            })?;
        self.registered.remove(pos);
        self.count.store(self.registered.len(), Ordering::Release);
        Ok(())
    }
}

impl Drop for KvmIoeventfdListener {
    fn drop(&mut self) {
        for ev in std::mem::take(&mut self.registered) {
            if let (Ok(addr), Ok(len)) = (self.address(&ev), Self::len(&ev)) {
                let _ = self
                    .vm
                    .unregister_ioeventfd_sized(&ev.eventfd, addr, len, ev.datamatch);
            }
        }
        self.count.store(0, Ordering::Release);
    }
}
