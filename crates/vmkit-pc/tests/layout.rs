//! The pc memory map and its e820 map, without KVM.

use proptest::prelude::*;
use vmkit_memory::{
    AddressSpace, ListenerError, ListenerEvent, ListenerResult, MemoryListener, RecordingListener,
    Section, SectionKind,
};
use vmkit_pc::layout::{
    EBDA_START, FOUR_GIB, HIGH_MEMORY_START, KVM_IDENTITY_MAP_ADDRESS, LEGACY_HOLE_START,
    MAX_RAM_SIZE, PCI_HOLE_START,
};
use vmkit_pc::{build_memory, E820Map, E820Type, Error, MemoryLayout};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// RAM sections of the flat view as (guest address, size, offset in pc.ram).
fn flat_ram(space: &AddressSpace) -> Vec<(u64, u64, u64)> {
    space
        .flat_view()
        .iter()
        .filter(|s| s.kind == SectionKind::Ram)
        .map(|s| {
            assert_eq!(&*s.name, "pc.ram");
            (s.guest_addr, s.size, s.offset_in_region)
        })
        .collect()
}

/// The e820 RAM entries with the EBDA entry folded back into the RAM below it (the EBDA is
/// mapped RAM the OS must not use), adjacent entries merged.
fn e820_mapped_ram(map: &E820Map) -> Vec<(u64, u64)> {
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for e in map.entries() {
        let ebda = e.kind == E820Type::Reserved && e.addr == EBDA_START;
        if e.kind != E820Type::Ram && !ebda {
            continue;
        }
        match merged.last_mut() {
            Some((addr, size)) if *addr + *size == e.addr => *size += e.size,
            _ => merged.push((e.addr, e.size)),
        }
    }
    merged
}

fn e820_tuples(map: &E820Map) -> Vec<(u64, u64, u32)> {
    map.entries()
        .iter()
        .map(|e| (e.addr, e.size, e.kind.code()))
        .collect()
}

/// Builds the memory for `ram_size` and checks flat view, layout and e820 against each other.
fn check_built(ram_size: u64) -> (MemoryLayout, Vec<(u64, u64, u64)>) {
    let mut space = AddressSpace::new("system");
    let layout = build_memory(&mut space, ram_size).unwrap();
    let ram = flat_ram(&space);
    let expected: Vec<_> = layout
        .ram_ranges()
        .iter()
        .map(|r| (r.guest_addr, r.size, r.ram_offset))
        .collect();
    assert_eq!(ram, expected, "flat view RAM == layout ranges");
    let from_e820 = e820_mapped_ram(&layout.e820());
    let from_view: Vec<_> = ram.iter().map(|&(a, s, _)| (a, s)).collect();
    assert_eq!(from_e820, from_view, "e820 RAM (+EBDA) == flat view RAM");
    let e820 = layout.e820();
    // Nothing usable in the legacy hole or the PCI hole.
    for e in e820.entries().iter().filter(|e| e.kind == E820Type::Ram) {
        let end = e.addr + e.size;
        assert!(end <= EBDA_START || e.addr >= HIGH_MEMORY_START, "{e:?}");
        assert!(end <= PCI_HOLE_START || e.addr >= FOUR_GIB, "{e:?}");
    }
    assert_eq!(e820.total(E820Type::Ram), layout.usable_ram());
    (layout, ram)
}

#[test]
fn ram_128_mib_is_all_below_the_hole() {
    let (layout, ram) = check_built(128 * MIB);
    assert_eq!(layout.below_4g_size(), 128 * MIB);
    assert_eq!(layout.above_4g_size(), 0);
    assert_eq!(layout.ram_end(), 128 * MIB);
    assert_eq!(
        ram,
        vec![
            (0, 640 * KIB, 0),
            (MIB, 127 * MIB, MIB), // same offsets as addresses: an identity alias
        ]
    );
    assert_eq!(
        e820_tuples(&layout.e820()),
        vec![
            (0, 0x9_fc00, 1),
            (0x9_fc00, 0x400, 2),
            (0xf_0000, 0x1_0000, 2),
            (MIB, 127 * MIB, 1),
            (0xfeff_c000, 0x4000, 2),
        ]
    );
    assert_eq!(layout.usable_ram(), 128 * MIB - 385 * KIB);
}

