//! The address space: region tree + flat view + listeners + guest-memory snapshot.

use std::fmt;
use std::sync::{Arc, PoisonError};

use vmm_sys_util::eventfd::EventFd;

use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard};

use crate::dirty::DirtyBitmap;
use crate::error::{Error, ListenerError, Result};
use crate::eventfd::IoEventFd;
use crate::flat::{diff, diff_eventfds, Op, Section};
use crate::listener::MemoryListener;
use crate::region::{
    NodeKind, RegionAccess, RegionEventFdRequest, RegionId, RegionKind, RegionTree, PAGE_SIZE,
};
use crate::snapshot::{self, GuestMemoryView};

/// Identifies a registered listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

struct Registered {
    id: ListenerId,
    listener: Box<dyn MemoryListener + Send>,
}

/// A guest physical address space, as QEMU's `AddressSpace` + `memory.c`.
///
/// It owns every region (created with `new_*`, referred to by [`RegionId`]), the root
/// container (covering `[0, u64::MAX)`), the current flat view, the registered listeners and
/// a shared vm-memory snapshot of the view's RAM/ROM.
///
/// Every topology change (add/remove subregion, enable/disable, move, set priority, set
/// read-only, set alias offset, start/stop dirty logging) recomputes the flat view and sends
/// the listeners the difference in one `begin`..`commit` bracket, unless a transaction is open,
/// in which case the work is done once when the outermost transaction commits. A change that
/// leaves the flat view identical calls no listener. A change a listener refuses is undone
/// (see [`MemoryListener`]'s failure contract).
///
/// Placement rules (violations are errors, never panics): every region has size >= 1; RAM,
/// ROM, containers and aliases of them have sizes, container offsets and alias offsets that
/// are multiples of 4 KiB; I/O regions (and aliases of I/O regions) may have any size and
/// offset; `offset + size` must fit in 64 bits; a subregion may extend past its container's
/// end (it is clipped, as in QEMU); a region sits in at most one container; no region may
/// contain itself, directly or through aliases.
pub struct AddressSpace {
    tree: RegionTree,
    view: Vec<Section>,
    /// The ioeventfds `view` reaches, sorted.
    ioeventfds: Vec<IoEventFd>,
    memory: GuestMemoryAtomic<GuestMemoryView>,
    listeners: Vec<Registered>,
    /// Tree states at each open `begin_transaction`, outermost first.
    transactions: Vec<RegionTree>,
    next_region: u64,
    next_listener: u64,
}

impl Drop for AddressSpace {
    /// Listeners hear `region_del` for every section before any backing memory is unmapped,
    /// so a KVM listener removes its slots while the memory behind them still exists.
    fn drop(&mut self) {
        let ops = self.teardown_ops();
        for registered in &mut self.listeners {
            let _ = apply(registered.listener.as_mut(), &ops);
        }
        self.listeners.clear();
    }
}

impl fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressSpace")
            .field("flat_view", &self.view)
            .field("listeners", &self.listeners.len())
            .field("open_transactions", &self.transactions.len())
            .finish_non_exhaustive()
    }
}

/// Where one listener stopped while applying a list of callbacks.
enum Stop {
    /// `begin` failed: nothing was applied.
    Begin,
    /// Callback `index` failed; the ones before it were applied.
    Op(usize),
    /// Every callback was applied but `commit` failed.
    Commit,
}

fn call(listener: &mut dyn MemoryListener, op: &Op) -> std::result::Result<(), ListenerError> {
    match op {
        Op::Del(s) => listener.region_del(s),
        Op::Add(s) => listener.region_add(s),
        Op::Nop(s) => listener.region_nop(s),
        Op::LogStart(s) => listener.log_start(s),
        Op::LogStop(s) => listener.log_stop(s),
        Op::EventfdAdd(e) => listener.eventfd_add(e),
        Op::EventfdDel(e) => listener.eventfd_del(e),
    }
}

fn apply(
    listener: &mut dyn MemoryListener,
    ops: &[Op],
) -> std::result::Result<(), (Stop, ListenerError)> {
    listener.begin().map_err(|e| (Stop::Begin, e))?;
    for (index, op) in ops.iter().enumerate() {
        call(listener, op).map_err(|e| (Stop::Op(index), e))?;
    }
    listener.commit().map_err(|e| (Stop::Commit, e))
}

