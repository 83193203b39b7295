//! The region tree: nodes, their validation and the rendering into a flat view.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use vm_memory::{MmapRegion, VolatileMemory};

use crate::error::{Error, Result};
use crate::eventfd::{self, IoEventFd, RegionEventFd};
use crate::flat::{Painter, Section, SectionKind};

/// Granule of RAM/ROM placement and of dirty logging: 4 KiB, the x86 page.
pub const PAGE_SIZE: u64 = 4096;

/// Identifies a region of one [`AddressSpace`](crate::AddressSpace). Ids are never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionId(pub(crate) u64);

impl fmt::Display for RegionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What a region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Host memory the guest may read and write.
    Ram,
    /// Host memory the guest may only read (the VMM may write it).
    Rom,
    /// MMIO: no backing; guest accesses go to the VMM's MMIO bus.
    Io,
    /// Holds subregions at offsets and priorities.
    Container,
    /// A window onto another region.
    Alias,
}

/// Anonymous host memory owned by a RAM/ROM region. Shared (`Arc`) with every guest-memory
/// snapshot that maps part of it, so the mapping outlives all of them.
#[derive(Debug)]
pub struct Backing {
    mmap: MmapRegion<()>,
}

impl Backing {
    fn new(name: &str, size: u64) -> Result<Self> {
        let len = usize::try_from(size)
            .ok()
            .filter(|&len| isize::try_from(len).is_ok())
            .ok_or_else(|| Error::TooLarge {
                name: name.to_owned(),
                size,
            })?;
        let mmap = MmapRegion::new(len).map_err(|source| Error::Mmap {
            name: name.to_owned(),
            source,
        })?;
        Ok(Self { mmap })
    }

    pub(crate) fn mmap(&self) -> &MmapRegion<()> {
        &self.mmap
    }

    pub(crate) fn host_addr(&self) -> u64 {
        self.mmap.as_ptr() as u64
    }

    fn len(&self) -> u64 {
        self.mmap.size() as u64
    }

    fn access_slice(
        &self,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<vm_memory::VolatileSlice<'_, ()>> {
        let out_of_range = || Error::AccessOutOfRange {
            name: name.to_owned(),
            offset,
            len,
            size: self.len(),
        };
        let start = usize::try_from(offset).map_err(|_| out_of_range())?;
        self.mmap.get_slice(start, len).map_err(|_| out_of_range())
    }
}

/// Bounds-checked access to one RAM/ROM region's backing memory, whether or not the region
/// is mapped. Cheap to clone and `Send + Sync`, so a device path on a vCPU thread can hold
/// one: a chipset that sends writes to RAM while reads still come from ROM (the i440FX's
/// write-only PAM mode) writes through it. Writes are not dirty-logged.
#[derive(Clone, Debug)]
pub struct RegionAccess {
    name: Arc<str>,
    backing: Arc<Backing>,
}

impl RegionAccess {
    /// The region's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The region's size in bytes.
    pub fn size(&self) -> u64 {
        self.backing.len()
    }

    /// Copies `data` into the region at `offset`; an access past the end is refused whole.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.backing
            .access_slice(&self.name, offset, data.len())?
            .copy_from(data);
        Ok(())
    }

    /// Fills `data` from the region at `offset`; an access past the end is refused whole.
    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<()> {
        self.backing
            .access_slice(&self.name, offset, data.len())?
            .copy_to(data);
        Ok(())
    }
}

/// The arguments of [`RegionTree::add_eventfd`].
pub(crate) struct RegionEventFdRequest {
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) datamatch: Option<u64>,
    pub(crate) eventfd: Arc<vmm_sys_util::eventfd::EventFd>,
}

#[derive(Clone, Debug)]
pub(crate) struct Child {
    pub(crate) id: RegionId,
    pub(crate) offset: u64,
    pub(crate) priority: i32,
}

#[derive(Clone, Debug)]
pub(crate) enum NodeKind {
    Ram {
        backing: Arc<Backing>,
        rom: bool,
        dirty_log: bool,
    },
    Io,
    Container {
        children: Vec<Child>,
    },
    Alias {
        target: RegionId,
        offset: u64,
    },
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) name: Arc<str>,
    pub(crate) size: u64,
    pub(crate) kind: NodeKind,
    pub(crate) enabled: bool,
    pub(crate) readonly: bool,
    pub(crate) parent: Option<RegionId>,
    /// ioeventfds on this (I/O) region, in the order they were added.
    pub(crate) eventfds: Vec<RegionEventFd>,
}

