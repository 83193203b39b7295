//! The VM layer: one KVM virtual machine (QEMU's `kvm_state->vmfd`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Error, Result};
use crate::vcpu::Vcpu;

/// Host and guest page size KVM slots are aligned to.
pub const PAGE_SIZE: u64 = 4096;

/// Where QEMU puts the three-page TSS KVM needs on Intel hosts: inside the PCI hole, below
/// the 16 MiB that a firmware image ending at 4 GiB may occupy. Must not overlap guest RAM,
/// ROM or MMIO.
pub const DEFAULT_TSS_ADDRESS: u64 = 0xfeff_d000;
/// The EPT identity-map page, just below the TSS (as QEMU).
pub const DEFAULT_IDENTITY_MAP_ADDRESS: u64 = 0xfeff_c000;

/// Flags of a memory slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SlotFlags {
    /// KVM records guest writes in a dirty bitmap (KVM_MEM_LOG_DIRTY_PAGES).
    pub log_dirty: bool,
    /// Guest writes exit to userspace as MMIO writes (KVM_MEM_READONLY): how ROM is done.
    pub readonly: bool,
}

impl SlotFlags {
    fn bits(self) -> u32 {
        let mut bits = 0;
        if self.log_dirty {
            bits |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        if self.readonly {
            bits |= KVM_MEM_READONLY;
        }
        bits
    }
}

/// One KVM memory slot: guest physical range backed by host virtual memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemorySlot {
    /// Slot number, below [`Vm::max_memslots`].
    pub slot: u32,
    /// First guest physical address.
    pub guest_addr: u64,
    /// Length in bytes, a multiple of [`PAGE_SIZE`].
    pub size: u64,
    /// Host virtual address of the first byte.
    pub host_addr: u64,
    /// Dirty logging and read-only.
    pub flags: SlotFlags,
}

impl MemorySlot {
    fn guest_end(&self) -> u64 {
        self.guest_addr + self.size
    }
}

/// A KVM virtual machine: memory slots, the in-kernel interrupt controllers, interrupt lines,
/// irqfds and ioeventfds, and vCPU creation.
///
/// All methods take `&self`; a `Vm` may be shared between threads (e.g. in an `Arc`).
#[derive(Debug)]
pub struct Vm {
    fd: VmFd,
    max_memslots: usize,
    readonly_mem: bool,
    slots: Mutex<BTreeMap<u32, MemorySlot>>,
}

