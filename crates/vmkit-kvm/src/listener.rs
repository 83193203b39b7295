//! The KVM memory listener: an address space's RAM and ROM sections become KVM memory slots
//! (QEMU's `kvm_memory_listener`).

use std::collections::BTreeMap;
use std::sync::Arc;

use vmkit_memory::{
    DirtyBitmap, ListenerError, ListenerResult, MemoryListener, Section, SectionKind,
};

use crate::vm::{MemorySlot, SlotFlags, Vm, PAGE_SIZE};

/// Keeps a VM's memory slots equal to the RAM and ROM of an address space's flat view.
///
/// - `region_add` of a RAM/ROM section installs a slot (ROM read-only, dirty logging as the
///   section says) using the lowest free slot number, so numbers are reused; I/O sections
///   get no slot (their accesses exit as MMIO).
/// - `region_del` removes the slot. A split, shrink or overlap arrives from the address space
///   as deletions of the old sections and additions of the new ones, which replaces exactly
///   the slots involved.
/// - `log_start`/`log_stop` flip `KVM_MEM_LOG_DIRTY_PAGES` on the slot in place;
///   `log_sync` fetches (and clears) KVM's bitmap into the address space's.
///
/// Sections are trimmed to whole pages (KVM maps pages); a sub-page sliver of RAM next to a
/// small I/O region is left to exit as MMIO.
///
/// Dropping the listener removes every slot it installed.
#[derive(Debug)]
pub struct KvmMemoryListener {
    vm: Arc<Vm>,
    limit: u32,
    /// Installed slots by guest address.
    slots: BTreeMap<u64, MemorySlot>,
}

impl KvmMemoryListener {
    /// A listener installing slots on `vm`, using at most `max_slots` of them (capped at what
    /// KVM allows; pass `u32::MAX` for "all").
    ///
    /// # Safety
    /// The listener trusts the `host_addr` of every section it is given to be memory that stays
    /// mapped until the same section is deleted. Only register it with a
    /// [`vmkit_memory::AddressSpace`] (which guarantees that, also when it is dropped) and do
    /// not call its [`MemoryListener`] methods directly.
    pub unsafe fn new(vm: Arc<Vm>, max_slots: u32) -> Self {
        let kvm_limit = u32::try_from(vm.max_memslots()).unwrap_or(u32::MAX);
        Self {
            vm,
            limit: max_slots.min(kvm_limit),
            slots: BTreeMap::new(),
        }
    }

    /// The slots this listener installed, by guest address.
    pub fn slots(&self) -> Vec<MemorySlot> {
        self.slots.values().copied().collect()
    }

    fn free_slot_number(&self) -> Option<u32> {
        let mut used: Vec<u32> = self.vm.memory_slots().iter().map(|s| s.slot).collect();
        used.sort_unstable();
        let mut candidate = 0u32;
        for n in used {
            if n == candidate {
                candidate += 1;
            } else if n > candidate {
                break;
            }
        }
        (candidate < self.limit).then_some(candidate)
    }

    fn find(&self, section: &Section) -> Option<MemorySlot> {
        let pages = section.page_aligned()?;
        self.slots
            .get(&pages.guest_addr)
            .copied()
            .filter(|slot| slot.size == pages.size)
    }

    fn set_logging(&mut self, section: &Section, on: bool) -> ListenerResult {
        let Some(mut slot) = self.find(section) else {
            return Ok(());
        };
        slot.flags.log_dirty = on;
        // SAFETY: same slot, same host memory as installed by `region_add`, which the
        // constructor's contract keeps mapped while the section exists.
        unsafe { self.vm.set_memory_slot(slot) }
            .map_err(|e| ListenerError::with_source("changing dirty logging of a KVM slot", e))?;
        self.slots.insert(slot.guest_addr, slot);
        Ok(())
    }
}

impl MemoryListener for KvmMemoryListener {
    fn name(&self) -> &str {
        "kvm"
    }

    fn region_add(&mut self, section: &Section) -> ListenerResult {
        if !matches!(section.kind, SectionKind::Ram | SectionKind::Rom) {
            return Ok(());
        }
        let Some(pages) = section.page_aligned() else {
            return Ok(());
        };
        let Some(number) = self.free_slot_number() else {
            return Err(ListenerError::new(format!(
                "no free KVM memory slot for {} at {:#x} ({} slots in use, limit {})",
                pages.name,
                pages.guest_addr,
                self.slots.len(),
                self.limit
            )));
        };
        let slot = MemorySlot {
            slot: number,
            guest_addr: pages.guest_addr,
            size: pages.size,
            host_addr: pages.host_addr,
            flags: SlotFlags {
                log_dirty: pages.dirty_log,
                readonly: pages.kind == SectionKind::Rom,
            },
        };
        // SAFETY: the constructor's contract: the address space keeps `host_addr` mapped
        // until it deletes this section, and `page_aligned` kept the range inside it.
        unsafe { self.vm.set_memory_slot(slot) }.map_err(|e| {
            ListenerError::with_source(format!("installing KVM slot for {}", pages.name), e)
        })?;
        self.slots.insert(slot.guest_addr, slot);
        Ok(())
    }

    fn region_del(&mut self, section: &Section) -> ListenerResult {
        let Some(slot) = self.find(section) else {
            return Ok(());
        };
        self.vm
            .remove_memory_slot(slot.slot)
            .map_err(|e| ListenerError::with_source("removing a KVM slot", e))?;
        self.slots.remove(&slot.guest_addr);
        Ok(())
    }

    fn log_start(&mut self, section: &Section) -> ListenerResult {
        self.set_logging(section, true)
    }

    fn log_stop(&mut self, section: &Section) -> ListenerResult {
        self.set_logging(section, false)
    }

    fn log_sync(&mut self, section: &Section, bitmap: &mut DirtyBitmap) -> ListenerResult {
        let Some(slot) = self.find(section) else {
            return Ok(());
        };
        if !slot.flags.log_dirty {
            return Ok(());
        }
        let words = self
            .vm
            .dirty_log(slot.slot)
            .map_err(|e| ListenerError::with_source("fetching a KVM dirty log", e))?;
        let first_page = slot.guest_addr.saturating_sub(bitmap.base()) / PAGE_SIZE;
        bitmap.merge_words_at(first_page, &words);
        Ok(())
    }
}

impl Drop for KvmMemoryListener {
    fn drop(&mut self) {
        for slot in self.slots.values() {
            let _ = self.vm.remove_memory_slot(slot.slot);
        }
    }
}
