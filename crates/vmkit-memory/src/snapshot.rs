//! vm-memory snapshots of the flat view's RAM and ROM.

use std::sync::Arc;

use vm_memory::bitmap::{Bitmap, WithBitmapSlice};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::error::{Error, Result};
use crate::flat::Section;
use crate::region::{Backing, RegionTree};

/// Keeps the backing memory of a RAM/ROM region mapped while a snapshot region points into it.
///
/// vm-memory's `MmapRegion` carries a bitmap value of a type chosen by its user; this one uses
/// that slot to hold a reference to the owning backing, so the keep-alive travels with every
/// clone of the region (`GuestMemoryMmap::clone`, `GuestRegionMmap::get_mmap`, ...). It tracks
/// no dirty pages: writes through a snapshot are not logged (KVM's dirty log covers the
/// guest's writes).
#[derive(Clone, Debug, Default)]
pub struct BackingRef {
    _backing: Option<Arc<Backing>>,
}

impl WithBitmapSlice<'_> for BackingRef {
    type S = ();
}

impl Bitmap for BackingRef {
    fn mark_dirty(&self, _offset: usize, _len: usize) {}

    fn dirty_at(&self, _offset: usize) -> bool {
        false
    }

    fn slice_at(&self, _offset: usize) {}
}

/// Guest memory made of the flat view's RAM and ROM (ROM is writable here: this is the VMM's
/// view, e.g. for loading firmware), each region at its guest address. Usable wherever
/// vm-memory's `GuestMemoryBackend`/`Bytes<GuestAddress>` is expected (linux-loader, virtio
/// queues).
pub type GuestMemoryView = GuestMemoryMmap<BackingRef>;

/// Builds the snapshot of `view`: one vm-memory region per RAM/ROM section, trimmed to whole
/// pages (sub-page pieces next to an I/O overlay cannot be mapped alone).
pub(crate) fn build(tree: &RegionTree, view: &[Section]) -> Result<GuestMemoryView> {
    let mut regions = Vec::new();
    for section in view.iter().filter_map(Section::page_aligned) {
        let backing = tree.backing(section.region)?;
        let mmap = backing.mmap();
        let (Ok(offset), Ok(len)) = (
            usize::try_from(section.offset_in_region),
            usize::try_from(section.size),
        ) else {
            return Err(Error::GuestMemory(format!(
                "section `{}` does not fit this host",
                section.name
            )));
        };
        if offset.checked_add(len).is_none_or(|end| end > mmap.size()) {
            return Err(Error::GuestMemory(format!(
                "section `{}` [{offset:#x}, +{len:#x}) is outside its backing",
                section.name
            )));
        }
        let start = mmap.as_ptr().wrapping_add(offset);
        let builder = MmapRegionBuilder::new_with_bitmap(
            len,
            BackingRef {
                _backing: Some(Arc::clone(backing)),
            },
        )
        .with_mmap_prot(mmap.prot())
        .with_mmap_flags(mmap.flags());
        // SAFETY: `[start, start + len)` lies inside `backing`'s live mapping (checked just
        // above against its size; `start` is page aligned because both the mapping and the
        // whole-page section offset are). That mapping is only unmapped when the `Backing` is
        // dropped, and the region built here owns an `Arc` of it in its bitmap slot, which
        // vm-memory keeps inside the `MmapRegion` for the region's whole life and through every
        // clone of it. So the range stays mapped for as long as any snapshot or region handle
        // can reach it. The view is non-owning (vm-memory will not munmap it).
        let builder = unsafe { builder.with_raw_mmap_pointer(start) };
        let region = builder
            .build()
            .map_err(|e| Error::GuestMemory(format!("section `{}`: {e}", section.name)))?;
        let region =
            GuestRegionMmap::new(region, GuestAddress(section.guest_addr)).ok_or_else(|| {
                Error::GuestMemory(format!(
                    "section `{}` overflows the guest space",
                    section.name
                ))
            })?;
        regions.push(region);
    }
    if regions.is_empty() {
        return Ok(GuestMemoryView::new());
    }
    GuestMemoryView::from_regions(regions).map_err(|e| Error::GuestMemory(e.to_string()))
}