fn inverse(ops: &[Op]) -> Vec<Op> {
    ops.iter().rev().filter_map(Op::inverse).collect()
}

/// Undoes the calls `listener` accepted before it stopped. A failed callback (even `commit`)
/// left the listener as before the call, i.e. still inside the bracket, so the undo goes into
/// the same bracket and ends with `commit`.
fn unwind(
    listener: &mut dyn MemoryListener,
    ops: &[Op],
    stop: &Stop,
) -> std::result::Result<(), ListenerError> {
    let accepted = match *stop {
        Stop::Begin => return Ok(()),
        Stop::Op(index) => ops.get(..index).unwrap_or(ops),
        Stop::Commit => ops,
    };
    for op in inverse(accepted) {
        call(listener, &op)?;
    }
    listener.commit()
}

impl AddressSpace {
    /// An empty address space whose root container is named `name`.
    pub fn new(name: &str) -> Self {
        let root = RegionId(0);
        Self {
            tree: RegionTree::new(root, name),
            view: Vec::new(),
            ioeventfds: Vec::new(),
            memory: GuestMemoryAtomic::new(GuestMemoryView::new()),
            listeners: Vec::new(),
            transactions: Vec::new(),
            next_region: 1,
            next_listener: 0,
        }
    }

    /// The root container.
    pub fn root(&self) -> RegionId {
        self.tree.root()
    }

    fn fresh_id(&mut self) -> RegionId {
        let id = RegionId(self.next_region);
        self.next_region = self.next_region.wrapping_add(1);
        id
    }

    /// Creates a RAM region of `size` bytes (a multiple of 4 KiB) of zeroed anonymous host
    /// memory. It is not mapped until added to a container.
    pub fn new_ram(&mut self, name: &str, size: u64) -> Result<RegionId> {
        let id = self.fresh_id();
        self.tree.new_ram(id, name, size, false)?;
        Ok(id)
    }

    /// Creates a ROM region: like RAM, but read-only to the guest. The VMM writes it with
    /// [`write_region`](Self::write_region) or through [`guest_memory`](Self::guest_memory).
    pub fn new_rom(&mut self, name: &str, size: u64) -> Result<RegionId> {
        let id = self.fresh_id();
        self.tree.new_ram(id, name, size, true)?;
        Ok(id)
    }

    /// Creates an I/O (MMIO) region of any size >= 1; `name` names the owner the MMIO bus
    /// dispatches its accesses to.
    pub fn new_io(&mut self, name: &str, size: u64) -> Result<RegionId> {
        let id = self.fresh_id();
        self.tree.new_io(id, name, size)?;
        Ok(id)
    }

    /// Creates an empty container of `size` bytes (a multiple of 4 KiB).
    pub fn new_container(&mut self, name: &str, size: u64) -> Result<RegionId> {
        let id = self.fresh_id();
        self.tree.new_container(id, name, size)?;
        Ok(id)
    }

    /// Creates an alias: the window `[offset, offset + size)` of `target`, to be placed
    /// elsewhere. The window must lie inside `target`.
    pub fn new_alias(
        &mut self,
        name: &str,
        target: RegionId,
        offset: u64,
        size: u64,
    ) -> Result<RegionId> {
        let id = self.fresh_id();
        self.tree.new_alias(id, name, target, offset, size)?;
        Ok(id)
    }

    /// Destroys an unmapped region that no alias points at and (for a container) that holds
    /// nothing. Its host memory is freed once no guest-memory snapshot uses it. Inside a
    /// transaction, aborting the transaction brings the region back.
    pub fn destroy_region(&mut self, region: RegionId) -> Result<()> {
        self.tree.destroy(region)
    }

    /// Runs `change` on the tree and, outside transactions, updates the view and listeners,
    /// restoring the tree if that fails.
    fn change(&mut self, change: impl FnOnce(&mut RegionTree) -> Result<()>) -> Result<()> {
        if !self.transactions.is_empty() {
            return change(&mut self.tree);
        }
        let saved = self.tree.clone();
        change(&mut self.tree)?;
        if let Err(e) = self.update_topology() {
            self.tree = saved;
            return Err(e);
        }
        Ok(())
    }

