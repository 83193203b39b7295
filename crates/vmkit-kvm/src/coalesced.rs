//! Coalesced MMIO/PIO (QEMU's `memory_region_add_coalescing` and
//! `kvm_flush_coalesced_mmio_buffer`).
//!
//! A zone registered with [`Vm::register_coalesced`](crate::Vm::register_coalesced) makes KVM
//! append guest *writes* there to a ring page shared by the whole VM (mapped from any vCPU fd at
//! `KVM_COALESCED_MMIO_PAGE_OFFSET`) instead of exiting to userspace. Only safe for write-only
//! registers whose writes have no immediate side effect the guest waits for (port 0x80, the
//! POST port). When the ring is full KVM exits as usual, so nothing is lost as long as the
//! VMM drains the ring, in order, before it handles any other exit: a later read of the same
//! device then sees every earlier write. [`CoalescedRing::drain`] does that; it is safe to call
//! from every vCPU thread at once (one lock, taken only when the ring is not empty).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_ring, KVM_COALESCED_MMIO_PAGE_OFFSET};

use crate::error::{Error, Result};
use crate::vcpu::Vcpu;

/// One write KVM put in the ring instead of exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescedWrite {
    /// The port (when `pio`) or guest-physical address written.
    pub addr: u64,
    /// The bytes written (1 to 8).
    pub len: usize,
    /// A port write (`out`), not MMIO.
    pub pio: bool,
    /// The value, little-endian, `len` bytes of it meaningful.
    pub data: [u8; 8],
}

impl CoalescedWrite {
    /// The bytes written.
    pub fn bytes(&self) -> &[u8] {
        &self.data[..self.len.min(8)]
    }
}

/// The VM's coalesced-write ring page, shared by every vCPU thread.
#[derive(Debug)]
pub struct CoalescedRing {
    ring: NonNull<kvm_coalesced_mmio_ring>,
    page_size: usize,
    entries: u32,
    lock: Mutex<()>,
}

// SAFETY: the mapping is owned by this value and unmapped only on drop; the consumer index is
// written only under `lock`, and the kernel is the only producer.
unsafe impl Send for CoalescedRing {}
// SAFETY: as above: all shared access goes through atomics or under `lock`.
unsafe impl Sync for CoalescedRing {}

impl CoalescedRing {
    /// Maps the ring page through `vcpu`'s fd (needs `KVM_CAP_COALESCED_MMIO`). One mapping
    /// serves every vCPU of the VM: the page is per VM.
    pub fn map(vcpu: &Vcpu) -> Result<Self> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_size = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .map_err(|_| Error::MalformedExit("page size"))?;
        let offset = libc::off_t::try_from(KVM_COALESCED_MMIO_PAGE_OFFSET as usize * page_size)
            .map_err(|_| Error::MalformedExit("coalesced ring offset"))?;
        // SAFETY: a fresh shared mapping of one page of the vCPU fd at the offset KVM documents
        // for the coalesced ring; the result is checked before use.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(Error::Ioctl {
                op: "mmap of the coalesced MMIO ring",
                source: vmm_sys_util::errno::Error::last(),
            });
        }
        let header = std::mem::size_of::<kvm_coalesced_mmio_ring>();
        let entry = std::mem::size_of::<kvm_coalesced_mmio>();
        // As the kernel's KVM_COALESCED_MMIO_MAX.
        let entries = u32::try_from((page_size - header) / entry).unwrap_or(u32::MAX);
        Ok(Self {
            ring: NonNull::new(addr.cast()).ok_or(Error::MalformedExit("null ring mapping"))?,
            page_size,
            entries,
            lock: Mutex::new(()),
        })
    }

    fn first(&self) -> &AtomicU32 {
        // SAFETY: `first` is an aligned u32 inside the live mapping; the kernel reads it and
        // only this value writes it, so treating it as an atomic is sound.
        unsafe { &*std::ptr::addr_of_mut!((*self.ring.as_ptr()).first).cast::<AtomicU32>() }
    }

    fn last(&self) -> &AtomicU32 {
        // SAFETY: `last` is an aligned u32 inside the live mapping, written by the kernel.
        unsafe { &*std::ptr::addr_of_mut!((*self.ring.as_ptr()).last).cast::<AtomicU32>() }
    }

    /// Whether KVM has queued no write (one pair of loads, no lock).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.first().load(Ordering::Relaxed) == self.last().load(Ordering::Acquire)
    }

    /// Hands every queued write to `deliver`, oldest first, and frees its slot; returns how
    /// many. Entries with indices outside the ring (a corrupt page) end the drain.
    pub fn drain(&self, mut deliver: impl FnMut(&CoalescedWrite)) -> usize {
        if self.is_empty() {
            return 0;
        }
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut count = 0;
        loop {
            let first = self.first().load(Ordering::Relaxed);
            // Acquire: the entry's contents were written before the kernel published `last`.
            let last = self.last().load(Ordering::Acquire);
            if first == last || first >= self.entries {
                return count;
            }
            // SAFETY: `first < entries`, so the entry lies inside the mapped page; it is plain
            // integers the kernel finished writing before it moved `last` past it.
            let raw = unsafe {
                (*self.ring.as_ptr())
                    .coalesced_mmio
                    .as_ptr()
                    .add(first as usize)
                    .read_volatile()
            };
            // SAFETY: the union holds `pio` (u32) or padding; both are plain integers.
            let pio = unsafe { raw.__bindgen_anon_1.pio } != 0;
            let write = CoalescedWrite {
                addr: raw.phys_addr,
                len: (raw.len as usize).min(8),
                pio,
                data: raw.data,
            };
            deliver(&write);
            self.first()
                .store((first + 1) % self.entries, Ordering::Release);
            count += 1;
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: the page was mapped in `map` with this size and is not used after drop.
        unsafe {
            libc::munmap(self.ring.as_ptr().cast(), self.page_size);
        }
    }
}