impl Vm {
    pub(crate) fn new(fd: VmFd, max_memslots: usize, readonly_mem: bool) -> Self {
        Self {
            fd,
            max_memslots,
            readonly_mem,
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// How many memory slots this VM can hold.
    pub fn max_memslots(&self) -> usize {
        self.max_memslots
    }

    /// Whether read-only slots (ROM) are supported.
    pub fn supports_readonly_memory(&self) -> bool {
        self.readonly_mem
    }

    /// The slots currently installed, by slot number.
    pub fn memory_slots(&self) -> Vec<MemorySlot> {
        self.lock_slots().values().copied().collect()
    }

    fn lock_slots(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, MemorySlot>> {
        // The map holds plain data; a panic elsewhere cannot leave it half-updated.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn validate(&self, slot: &MemorySlot, installed: &BTreeMap<u32, MemorySlot>) -> Result<()> {
        let refuse = |reason: String| Error::InvalidSlot {
            slot: slot.slot,
            reason,
        };
        if slot.slot as usize >= self.max_memslots {
            return Err(refuse(format!(
                "KVM allows slots 0..{} on this host",
                self.max_memslots
            )));
        }
        if slot.size == 0 {
            return Err(refuse("size is zero".into()));
        }
        for (what, value) in [
            ("guest address", slot.guest_addr),
            ("size", slot.size),
            ("host address", slot.host_addr),
        ] {
            if value % PAGE_SIZE != 0 {
                return Err(refuse(format!(
                    "{what} {value:#x} is not a multiple of {PAGE_SIZE:#x}"
                )));
            }
        }
        if slot.guest_addr.checked_add(slot.size).is_none()
            || slot.host_addr.checked_add(slot.size).is_none()
        {
            return Err(refuse(format!(
                "range {:#x}+{:#x} overflows the address space",
                slot.guest_addr, slot.size
            )));
        }
        if slot.flags.readonly && !self.readonly_mem {
            return Err(refuse("this host has no KVM_CAP_READONLY_MEM".into()));
        }
        if let Some(existing) = installed.values().find(|s| {
            s.slot != slot.slot
                && s.guest_addr < slot.guest_end()
                && slot.guest_addr < s.guest_end()
        }) {
            return Err(refuse(format!(
                "guest range {:#x}..{:#x} overlaps slot {} at {:#x}..{:#x}",
                slot.guest_addr,
                slot.guest_end(),
                existing.slot,
                existing.guest_addr,
                existing.guest_end()
            )));
        }
        Ok(())
    }

    /// Installs or replaces memory slot `slot.slot`.
    ///
    /// KVM cannot resize a slot in place: replacing an installed slot with a different size
    /// removes it first (see [`Vm::resize_memory_slot`]); replacing with the same range only
    /// changes flags (e.g. turns dirty logging on).
    ///
    /// # Safety
    /// `slot.host_addr .. slot.host_addr + slot.size` must be memory mapped in this process,
    /// and stay mapped until the slot is removed or the VM is dropped; the guest reads and
    /// writes it behind Rust's back.
    pub unsafe fn set_memory_slot(&self, slot: MemorySlot) -> Result<()> {
        let mut installed = self.lock_slots();
        self.validate(&slot, &installed)?;
        if let Some(old) = installed.get(&slot.slot).copied() {
            if old.guest_addr != slot.guest_addr || old.size != slot.size {
                self.delete_slot_locked(&mut installed, old.slot)?;
            }
        }
        let region = kvm_userspace_memory_region {
            slot: slot.slot,
            flags: slot.flags.bits(),
            guest_phys_addr: slot.guest_addr,
            memory_size: slot.size,
            userspace_addr: slot.host_addr,
        };
        // SAFETY: the caller guarantees the host range stays mapped while the slot exists;
        // the range was checked for alignment, overflow and overlap above.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION"))?;
        installed.insert(slot.slot, slot);
        Ok(())
    }

    /// Replaces a slot with a new size (KVM's only way: delete, then add).
    ///
    /// # Safety
    /// As for [`Vm::set_memory_slot`].
    pub unsafe fn resize_memory_slot(&self, slot: MemorySlot) -> Result<()> {
        self.remove_memory_slot(slot.slot)?;
        // SAFETY: forwarded from the caller.
        unsafe { self.set_memory_slot(slot) }
    }

    /// Removes a slot; the guest then sees MMIO (unassigned) at its range.
    pub fn remove_memory_slot(&self, slot: u32) -> Result<()> {
        let mut installed = self.lock_slots();
        if !installed.contains_key(&slot) {
            return Err(Error::InvalidSlot {
                slot,
                reason: "no such slot is installed".into(),
            });
        }
        self.delete_slot_locked(&mut installed, slot)
    }

    fn delete_slot_locked(
        &self,
        installed: &mut BTreeMap<u32, MemorySlot>,
        slot: u32,
    ) -> Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: installed.get(&slot).map_or(0, |s| s.guest_addr),
            memory_size: 0,
            userspace_addr: 0,
        };
        // SAFETY: a zero-sized region deletes the slot; KVM touches no host memory for it.
        unsafe { self.fd.set_user_memory_region(region) }
            .map_err(Error::ioctl("KVM_SET_USER_MEMORY_REGION (delete)"))?;
        installed.remove(&slot);
        Ok(())
    }

    /// Fetches and clears the dirty bitmap of a slot that has [`SlotFlags::log_dirty`]: one bit
    /// per 4 KiB page, in u64 words, bit `n % 64` of word `n / 64` for page `n` of the slot.
    pub fn dirty_log(&self, slot: u32) -> Result<Vec<u64>> {
        let installed = self.lock_slots();
        let Some(info) = installed.get(&slot) else {
            return Err(Error::InvalidSlot {
                slot,
                reason: "no such slot is installed".into(),
            });
        };
        if !info.flags.log_dirty {
            return Err(Error::InvalidSlot {
                slot,
                reason: "dirty logging is not enabled on it".into(),
            });
        }
        let size = usize::try_from(info.size).map_err(|_| Error::InvalidSlot {
            slot,
            reason: "too large for this host".into(),
        })?;
        self.fd
            .get_dirty_log(slot, size)
            .map_err(Error::ioctl("KVM_GET_DIRTY_LOG"))
    }

    /// Creates the in-kernel PIC pair, IOAPIC and per-vCPU LAPICs (KVM_CREATE_IRQCHIP).
    /// Call before creating vCPUs.
    pub fn create_irqchip(&self) -> Result<()> {
        self.fd
            .create_irq_chip()
            .map_err(Error::ioctl("KVM_CREATE_IRQCHIP"))
    }

    /// Creates the in-kernel i8254 (KVM_CREATE_PIT2) with a dummy speaker port, as QEMU does.
    pub fn create_pit2(&self) -> Result<()> {
        let config = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(config)
            .map_err(Error::ioctl("KVM_CREATE_PIT2"))
    }

    /// Sets the three-page TSS region KVM needs on Intel hosts.
    pub fn set_tss_address(&self, addr: u64) -> Result<()> {
        let addr = usize::try_from(addr).map_err(|_| Error::InvalidSlot {
            slot: u32::MAX,
            reason: "TSS address does not fit this host".into(),
        })?;
        self.fd
            .set_tss_address(addr)
            .map_err(Error::ioctl("KVM_SET_TSS_ADDR"))
    }

    /// Sets the identity-map page KVM needs for real mode on EPT hosts.
    pub fn set_identity_map_address(&self, addr: u64) -> Result<()> {
        self.fd
            .set_identity_map_address(addr)
            .map_err(Error::ioctl("KVM_SET_IDENTITY_MAP_ADDR"))
    }

    /// Drives an interrupt input of the in-kernel irqchip (GSI `irq`) high or low.
    pub fn set_irq_line(&self, irq: u32, high: bool) -> Result<()> {
        self.fd
            .set_irq_line(irq, high)
            .map_err(Error::ioctl("KVM_IRQ_LINE"))
    }

    /// Makes a write to `fd` inject an edge on GSI `gsi` without leaving the kernel.
    pub fn register_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .register_irqfd(fd, gsi)
            .map_err(Error::ioctl("KVM_IRQFD"))
    }