#[test]
fn ram_3_gib_fills_exactly_up_to_the_pci_hole() {
    let (layout, ram) = check_built(3 * GIB);
    assert_eq!(layout.below_4g_size(), PCI_HOLE_START);
    assert_eq!(layout.above_4g_size(), 0);
    assert_eq!(ram.last(), Some(&(MIB, 3 * GIB - MIB, MIB)));
    assert!(layout.above_4g_range().is_none());
}

#[test]
fn ram_3_5_gib_puts_half_a_gib_above_4_gib() {
    let (layout, ram) = check_built(3 * GIB + 512 * MIB);
    assert_eq!(layout.below_4g_size(), 3 * GIB);
    assert_eq!(layout.above_4g_size(), 512 * MIB);
    assert_eq!(layout.ram_end(), FOUR_GIB + 512 * MIB);
    assert_eq!(
        ram,
        vec![
            (0, 640 * KIB, 0),
            (MIB, 3 * GIB - MIB, MIB),
            (FOUR_GIB, 512 * MIB, 3 * GIB), // continues pc.ram after the low part
        ]
    );
    let e820 = layout.e820();
    assert_eq!(
        e820.find(FOUR_GIB + 512 * MIB - 1).map(|e| e.kind),
        Some(E820Type::Ram)
    );
    assert_eq!(e820.find(FOUR_GIB + 512 * MIB), None);
    assert_eq!(e820.find(3 * GIB), None, "the PCI hole is not RAM");
}

#[test]
fn ram_8_gib_keeps_the_hole_and_maps_5_gib_high() {
    let (layout, ram) = check_built(8 * GIB);
    assert_eq!(layout.below_4g_size(), 3 * GIB);
    assert_eq!(layout.above_4g_size(), 5 * GIB);
    assert_eq!(ram.len(), 3);
    assert_eq!(ram[2], (FOUR_GIB, 5 * GIB, 3 * GIB));
    assert_eq!(layout.ram_end(), 9 * GIB);
    assert_eq!(
        e820_tuples(&layout.e820()).last(),
        Some(&(FOUR_GIB, 5 * GIB, 1))
    );
    assert_eq!(
        layout.to_string(),
        "pc memory: 0x200000000 bytes of RAM; ram-low [0x0, 0xa0000); ram-below-4g \
         [0x100000, 0xc0000000); ram-above-4g [0x100000000, 0x240000000)"
    );
}

#[test]
fn one_mib_of_ram_has_only_conventional_memory() {
    let (layout, ram) = check_built(MIB);
    assert_eq!(ram, vec![(0, LEGACY_HOLE_START, 0)]);
    assert!(layout.below_4g_range().is_none());
    assert_eq!(layout.usable_ram(), EBDA_START);
}

#[test]
fn regions_are_aliases_of_one_backing() {
    let mut space = AddressSpace::new("system");
    let layout = MemoryLayout::new(4 * GIB).unwrap();
    let regions = layout.map_into(&mut space).unwrap();
    assert_eq!(space.region_name(regions.ram).unwrap(), "pc.ram");
    assert_eq!(space.region_size(regions.ram).unwrap(), 4 * GIB);
    assert_eq!(space.region_name(regions.low).unwrap(), "ram-low");
    let below = regions.below_4g.unwrap();
    let above = regions.above_4g.unwrap();
    assert_eq!(space.region_name(below).unwrap(), "ram-below-4g");
    assert_eq!(space.region_name(above).unwrap(), "ram-above-4g");
    assert_eq!(space.region_size(above).unwrap(), GIB);
    assert_eq!(space.region_parent(regions.ram).unwrap(), None);
    assert_eq!(space.region_parent(above).unwrap(), Some(space.root()));

    // A byte written through the guest view at 4 GiB lands at pc.ram offset 3 GiB.
    use vm_memory::{Bytes, GuestAddress};
    space
        .memory_snapshot()
        .write_obj(0xabu8, GuestAddress(FOUR_GIB))
        .unwrap();
    let mut byte = [0u8];
    space.read_region(regions.ram, 3 * GIB, &mut byte).unwrap();
    assert_eq!(byte[0], 0xab);
}