/// All regions of one address space. Cloned whole to undo a failed change.
#[derive(Clone, Debug)]
pub(crate) struct RegionTree {
    nodes: BTreeMap<RegionId, Node>,
    root: RegionId,
}

fn page_aligned(value: u64) -> bool {
    value % PAGE_SIZE == 0
}

impl RegionTree {
    pub(crate) fn new(root: RegionId, name: &str) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            root,
            Node {
                name: Arc::from(name),
                size: u64::MAX,
                kind: NodeKind::Container {
                    children: Vec::new(),
                },
                enabled: true,
                readonly: false,
                parent: None,
                eventfds: Vec::new(),
            },
        );
        Self { nodes, root }
    }

    pub(crate) fn root(&self) -> RegionId {
        self.root
    }

    pub(crate) fn node(&self, id: RegionId) -> Result<&Node> {
        self.nodes.get(&id).ok_or(Error::UnknownRegion(id))
    }

    fn node_mut(&mut self, id: RegionId) -> Result<&mut Node> {
        self.nodes.get_mut(&id).ok_or(Error::UnknownRegion(id))
    }

    pub(crate) fn name(&self, id: RegionId) -> String {
        self.nodes
            .get(&id)
            .map_or_else(|| id.to_string(), |n| n.name.to_string())
    }

    pub(crate) fn kind(&self, id: RegionId) -> Result<RegionKind> {
        Ok(match &self.node(id)?.kind {
            NodeKind::Ram { rom: true, .. } => RegionKind::Rom,
            NodeKind::Ram { rom: false, .. } => RegionKind::Ram,
            NodeKind::Io => RegionKind::Io,
            NodeKind::Container { .. } => RegionKind::Container,
            NodeKind::Alias { .. } => RegionKind::Alias,
        })
    }

    pub(crate) fn backing(&self, id: RegionId) -> Result<&Arc<Backing>> {
        let node = self.node(id)?;
        match &node.kind {
            NodeKind::Ram { backing, .. } => Ok(backing),
            _ => Err(Error::NotRam(node.name.to_string())),
        }
    }

    /// I/O regions (and aliases that end in one) may sit at any byte; everything that can
    /// contain RAM is placed in whole pages so RAM is always page-aligned in the flat view
    /// except where an I/O region overlays it.
    fn byte_granular(&self, mut id: RegionId) -> bool {
        // Alias chains are acyclic (an alias is created with an existing target and its target
        // never changes), so this terminates; the bound is a belt-and-braces guard.
        for _ in 0..=self.nodes.len() {
            match self.nodes.get(&id).map(|n| &n.kind) {
                Some(NodeKind::Io) => return true,
                Some(NodeKind::Alias { target, .. }) => id = *target,
                _ => return false,
            }
        }
        false
    }

    fn check_size(name: &str, size: u64, page_granular: bool) -> Result<()> {
        if size == 0 {
            return Err(Error::ZeroSize {
                name: name.to_owned(),
            });
        }
        if page_granular && !page_aligned(size) {
            return Err(Error::Unaligned {
                name: name.to_owned(),
                what: "size",
                value: size,
            });
        }
        Ok(())
    }

    fn insert(&mut self, id: RegionId, name: &str, size: u64, kind: NodeKind, readonly: bool) {
        self.nodes.insert(
            id,
            Node {
                name: Arc::from(name),
                size,
                kind,
                enabled: true,
                readonly,
                parent: None,
                eventfds: Vec::new(),
            },
        );
    }

    pub(crate) fn new_ram(&mut self, id: RegionId, name: &str, size: u64, rom: bool) -> Result<()> {
        Self::check_size(name, size, true)?;
        let backing = Arc::new(Backing::new(name, size)?);
        let kind = NodeKind::Ram {
            backing,
            rom,
            dirty_log: false,
        };
        self.insert(id, name, size, kind, rom);
        Ok(())
    }

    pub(crate) fn new_io(&mut self, id: RegionId, name: &str, size: u64) -> Result<()> {
        Self::check_size(name, size, false)?;
        self.insert(id, name, size, NodeKind::Io, false);
        Ok(())
    }

    pub(crate) fn new_container(&mut self, id: RegionId, name: &str, size: u64) -> Result<()> {
        Self::check_size(name, size, true)?;
        let kind = NodeKind::Container {
            children: Vec::new(),
        };
        self.insert(id, name, size, kind, false);
        Ok(())
    }

    fn check_alias_window(
        &self,
        name: &str,
        target: RegionId,
        offset: u64,
        size: u64,
    ) -> Result<()> {
        let target_node = self.node(target)?;
        let granular = self.byte_granular(target);
        Self::check_size(name, size, !granular)?;
        if !granular && !page_aligned(offset) {
            return Err(Error::Unaligned {
                name: name.to_owned(),
                what: "alias offset",
                value: offset,
            });
        }
        let end = offset.checked_add(size).ok_or_else(|| Error::Overflow {
            name: name.to_owned(),
            offset,
            size,
        })?;
        if end > target_node.size {
            return Err(Error::AliasOutOfRange {
                name: name.to_owned(),
                target: target_node.name.to_string(),
                offset,
                size,
                target_size: target_node.size,
            });
        }
        Ok(())
    }

    pub(crate) fn new_alias(
        &mut self,
        id: RegionId,
        name: &str,
        target: RegionId,
        offset: u64,
        size: u64,
    ) -> Result<()> {
        self.check_alias_window(name, target, offset, size)?;
        self.insert(id, name, size, NodeKind::Alias { target, offset }, false);
        Ok(())
    }

    pub(crate) fn set_alias_offset(&mut self, alias: RegionId, new_offset: u64) -> Result<()> {
        let node = self.node(alias)?;
        let NodeKind::Alias { target, .. } = node.kind else {
            return Err(Error::NotAnAlias(node.name.to_string()));
        };
        let name = node.name.clone();
        self.check_alias_window(&name, target, new_offset, node.size)?;
        if let NodeKind::Alias { offset, .. } = &mut self.node_mut(alias)?.kind {
            *offset = new_offset;
        }
        Ok(())
    }

    fn container_children(&self, id: RegionId) -> Result<&Vec<Child>> {
        let node = self.node(id)?;
        match &node.kind {
            NodeKind::Container { children } => Ok(children),
            _ => Err(Error::NotAContainer(node.name.to_string())),
        }
    }

    fn container_children_mut(&mut self, id: RegionId) -> Result<&mut Vec<Child>> {
        let node = self.node_mut(id)?;
        match &mut node.kind {
            NodeKind::Container { children } => Ok(children),
            _ => Err(Error::NotAContainer(node.name.to_string())),
        }
    }

    /// Whether `needle` can be reached from `from` through subregion and alias edges.
    fn reaches(&self, from: RegionId, needle: RegionId) -> bool {
        let mut stack = vec![from];
        let mut seen = std::collections::BTreeSet::new();
        while let Some(id) = stack.pop() {
            if id == needle {
                return true;
            }
            if !seen.insert(id) {
                continue;
            }
            match self.nodes.get(&id).map(|n| &n.kind) {
                Some(NodeKind::Container { children }) => {
                    stack.extend(children.iter().map(|c| c.id));
                }
                Some(NodeKind::Alias { target, .. }) => stack.push(*target),
                _ => {}
            }
        }
        false
    }

    fn check_placement(&self, child: RegionId, offset: u64) -> Result<()> {
        let node = self.node(child)?;
        if !self.byte_granular(child) && !page_aligned(offset) {
            return Err(Error::Unaligned {
                name: node.name.to_string(),
                what: "offset in container",
                value: offset,
            });
        }
        if offset.checked_add(node.size).is_none() {
            return Err(Error::Overflow {
                name: node.name.to_string(),
                offset,
                size: node.size,
            });
        }
        Ok(())
    }

    fn insert_child(children: &mut Vec<Child>, child: Child) {
        // Kept in paint order: highest priority first; among equals the newest first (QEMU:
        // it is painted first and wins).
        let pos = children
            .iter()
            .position(|c| child.priority >= c.priority)
            .unwrap_or(children.len());
        children.insert(pos, child);
    }

    pub(crate) fn add_subregion(
        &mut self,
        container: RegionId,
        offset: u64,
        child: RegionId,
        priority: i32,
    ) -> Result<()> {
        self.container_children(container)?;
        let child_node = self.node(child)?;
        if child == self.root {
            return Err(Error::RootRegion);
        }
        if let Some(parent) = child_node.parent {
            return Err(Error::AlreadyMapped {
                name: child_node.name.to_string(),
                container: self.name(parent),
            });
        }
        if self.reaches(child, container) {
            return Err(Error::Cycle {
                container: self.name(container),
                child: self.name(child),
            });
        }
        self.check_placement(child, offset)?;
        Self::insert_child(
            self.container_children_mut(container)?,
            Child {
                id: child,
                offset,
                priority,
            },
        );
        self.node_mut(child)?.parent = Some(container);
        Ok(())
    }

    /// Removes `child` from its container and returns its placement.
    fn detach(&mut self, child: RegionId) -> Result<Child> {
        let node = self.node(child)?;
        let not_mapped = || Error::NotMapped {
            name: node.name.to_string(),
            container: "any container".to_owned(),
        };
        let parent = node.parent.ok_or_else(not_mapped)?;
        let children = self.container_children_mut(parent)?;
        let pos = children
            .iter()
            .position(|c| c.id == child)
            .ok_or(Error::UnknownRegion(child))?;
        let placement = children.remove(pos);
        self.node_mut(child)?.parent = None;
        Ok(placement)
    }

    pub(crate) fn remove_subregion(&mut self, container: RegionId, child: RegionId) -> Result<()> {
        self.container_children(container)?;
        let node = self.node(child)?;
        if node.parent != Some(container) {
            return Err(Error::NotMapped {
                name: node.name.to_string(),
                container: self.name(container),
            });
        }
        self.detach(child).map(|_| ())
    }

    /// Re-inserts a mapped region with a new offset and/or priority. As in QEMU (which deletes
    /// and re-adds the subregion) it becomes the newest among its equal-priority siblings.
    pub(crate) fn replace_placement(
        &mut self,
        child: RegionId,
        offset: Option<u64>,
        priority: Option<i32>,
    ) -> Result<()> {
        let node = self.node(child)?;
        let parent = node.parent.ok_or_else(|| Error::NotMapped {
            name: node.name.to_string(),
            container: "any container".to_owned(),
        })?;
        let current = self
            .container_children(parent)?
            .iter()
            .find(|c| c.id == child)
            .cloned()
            .ok_or(Error::UnknownRegion(child))?;
        let new_offset = offset.unwrap_or(current.offset);
        self.check_placement(child, new_offset)?;
        self.detach(child)?;
        Self::insert_child(
            self.container_children_mut(parent)?,
            Child {
                id: child,
                offset: new_offset,
                priority: priority.unwrap_or(current.priority),
            },
        );
        self.node_mut(child)?.parent = Some(parent);
        Ok(())
    }

    pub(crate) fn set_enabled(&mut self, id: RegionId, enabled: bool) -> Result<()> {
        self.node_mut(id)?.enabled = enabled;
        Ok(())
    }

    pub(crate) fn set_readonly(&mut self, id: RegionId, readonly: bool) -> Result<()> {
        let node = self.node_mut(id)?;
        if matches!(node.kind, NodeKind::Io) {
            return Err(Error::IoRegion(node.name.to_string()));
        }
        node.readonly = readonly;
        Ok(())
    }

    pub(crate) fn set_dirty_logging(&mut self, id: RegionId, on: bool) -> Result<()> {
        let node = self.node_mut(id)?;
        match &mut node.kind {
            NodeKind::Ram { dirty_log, .. } => {
                *dirty_log = on;
                Ok(())
            }
            _ => Err(Error::NotRam(node.name.to_string())),
        }
    }

    pub(crate) fn destroy(&mut self, id: RegionId) -> Result<()> {
        if id == self.root {
            return Err(Error::RootRegion);
        }
        let node = self.node(id)?;
        let in_use = |reason: String| Error::RegionInUse {
            name: node.name.to_string(),
            reason,
        };
        if let Some(parent) = node.parent {
            return Err(in_use(format!("mapped in `{}`", self.name(parent))));
        }
        if let NodeKind::Container { children } = &node.kind {
            if !children.is_empty() {
                return Err(in_use("it still holds subregions".to_owned()));
            }
        }
        let alias = self
            .nodes
            .values()
            .find(|other| matches!(other.kind, NodeKind::Alias { target, .. } if target == id));
        if let Some(alias) = alias {
            return Err(in_use(format!("alias `{}` points at it", alias.name)));
        }
        self.nodes.remove(&id);
        Ok(())
    }

    /// Hangs an ioeventfd on I/O region `id` (see [`RegionEventFd::new`] for the rules). The
    /// same trigger on the same file twice is refused.
    pub(crate) fn add_eventfd(&mut self, id: RegionId, ev: RegionEventFdRequest) -> Result<()> {
        let node = self.node(id)?;
        if !matches!(node.kind, NodeKind::Io) {
            return Err(Error::NotIoRegion(node.name.to_string()));
        }
        let name = node.name.to_string();
        let entry = RegionEventFd::new(
            &name,
            node.size,
            ev.offset,
            ev.size,
            ev.datamatch,
            ev.eventfd,
        )?;
        if node
            .eventfds
            .iter()
            .any(|e| e.matches(entry.offset, entry.size, entry.datamatch, &entry.eventfd))
        {
            return Err(Error::InvalidEventfd {
                name,
                offset: entry.offset,
                reason: "this eventfd is already there with the same size and datamatch".into(),
            });
        }
        self.node_mut(id)?.eventfds.push(entry);
        Ok(())
    }

    /// Removes the ioeventfd added with exactly these arguments.
    pub(crate) fn del_eventfd(
        &mut self,
        id: RegionId,
        offset: u64,
        size: u64,
        datamatch: Option<u64>,
        fd: &vmm_sys_util::eventfd::EventFd,
    ) -> Result<()> {
        let node = self.node_mut(id)?;
        let Some(pos) = node
            .eventfds
            .iter()
            .position(|e| e.matches(offset, size, datamatch, fd))
        else {
            return Err(Error::NoSuchEventfd {
                name: node.name.to_string(),
                offset,
                size,
                datamatch,
            });
        };
        node.eventfds.remove(pos);
        Ok(())
    }

    /// The ioeventfds `view` (this tree's rendering) shows to the guest, sorted.
    pub(crate) fn ioeventfds(&self, view: &[Section]) -> Vec<IoEventFd> {
        eventfd::place(view, |id| {
            self.nodes
                .get(&id)
                .map(|n| n.eventfds.as_slice())
                .filter(|e| !e.is_empty())
        })
    }

    /// How many ioeventfds region `id` holds (mapped or not).
    pub(crate) fn eventfd_count(&self, id: RegionId) -> Result<usize> {
        Ok(self.node(id)?.eventfds.len())
    }

    /// A handle on `id`'s backing memory (see [`RegionAccess`]).
    pub(crate) fn access(&self, id: RegionId) -> Result<RegionAccess> {
        let node = self.node(id)?;
        Ok(RegionAccess {
            name: Arc::clone(&node.name),
            backing: Arc::clone(self.backing(id)?),
        })
    }

    pub(crate) fn write(&self, id: RegionId, offset: u64, data: &[u8]) -> Result<()> {
        let node = self.node(id)?;
        self.backing(id)?
            .access_slice(&node.name, offset, data.len())?
            .copy_from(data);
        Ok(())
    }

    pub(crate) fn read(&self, id: RegionId, offset: u64, data: &mut [u8]) -> Result<()> {
        let node = self.node(id)?;
        self.backing(id)?
            .access_slice(&node.name, offset, data.len())?
            .copy_to(data);
        Ok(())
    }

    /// Computes the flat view: sorted, non-overlapping, merged sections.
    pub(crate) fn render(&self) -> Vec<Section> {
        let mut painter = Painter::default();
        let root_end = u128::from(self.nodes.get(&self.root).map_or(0, |n| n.size));
        self.render_node(self.root, 0, (0, root_end), false, &mut painter);
        painter.finish()
    }

    /// Paints `id` placed at absolute address `base` (which may be negative for the target of
    /// an alias whose offset exceeds its address), restricted to `clip`.
    fn render_node(
        &self,
        id: RegionId,
        base: i128,
        clip: (u128, u128),
        readonly: bool,
        painter: &mut Painter,
    ) {
        let Some(node) = self.nodes.get(&id) else {
            return;
        };
        if !node.enabled {
            return;
        }
        let readonly = readonly || node.readonly;
        let node_start = base;
        let node_end = base.saturating_add(i128::from(node.size));
        // Clip bounds are in [0, 2^64]; an i128 holds both without loss.
        let start = node_start.max(clip.0 as i128);
        let end = node_end.min(clip.1 as i128);
        if start >= end {
            return;
        }
        let clip = (start as u128, end as u128);
        match &node.kind {
            NodeKind::Container { children } => {
                for child in children {
                    let child_base = base.saturating_add(i128::from(child.offset));
                    self.render_node(child.id, child_base, clip, readonly, painter);
                }
            }
            NodeKind::Alias { target, offset } => {
                let target_base = base.saturating_sub(i128::from(*offset));
                self.render_node(*target, target_base, clip, readonly, painter);
            }
            NodeKind::Ram {
                backing, dirty_log, ..
            } => {
                let kind = if readonly {
                    SectionKind::Rom
                } else {
                    SectionKind::Ram
                };
                painter.paint(clip, base, |addr, offset, size| Section {
                    guest_addr: addr,
                    size,
                    kind,
                    host_addr: backing.host_addr().wrapping_add(offset),
                    dirty_log: *dirty_log,
                    region: id,
                    offset_in_region: offset,
                    name: node.name.clone(),
                });
            }
            NodeKind::Io => {
                painter.paint(clip, base, |addr, offset, size| Section {
                    guest_addr: addr,
                    size,
                    kind: SectionKind::Io,
                    host_addr: 0,
                    dirty_log: false,
                    region: id,
                    offset_in_region: offset,
                    name: node.name.clone(),
                });
            }
        }
    }
}