    /// Undoes [`Vm::register_irqfd`].
    pub fn unregister_irqfd(&self, fd: &EventFd, gsi: u32) -> Result<()> {
        self.fd
            .unregister_irqfd(fd, gsi)
            .map_err(Error::ioctl("KVM_IRQFD (deassign)"))
    }

    /// Makes guest writes to `addr` (of any value, or only of `datamatch` when given) signal
    /// `fd` instead of exiting to userspace.
    pub fn register_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<()> {
        match datamatch {
            Some(value) => self.fd.register_ioevent(fd, &addr, value),
            None => self.fd.register_ioevent(fd, &addr, NoDatamatch),
        }
        .map_err(Error::ioctl("KVM_IOEVENTFD"))
    }

    /// Makes guest writes of `len` bytes at `addr` (a port with [`IoEventAddress::Pio`],
    /// which needs `KVM_CAP_COALESCED_PIO`) go to the VM's coalesced ring instead of exiting
    /// (`KVM_REGISTER_COALESCED_MMIO`; see [`crate::CoalescedRing`], which must be drained).
    pub fn register_coalesced(&self, addr: IoEventAddress, len: u32) -> Result<()> {
        self.fd
            .register_coalesced_mmio(addr, len)
            .map_err(Error::ioctl("KVM_REGISTER_COALESCED_MMIO"))
    }

    /// Undoes [`Vm::register_coalesced`].
    pub fn unregister_coalesced(&self, addr: IoEventAddress, len: u32) -> Result<()> {
        self.fd
            .unregister_coalesced_mmio(addr, len)
            .map_err(Error::ioctl("KVM_UNREGISTER_COALESCED_MMIO"))
    }