#[test]
fn build_memory_is_one_transaction() {
    let mut space = AddressSpace::new("system");
    let recorder = RecordingListener::new();
    space.register_listener(Box::new(recorder.clone())).unwrap();
    recorder.take();
    build_memory(&mut space, 5 * GIB).unwrap();
    let events = recorder.take();
    let begins = events
        .iter()
        .filter(|e| matches!(e, ListenerEvent::Begin))
        .count();
    let adds = events
        .iter()
        .filter(|e| matches!(e, ListenerEvent::Add(_)))
        .count();
    assert_eq!((begins, adds), (1, 3), "{events:?}");
}

#[test]
fn bad_ram_sizes_are_refused_with_clear_messages() {
    let cases = [
        (0, "RAM size is zero"),
        (MIB + 1, "not a multiple of 4 KiB"),
        (512 * KIB, "too small"),
        (MAX_RAM_SIZE + 4 * KIB, "too large"),
        (u64::MAX - 4095, "too large"),
    ];
    for (size, message) in cases {
        let err = MemoryLayout::new(size).unwrap_err();
        assert!(err.to_string().contains(message), "{size:#x}: {err}");
        let mut space = AddressSpace::new("system");
        assert!(build_memory(&mut space, size).is_err());
        assert!(space.flat_view().is_empty(), "nothing mapped on error");
    }
    assert!(matches!(
        MemoryLayout::new(512 * KIB),
        Err(Error::RamSizeTooSmall { size, min }) if size == 512 * KIB && min == MIB
    ));
    assert!(MemoryLayout::new(MAX_RAM_SIZE).is_ok());
}

/// Refuses every RAM section above 4 GiB (as a KVM listener out of slots would).
struct RefuseHighRam;

impl MemoryListener for RefuseHighRam {
    fn name(&self) -> &str {
        "refuse-high"
    }

    fn region_add(&mut self, section: &Section) -> ListenerResult {
        if section.guest_addr >= FOUR_GIB {
            return Err(ListenerError::new("no slot for high RAM"));
        }
        Ok(())
    }
}

#[test]
fn a_refused_build_changes_nothing() {
    let mut space = AddressSpace::new("system");
    space.register_listener(Box::new(RefuseHighRam)).unwrap();
    let err = build_memory(&mut space, 5 * GIB).unwrap_err();
    assert!(err.to_string().contains("refuse-high"), "{err}");
    assert!(
        space.flat_view().is_empty(),
        "the whole transaction was undone"
    );
    // A size that stays below 4 GiB goes through.
    build_memory(&mut space, 2 * GIB).unwrap();
    assert_eq!(flat_ram(&space).len(), 2);
}

#[test]
fn e820_map_rejects_overlaps_and_empty_entries() {
    let mut map = E820Map::new();
    map.add(0x1000, 0x1000, E820Type::Ram).unwrap();
    map.add(0x3000, 0x1000, E820Type::Acpi).unwrap();
    map.add(0, 0x1000, E820Type::Reserved).unwrap();
    assert_eq!(
        e820_tuples(&map),
        vec![(0, 0x1000, 2), (0x1000, 0x1000, 1), (0x3000, 0x1000, 3)],
        "kept sorted, adjacent entries not merged"
    );
    for (addr, size) in [(0x1800, 0x100), (0x0fff, 2), (0x2000, 0x1001), (0, 0x10000)] {
        let err = map.add(addr, size, E820Type::Ram).unwrap_err();
        assert!(matches!(err, Error::E820Overlap { .. }), "{err}");
    }
    assert!(matches!(
        map.add(0x5000, 0, E820Type::Ram),
        Err(Error::E820Invalid { .. })
    ));
    assert!(matches!(
        map.add(u64::MAX, 2, E820Type::Ram),
        Err(Error::E820Invalid { .. })
    ));
    map.add(u64::MAX - 0xfff, 0x1000, E820Type::Reserved)
        .unwrap();
    assert_eq!(map.len(), 4);
    assert_eq!(map.find(0x3fff).map(|e| e.kind), Some(E820Type::Acpi));
    assert_eq!(map.find(0x2000), None);
    assert_eq!(map.total(E820Type::Reserved), 0x2000);
}