    /// Maps `child` at `offset` inside `container` with priority 0.
    pub fn add_subregion(
        &mut self,
        container: RegionId,
        offset: u64,
        child: RegionId,
    ) -> Result<()> {
        self.add_subregion_overlap(container, offset, child, 0)
    }

    /// Maps `child` at `offset` inside `container` with `priority`: where siblings overlap the
    /// higher priority is visible; among equal priorities the one added (or moved) last.
    pub fn add_subregion_overlap(
        &mut self,
        container: RegionId,
        offset: u64,
        child: RegionId,
        priority: i32,
    ) -> Result<()> {
        self.change(|tree| tree.add_subregion(container, offset, child, priority))
    }

    /// Unmaps `child` from `container`.
    pub fn remove_subregion(&mut self, container: RegionId, child: RegionId) -> Result<()> {
        self.change(|tree| tree.remove_subregion(container, child))
    }

    /// Shows or hides a region (and everything below it); hidden regions stay in the tree.
    pub fn set_enabled(&mut self, region: RegionId, enabled: bool) -> Result<()> {
        self.change(|tree| tree.set_enabled(region, enabled))
    }

    /// Moves a mapped region to `offset` in its container. Like QEMU's
    /// `memory_region_set_address`, it then counts as the newest among equal priorities.
    pub fn set_address(&mut self, region: RegionId, offset: u64) -> Result<()> {
        self.change(|tree| tree.replace_placement(region, Some(offset), None))
    }

    /// Changes a mapped region's priority (it then counts as the newest among equal priorities).
    pub fn set_priority(&mut self, region: RegionId, priority: i32) -> Result<()> {
        self.change(|tree| tree.replace_placement(region, None, Some(priority)))
    }

    /// Makes a RAM/ROM region, container or alias read-only (or writable) for the guest: its
    /// memory shows up as [`SectionKind::Rom`](crate::SectionKind::Rom) (read-only propagates
    /// down through containers and aliases). Not for I/O regions.
    pub fn set_readonly(&mut self, region: RegionId, readonly: bool) -> Result<()> {
        self.change(|tree| tree.set_readonly(region, readonly))
    }

    /// Moves an alias's window to `offset` in its target.
    pub fn set_alias_offset(&mut self, alias: RegionId, offset: u64) -> Result<()> {
        self.change(|tree| tree.set_alias_offset(alias, offset))
    }

    /// Starts or stops dirty-page logging for a RAM/ROM region (every section it backs).
    pub fn set_dirty_logging(&mut self, region: RegionId, on: bool) -> Result<()> {
        self.change(|tree| tree.set_dirty_logging(region, on))
    }

    /// Opens a (possibly nested) transaction: topology changes are only applied to the tree
    /// until the outermost [`commit_transaction`](Self::commit_transaction), which recomputes
    /// the view once and calls the listeners in a single `begin`..`commit`.
    pub fn begin_transaction(&mut self) {
        self.transactions.push(self.tree.clone());
    }