    /// Undoes [`Vm::register_ioeventfd`] (the same `datamatch` must be given).
    pub fn unregister_ioeventfd(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<()> {
        match datamatch {
            Some(value) => self.fd.unregister_ioevent(fd, &addr, value),
            None => self.fd.unregister_ioevent(fd, &addr, NoDatamatch),
        }
        .map_err(Error::ioctl("KVM_IOEVENTFD (deassign)"))
    }

    /// Makes guest writes of `len` bytes (1, 2, 4 or 8; 0 = any length) to `addr`, and only
    /// of value `datamatch` when given, signal `fd` without an exit (`KVM_IOEVENTFD`), as
    /// QEMU's `kvm_set_ioeventfd_mmio` / `kvm_set_ioeventfd_pio`. Length 0 is KVM's
    /// no-length ioeventfd (`KVM_CAP_IOEVENTFD_ANY_LENGTH`), which for MMIO also goes on
    /// KVM's fast MMIO bus (the virtio modern doorbell); it cannot have a datamatch. The
    /// datamatch cases and length 0 go through kvm-ioctls' `register_ioevent` with a
    /// datamatch type of the access's width.
    pub fn register_ioeventfd_sized(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        len: u32,
        datamatch: Option<u64>,
    ) -> Result<()> {
        self.ioeventfd_sized(fd, addr, len, datamatch, false)
    }

    /// Undoes [`Vm::register_ioeventfd_sized`] (the same `len` and `datamatch`).
    pub fn unregister_ioeventfd_sized(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        len: u32,
        datamatch: Option<u64>,
    ) -> Result<()> {
        self.ioeventfd_sized(fd, addr, len, datamatch, true)
    }

    fn ioeventfd_sized(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        len: u32,
        datamatch: Option<u64>,
        deassign: bool,
    ) -> Result<()> {
        let op = if deassign {
            "KVM_IOEVENTFD (deassign)"
        } else {
            "KVM_IOEVENTFD"
        };
        let fd_call = &self.fd;
        macro_rules! call {
            ($value:expr) => {
                if deassign {
                    fd_call.unregister_ioevent(fd, &addr, $value)
                } else {
                    fd_call.register_ioevent(fd, &addr, $value)
                }
            };
        }
        let fits = |bits: u32| datamatch.is_none_or(|v| bits == 64 || v >> bits == 0);
        let result = match (len, datamatch) {
            (0, None) => call!(NoDatamatch),
            (1, Some(v)) if fits(8) => call!(v as u8),
            (2, Some(v)) if fits(16) => call!(v as u16),
            (4, Some(v)) if fits(32) => call!(v as u32),
            (8, Some(v)) => call!(v),
            (1 | 2 | 4 | 8, None) => return self.ioeventfd_raw(fd, addr, len, deassign, op),
            _ => {
                return Err(Error::InvalidIoeventfd(format!(
                    "length {len} with datamatch {datamatch:?}: the length must be 0 (any,                      without datamatch), 1, 2, 4 or 8 and the datamatch must fit in it"
                )))
            }
        };
        result.map_err(Error::ioctl(op))
    }

    /// A sized ioeventfd without datamatch, which kvm-ioctls cannot express (its length is
    /// the datamatch type's size).
    fn ioeventfd_raw(
        &self,
        fd: &EventFd,
        addr: IoEventAddress,
        len: u32,
        deassign: bool,
        op: &'static str,
    ) -> Result<()> {
        use std::os::fd::AsRawFd;
        vmm_sys_util::ioctl_iow_nr!(
            KVM_IOEVENTFD,
            kvm_bindings::KVMIO,
            0x79,
            kvm_bindings::kvm_ioeventfd
        );
        let mut flags = 0;
        if deassign {
            flags |= 1 << kvm_bindings::kvm_ioeventfd_flag_nr_deassign;
        }
        let address = match addr {
            IoEventAddress::Pio(port) => {
                flags |= 1 << kvm_bindings::kvm_ioeventfd_flag_nr_pio;
                port
            }
            IoEventAddress::Mmio(address) => address,
        };
        let request = kvm_bindings::kvm_ioeventfd {
            addr: address,
            len,
            fd: fd.as_raw_fd(),
            flags,
            ..Default::default()
        };
        // SAFETY: the fd is this VM's; KVM reads exactly one `kvm_ioeventfd`, which lives
        // across the call; the result is checked.
        let ret =
            unsafe { vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, KVM_IOEVENTFD(), &request) };
        if ret == 0 {
            Ok(())
        } else {
            Err(Error::Ioctl {
                op,
                source: vmm_sys_util::errno::Error::last(),
            })
        }
    }

    /// Replaces the VM's whole GSI routing table (`KVM_SET_GSI_ROUTING`); see
    /// [`GsiRouting`](crate::GsiRouting), which keeps the irqchip routes.
    pub fn set_gsi_routing(&self, entries: &[kvm_bindings::kvm_irq_routing_entry]) -> Result<()> {
        let routing = kvm_bindings::KvmIrqRouting::from_entries(entries).map_err(|_| {
            Error::InvalidRoute(format!(
                "{} routes are more than KVM's table holds ({})",
                entries.len(),
                kvm_bindings::KVM_MAX_IRQ_ROUTES
            ))
        })?;
        self.fd
            .set_gsi_routing(&routing)
            .map_err(Error::ioctl("KVM_SET_GSI_ROUTING"))
    }

    /// Creates vCPU `id` with its `kvm_run` mapping.
    pub fn create_vcpu(&self, id: u64) -> Result<Vcpu> {
        let fd = self
            .fd
            .create_vcpu(id)
            .map_err(Error::ioctl("KVM_CREATE_VCPU"))?;
        Ok(Vcpu::new(fd, id, self.fd.run_size()))
    }

    /// The underlying kvm-ioctls handle, for ioctls this crate does not wrap.
    pub fn as_raw(&self) -> &VmFd {
        &self.fd
    }
}