#[test]
fn e820_encoding_is_packed_little_endian_and_round_trips() {
    let map = MemoryLayout::new(128 * MIB).unwrap().e820();
    let bytes = map.encode();
    assert_eq!(bytes.len(), map.len() * E820Map::RECORD_SIZE);
    // First record: addr 0, size 0x9fc00, type 1.
    assert_eq!(&bytes[..8], &[0; 8]);
    assert_eq!(&bytes[8..16], &0x9_fc00u64.to_le_bytes());
    assert_eq!(&bytes[16..20], &[1, 0, 0, 0]);
    assert_eq!(E820Map::decode(&bytes).unwrap(), map);
    assert!(map.len() <= E820Map::ZEROPAGE_MAX_ENTRIES);
    let text = map.to_string();
    assert!(
        text.starts_with("[mem 0x0000000000000000-0x000000000009fbff] usable\n"),
        "{text}"
    );
    assert!(text.contains("[mem 0x00000000feffc000-0x00000000feffffff] reserved"));
    assert_eq!(E820Type::from_code(9), E820Type::Other(9));
    assert_eq!(E820Type::Other(9).code(), 9);
    for code in 1..=7 {
        assert_eq!(E820Type::from_code(code).code(), code);
    }
}

#[test]
fn kvm_pages_are_reserved_inside_the_pci_hole() {
    let e820 = MemoryLayout::new(3 * GIB).unwrap().e820();
    let entry = e820.find(KVM_IDENTITY_MAP_ADDRESS).unwrap();
    assert_eq!(entry.kind, E820Type::Reserved);
    assert!(entry.addr >= PCI_HOLE_START);
    // It ends exactly where the largest (16 MiB) firmware image starts.
    assert_eq!(entry.end(), u128::from(FOUR_GIB - (16 << 20)));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any valid size: the ranges tile exactly ram_size bytes of pc.ram (minus the hidden
    /// legacy 384 KiB), never touch a hole, and agree with the e820 map.
    #[test]
    fn layout_invariants(pages in (MIB / 4096)..=(MAX_RAM_SIZE / 4096)) {
        let ram_size = pages * 4096;
        let layout = MemoryLayout::new(ram_size).unwrap();
        let ranges = layout.ram_ranges();
        let mapped: u64 = ranges.iter().map(|r| r.size).sum();
        prop_assert_eq!(mapped, ram_size - (HIGH_MEMORY_START - LEGACY_HOLE_START));
        prop_assert_eq!(layout.below_4g_size() + layout.above_4g_size(), ram_size);
        let mut next_offset = 0;
        for r in &ranges {
            prop_assert!(r.ram_offset >= next_offset);
            next_offset = r.ram_offset + r.size;
            let end = r.end();
            prop_assert!(end <= LEGACY_HOLE_START || r.guest_addr >= HIGH_MEMORY_START);
            prop_assert!(end <= PCI_HOLE_START || r.guest_addr >= FOUR_GIB);
            prop_assert!(r.guest_addr % 4096 == 0 && r.size % 4096 == 0 && r.size > 0);
        }
        prop_assert_eq!(next_offset, ram_size);
        let e820 = layout.e820();
        let expected: Vec<_> = ranges.iter().map(|r| (r.guest_addr, r.size)).collect();
        prop_assert_eq!(e820_mapped_ram(&e820), expected);
        prop_assert_eq!(e820.total(E820Type::Ram), layout.usable_ram());
    }
}