    /// Closes the innermost transaction; closing the outermost applies all its changes. If
    /// that fails (a listener refused), the tree returns to its state at the outermost
    /// `begin_transaction` and the error is returned.
    pub fn commit_transaction(&mut self) -> Result<()> {
        let saved = self.transactions.pop().ok_or(Error::NoTransaction)?;
        if self.transactions.is_empty() {
            if let Err(e) = self.update_topology() {
                self.tree = saved;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Closes the innermost transaction, discarding the changes made since its
    /// `begin_transaction` (including regions created in it). Listeners see nothing.
    pub fn abort_transaction(&mut self) -> Result<()> {
        self.tree = self.transactions.pop().ok_or(Error::NoTransaction)?;
        Ok(())
    }

    /// Runs `changes` in a transaction: committed if it returns `Ok`, aborted (no change at
    /// all) if it returns `Err`.
    pub fn transaction<T>(&mut self, changes: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let depth = self.transactions.len();
        self.begin_transaction();
        let result = changes(self);
        // Close exactly the transaction opened here, even if `changes` left others open.
        while self.transactions.len() > depth + 1 {
            self.abort_transaction()?;
        }
        match result {
            Ok(value) => self.commit_transaction().map(|()| value),
            Err(e) => {
                if self.transactions.len() > depth {
                    self.abort_transaction()?;
                }
                Err(e)
            }
        }
    }

    /// Whether a transaction is open.
    pub fn in_transaction(&self) -> bool {
        !self.transactions.is_empty()
    }

    /// Recomputes the flat view and brings listeners and the snapshot up to date. On error
    /// nothing changed (view, snapshot and listeners are as before); the caller restores the
    /// tree.
    fn update_topology(&mut self) -> Result<()> {
        let new_view = self.tree.render();
        let new_eventfds = self.tree.ioeventfds(&new_view);
        let view_changed = new_view != self.view;
        if !view_changed && new_eventfds == self.ioeventfds {
            return Ok(());
        }
        let new_memory = if view_changed {
            Some(snapshot::build(&self.tree, &new_view)?)
        } else {
            None
        };
        // ioeventfd deletions first, then the sections, then ioeventfd additions, all in one
        // bracket; an update that only moves ioeventfds sends no section calls.
        let (mut ops, eventfd_adds) = diff_eventfds(&self.ioeventfds, &new_eventfds);
        if view_changed {
            ops.extend(diff(&self.view, &new_view));
        }
        ops.extend(eventfd_adds);
        self.notify(&ops)?;
        self.view = new_view;
        self.ioeventfds = new_eventfds;
        if let Some(new_memory) = new_memory {
            self.memory
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .replace(new_memory);
        }
        Ok(())
    }

    /// What a listener needs to build the current state from nothing: every section, then
    /// every ioeventfd.
    fn replay_ops(&self) -> Vec<Op> {
        let sections = self.view.iter().cloned().map(Op::Add);
        let eventfds = self.ioeventfds.iter().cloned().map(Op::EventfdAdd);
        sections.chain(eventfds).collect()
    }

    /// The inverse of [`replay_ops`](Self::replay_ops): ioeventfds, then sections, last first.
    fn teardown_ops(&self) -> Vec<Op> {
        let eventfds = self.ioeventfds.iter().rev().cloned().map(Op::EventfdDel);
        let sections = self.view.iter().rev().cloned().map(Op::Del);
        eventfds.chain(sections).collect()
    }

    /// Hangs an ioeventfd on I/O region `region`, as QEMU's `memory_region_add_eventfd`:
    /// once the region is visible, a guest write at `offset` in it of `size` bytes (1, 2,
    /// 4 or 8; 0 = any size, KVM's no-length ioeventfd) and, with `datamatch`, of exactly
    /// that value, signals `eventfd` (through the listeners: KVM's makes it a
    /// `KVM_IOEVENTFD`). Listeners get `eventfd_add` with the guest address now if the
    /// region is visible there, and again (with `eventfd_del` first) whenever the region
    /// moves. The same trigger on the same eventfd twice is refused.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use vmkit_memory::AddressSpace;
    /// use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
    ///
    /// let mut io = AddressSpace::new("io");
    /// let bar = io.new_io("bar0", 0x20)?;
    /// let doorbell = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    /// // Queue 0 of a legacy virtio function: 2-byte writes of 0 at QUEUE_NOTIFY.
    /// io.add_eventfd(bar, 0x10, 2, Some(0), doorbell)?;
    /// let root = io.root();
    /// io.add_subregion(root, 0xc000, bar)?;
    /// assert_eq!(io.ioeventfds()[0].guest_addr, 0xc010);
    /// io.set_address(bar, 0xd000)?; // the guest moves the BAR: the ioeventfd follows
    /// assert_eq!(io.ioeventfds()[0].guest_addr, 0xd010);
    /// # Ok::<(), vmkit_memory::Error>(())
    /// ```
    pub fn add_eventfd(
        &mut self,
        region: RegionId,
        offset: u64,
        size: u64,
        datamatch: Option<u64>,
        eventfd: impl Into<Arc<EventFd>>,
    ) -> Result<()> {
        let request = RegionEventFdRequest {
            offset,
            size,
            datamatch,
            eventfd: eventfd.into(),
        };
        self.change(|tree| tree.add_eventfd(region, request))
    }

    /// Removes the ioeventfd [`add_eventfd`](Self::add_eventfd) added with the same
    /// arguments (the eventfd is compared by file), as QEMU's `memory_region_del_eventfd`;
    /// listeners get `eventfd_del` if it was reachable.
    pub fn del_eventfd(
        &mut self,
        region: RegionId,
        offset: u64,
        size: u64,
        datamatch: Option<u64>,
        eventfd: &EventFd,
    ) -> Result<()> {
        self.change(|tree| tree.del_eventfd(region, offset, size, datamatch, eventfd))
    }

    /// How many ioeventfds `region` holds, mapped or not.
    pub fn region_eventfd_count(&self, region: RegionId) -> Result<usize> {
        self.tree.eventfd_count(region)
    }

    /// The ioeventfds the guest reaches now (sorted by address), as listeners were told.
    pub fn ioeventfds(&self) -> &[IoEventFd] {
        &self.ioeventfds
    }

    /// Sends `ops` to every listener; on a refusal, undoes it everywhere.
    fn notify(&mut self, ops: &[Op]) -> Result<()> {
        for index in 0..self.listeners.len() {
            let Some(failing) = self.listeners.get_mut(index) else {
                continue;
            };
            let Err((stop, source)) = apply(failing.listener.as_mut(), ops) else {
                continue;
            };
            let name = failing.listener.name().to_owned();
            let mut rollback_error = unwind(failing.listener.as_mut(), ops, &stop)
                .err()
                .map(|e| (name.clone(), e));
            let undo = inverse(ops);
            for done in self.listeners.iter_mut().take(index) {
                if let Err((_, e)) = apply(done.listener.as_mut(), &undo) {
                    rollback_error.get_or_insert_with(|| (done.listener.name().to_owned(), e));
                }
            }
            return Err(match rollback_error {
                Some((listener, source)) => Error::ListenerRollback { listener, source },
                None => Error::Listener {
                    listener: name,
                    source,
                },
            });
        }
        Ok(())
    }

    /// Registers a listener and replays the current flat view to it as `region_add` calls (then
    /// `eventfd_add` for every reachable ioeventfd) in
    /// one `begin`..`commit` (as QEMU's `memory_listener_register`). If it refuses, the
    /// sections it accepted are deleted again and it is dropped.
    pub fn register_listener(
        &mut self,
        mut listener: Box<dyn MemoryListener + Send>,
    ) -> Result<ListenerId> {
        let ops = self.replay_ops();
        if let Err((stop, source)) = apply(listener.as_mut(), &ops) {
            let name = listener.name().to_owned();
            return Err(match unwind(listener.as_mut(), &ops, &stop) {
                Ok(()) => Error::Listener {
                    listener: name,
                    source,
                },
                Err(source) => Error::ListenerRollback {
                    listener: name,
                    source,
                },
            });
        }
        let id = ListenerId(self.next_listener);
        self.next_listener = self.next_listener.wrapping_add(1);
        self.listeners.push(Registered { id, listener });
        Ok(id)
    }

    /// Unregisters a listener after sending it `eventfd_del` for every ioeventfd and
    /// `region_del` for every section (one
    /// `begin`..`commit`), and hands it back. A refusal there is ignored: the listener is
    /// leaving anyway.
    pub fn unregister_listener(
        &mut self,
        id: ListenerId,
    ) -> Result<Box<dyn MemoryListener + Send>> {
        let index = self
            .listeners
            .iter()
            .position(|r| r.id == id)
            .ok_or(Error::UnknownListener(id.0))?;
        let mut registered = self.listeners.remove(index);
        let ops = self.teardown_ops();
        let _ = apply(registered.listener.as_mut(), &ops);
        Ok(registered.listener)
    }

    /// The current flat view: sorted, non-overlapping, adjacent continuations merged. Holes
    /// are unassigned.
    pub fn flat_view(&self) -> &[Section] {
        &self.view
    }

    /// The section containing guest address `addr`, if any.
    pub fn lookup(&self, addr: u64) -> Option<&Section> {
        let index = self.view.partition_point(|s| s.guest_addr <= addr);
        self.view
            .get(index.checked_sub(1)?)
            .filter(|s| s.contains(addr))
    }

    /// A shared handle to the guest memory (the flat view's RAM and ROM at their guest
    /// addresses), swapped RCU-style on every committed change: `handle.memory()` gives the
    /// current snapshot, which stays valid (and keeps its host memory mapped) as long as it is
    /// held, even if the topology changes meanwhile.
    pub fn guest_memory(&self) -> GuestMemoryAtomic<GuestMemoryView> {
        self.memory.clone()
    }

    /// The current guest-memory snapshot (`guest_memory().memory()`).
    pub fn memory_snapshot(&self) -> GuestMemoryLoadGuard<GuestMemoryView> {
        self.memory.memory()
    }

    /// The region's name.
    pub fn region_name(&self, region: RegionId) -> Result<&str> {
        Ok(&self.tree.node(region)?.name)
    }

    /// The region's kind.
    pub fn region_kind(&self, region: RegionId) -> Result<RegionKind> {
        self.tree.kind(region)
    }

    /// The region's size in bytes.
    pub fn region_size(&self, region: RegionId) -> Result<u64> {
        Ok(self.tree.node(region)?.size)
    }

    /// The container holding the region, if it is mapped.
    pub fn region_parent(&self, region: RegionId) -> Result<Option<RegionId>> {
        Ok(self.tree.node(region)?.parent)
    }

    /// Host virtual address of a RAM/ROM region's first byte.
    pub fn region_host_addr(&self, region: RegionId) -> Result<u64> {
        Ok(self.tree.backing(region)?.host_addr())
    }

    /// Writes `data` into a RAM/ROM region's memory at `offset`, mapped or not (e.g. loading
    /// firmware into a ROM).
    pub fn write_region(&self, region: RegionId, offset: u64, data: &[u8]) -> Result<()> {
        self.tree.write(region, offset, data)
    }

    /// A cloneable handle that reads and writes a RAM/ROM region's memory, mapped or not.
    pub fn region_access(&self, region: RegionId) -> Result<RegionAccess> {
        self.tree.access(region)
    }

    /// Reads a RAM/ROM region's memory at `offset` into `data`.
    pub fn read_region(&self, region: RegionId, offset: u64, data: &mut [u8]) -> Result<()> {
        self.tree.read(region, offset, data)
    }

    /// Collects the pages of RAM/ROM `region` dirtied since the last sync: for every section of
    /// the flat view it backs, each listener's `log_sync` fills a bitmap of that section, and
    /// the results are ORed into one bitmap over the region (page 0 = region offset 0, so
    /// [`DirtyBitmap::dirty_addresses`] yields offsets inside the region). Dirty logging must be
    /// on for the region.
    pub fn sync_dirty_log(&mut self, region: RegionId) -> Result<DirtyBitmap> {
        let node = self.tree.node(region)?;
        let name = node.name.to_string();
        let mut result = DirtyBitmap::new(0, node.size);
        if !self.dirty_logging(region)? {
            return Err(Error::DirtyLogDisabled(name));
        }
        let logged = self
            .view
            .iter()
            .filter(|s| s.region == region && s.is_memory() && s.dirty_log);
        for section in logged {
            let mut bitmap = DirtyBitmap::new(section.guest_addr, section.size);
            for registered in &mut self.listeners {
                registered
                    .listener
                    .log_sync(section, &mut bitmap)
                    .map_err(|source| Error::Listener {
                        listener: registered.listener.name().to_owned(),
                        source,
                    })?;
            }
            // Page i of the section bitmap is guest page base + i, i.e. region page
            // (offset_in_region rounded down) / 4 KiB + i: guest and region offsets agree
            // modulo 4 KiB because RAM is placed in whole pages.
            let first_page = section.offset_in_region / PAGE_SIZE;
            for page in bitmap.dirty_pages() {
                result.mark_dirty(first_page.saturating_add(page));
            }
        }
        Ok(result)
    }

    fn dirty_logging(&self, region: RegionId) -> Result<bool> {
        let node = self.tree.node(region)?;
        match &node.kind {
            NodeKind::Ram { dirty_log, .. } => Ok(*dirty_log),
            _ => Err(Error::NotRam(node.name.to_string())),
        }
    }
}
