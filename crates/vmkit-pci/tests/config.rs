//! Register-level tests of ConfigSpace against the PCI Local Bus Specification 3.0, ch. 6.

mod common;

use common::bar;
use vmkit_bus::Space;
use vmkit_pci::config::*;
use vmkit_pci::{BarKind, ConfigSpace, Error, Mapping, RegionIndex};

fn space() -> ConfigSpace {
    ConfigSpace::new(0x1234, 0x5678, 0x03, 0x00, 0x00, 0x02)
}

fn wd(c: &mut ConfigSpace, off: u16, v: u32) {
    c.write(off, &v.to_le_bytes());
}

fn ww(c: &mut ConfigSpace, off: u16, v: u16) {
    c.write(off, &v.to_le_bytes());
}

#[test]
fn identity_and_class_are_read_only() {
    let mut c = space();
    assert_eq!(c.dword(0x00), 0x5678_1234);
    assert_eq!(c.dword(0x08), 0x0300_0002);
    wd(&mut c, 0x00, 0xffff_ffff);
    wd(&mut c, 0x08, 0xffff_ffff);
    c.write(HEADER_TYPE, &[0xff]);
    assert_eq!(c.dword(0x00), 0x5678_1234);
    assert_eq!(c.dword(0x08), 0x0300_0002);
    assert_eq!(c.byte(HEADER_TYPE), 0x00);
}

#[test]
fn header_type_multifunction_and_subsystem() {
    let mut c = space();
    c.set_multifunction(true);
    assert_eq!(c.byte(HEADER_TYPE), 0x80);
    c.set_multifunction(false);
    assert_eq!(c.byte(HEADER_TYPE), 0x00);
    c.set_subsystem(0x1af4, 0x1100);
    wd(&mut c, SUBSYSTEM_VENDOR_ID, 0);
    assert_eq!(c.dword(SUBSYSTEM_VENDOR_ID), 0x1100_1af4);
}

#[test]
fn command_register_keeps_only_the_four_writable_bits() {
    let mut c = space();
    assert_eq!(c.command(), 0);
    ww(&mut c, COMMAND, 0xffff);
    assert_eq!(c.command(), 0x0407);
    ww(&mut c, COMMAND, COMMAND_MEMORY);
    assert_eq!(c.command(), COMMAND_MEMORY);
    // A byte write to the high half touches only INTx disable.
    c.write(COMMAND + 1, &[0xff]);
    assert_eq!(c.command(), COMMAND_MEMORY | COMMAND_INTX_DISABLE);
}

#[test]
fn status_error_bits_are_write_one_to_clear() {
    let mut c = space();
    c.set_word(STATUS, STATUS_W1C | STATUS_INTERRUPT);
    ww(&mut c, STATUS, 0);
    assert_eq!(
        c.word(STATUS),
        STATUS_W1C | STATUS_INTERRUPT,
        "writing 0 clears nothing"
    );
    ww(&mut c, STATUS, STATUS_REC_MASTER_ABORT);
    assert_eq!(
        c.word(STATUS),
        (STATUS_W1C & !STATUS_REC_MASTER_ABORT) | STATUS_INTERRUPT
    );
    ww(&mut c, STATUS, 0xffff);
    assert_eq!(
        c.word(STATUS),
        STATUS_INTERRUPT,
        "interrupt status is read-only"
    );
    // Nothing can be set by writing.
    ww(&mut c, STATUS, 0xffff);
    assert_eq!(c.word(STATUS), STATUS_INTERRUPT);
}

#[test]
fn interrupt_line_writable_pin_read_only() {
    let mut c = space();
    c.set_interrupt_pin(2);
    c.write(INTERRUPT_LINE, &[11, 4]);
    assert_eq!(c.byte(INTERRUPT_LINE), 11);
    assert_eq!(c.byte(INTERRUPT_PIN), 2);
    assert_eq!(c.interrupt_pin(), 2);
}

#[test]
fn io_bar_sizes_like_hardware() {
    let mut c = space();
    c.add_bar(0, bar(BarKind::Io, 0x20, false)).unwrap();
    assert_eq!(c.dword(BAR0), 0x1, "bit 0 says I/O");
    wd(&mut c, BAR0, 0xffff_ffff);
    assert_eq!(c.dword(BAR0), 0xffff_ffe1);
    // Size = ~(value & ~3) + 1 as the guest computes it.
    assert_eq!((!(c.dword(BAR0) & !0x3)).wrapping_add(1), 0x20);
    wd(&mut c, BAR0, 0xc0ff);
    assert_eq!(
        c.dword(BAR0),
        0xc0e1,
        "address bits below the size are hardwired 0"
    );
}

#[test]
fn mem32_bar_sizes_with_type_and_prefetch_bits() {
    let mut c = space();
    c.add_bar(1, bar(BarKind::Mem32, 0x1000, false)).unwrap();
    c.add_bar(2, bar(BarKind::Mem32, 0x10_0000, true)).unwrap();
    assert_eq!(c.dword(BAR0 + 4), 0x0);
    assert_eq!(c.dword(BAR0 + 8), 0x8);
    wd(&mut c, BAR0 + 4, 0xffff_ffff);
    wd(&mut c, BAR0 + 8, 0xffff_ffff);
    assert_eq!(c.dword(BAR0 + 4), 0xffff_f000);
    assert_eq!(c.dword(BAR0 + 8), 0xfff0_0008);
}

#[test]
fn mem64_bar_sizes_across_both_dwords() {
    let mut c = space();
    c.add_bar(2, bar(BarKind::Mem64, 0x4000, true)).unwrap();
    assert_eq!(c.dword(BAR0 + 8), 0xc, "type 10b (64-bit) and prefetchable");
    wd(&mut c, BAR0 + 8, 0xffff_ffff);
    wd(&mut c, BAR0 + 12, 0xffff_ffff);
    assert_eq!(c.dword(BAR0 + 8), 0xffff_c00c);
    assert_eq!(c.dword(BAR0 + 12), 0xffff_ffff);
    let size = !((u64::from(c.dword(BAR0 + 12)) << 32) | u64::from(c.dword(BAR0 + 8) & !0xf)) + 1;
    assert_eq!(size, 0x4000);
    // A BAR bigger than 4 GiB: the low dword has no address bits at all.
    let mut c = space();
    c.add_bar(0, bar(BarKind::Mem64, 1 << 34, false)).unwrap();
    wd(&mut c, BAR0, 0xffff_ffff);
    wd(&mut c, BAR0 + 4, 0xffff_ffff);
    assert_eq!(c.dword(BAR0), 0x4);
    assert_eq!(c.dword(BAR0 + 4), 0xffff_fffc);
    assert_eq!(c.bar(1), None, "slot 1 is the upper dword");
}

#[test]
fn unused_bars_read_zero_and_ignore_writes() {
    let mut c = space();
    for i in 0..6 {
        wd(&mut c, BAR0 + 4 * i, 0xffff_ffff);
        assert_eq!(c.dword(BAR0 + 4 * i), 0);
    }
    wd(&mut c, ROM_ADDRESS, 0xffff_ffff);
    assert_eq!(
        c.dword(ROM_ADDRESS),
        0,
        "no ROM: the ROM BAR is hardwired 0"
    );
}

#[test]
fn rom_bar_sizes_and_enables() {
    let mut c = space();
    c.add_rom_bar(0x10000).unwrap();
    wd(&mut c, ROM_ADDRESS, 0xffff_ffff);
    assert_eq!(c.dword(ROM_ADDRESS), 0xffff_0001);
    wd(&mut c, ROM_ADDRESS, 0xffff_fffe);
    assert_eq!(c.dword(ROM_ADDRESS), 0xffff_0000);
    assert_eq!(c.rom_size(), Some(0x10000));

    wd(&mut c, ROM_ADDRESS, 0xfeb0_0000);
    ww(&mut c, COMMAND, COMMAND_MEMORY);
    assert_eq!(c.bar_mapping(RegionIndex::Rom), None, "enable bit clear");
    wd(&mut c, ROM_ADDRESS, 0xfeb0_0001);
    assert_eq!(
        c.bar_mapping(RegionIndex::Rom),
        Some(Mapping {
            space: Space::Mmio,
            addr: 0xfeb0_0000,
            size: 0x10000
        })
    );
    ww(&mut c, COMMAND, 0);
    assert_eq!(c.bar_mapping(RegionIndex::Rom), None, "memory decode off");
}

#[test]
fn declaration_errors_name_the_problem() {
    let mut c = space();
    assert_eq!(
        c.add_bar(6, bar(BarKind::Io, 4, false)),
        Err(Error::BarIndexOutOfRange {
            index: 6,
            kind: BarKind::Io
        })
    );
    assert!(matches!(
        c.add_bar(5, bar(BarKind::Mem64, 16, false)),
        Err(Error::BarIndexOutOfRange { index: 5, .. })
    ));
    c.add_bar(1, bar(BarKind::Mem64, 16, false)).unwrap();
    assert_eq!(
        c.add_bar(2, bar(BarKind::Io, 4, false)),
        Err(Error::BarSlotInUse { index: 2, slot: 2 })
    );
    assert_eq!(
        c.add_bar(0, bar(BarKind::Mem64, 16, false)),
        Err(Error::BarSlotInUse { index: 0, slot: 1 })
    );
    for (kind, size) in [
        (BarKind::Io, 2),
        (BarKind::Io, 512),
        (BarKind::Io, 24),
        (BarKind::Mem32, 8),
        (BarKind::Mem32, 1 << 32),
        (BarKind::Mem64, 0),
    ] {
        let err = c.add_bar(3, bar(kind, size, false)).unwrap_err();
        assert!(
            matches!(err, Error::InvalidBarSize { index: 3, .. }),
            "{kind} {size:#x}"
        );
        assert!(err.to_string().contains("power of two"), "{err}");
    }
    assert_eq!(
        c.add_bar(4, bar(BarKind::Io, 4, true)),
        Err(Error::PrefetchableIoBar { index: 4 })
    );
    assert!(matches!(
        c.add_rom_bar(1024),
        Err(Error::InvalidRomSize { size: 1024, .. })
    ));
    c.add_rom_bar(2048).unwrap();
    assert_eq!(c.add_rom_bar(4096), Err(Error::RomBarInUse));
}

#[test]
fn io_bar_decodes_only_with_io_enable_and_a_sane_address() {
    let mut c = space();
    c.add_bar(0, bar(BarKind::Io, 0x20, false)).unwrap();
    let at = |c: &ConfigSpace| c.bar_mapping(RegionIndex::Bar(0));
    ww(&mut c, COMMAND, COMMAND_IO);
    assert_eq!(at(&c), None, "address 0 is unmapped");
    wd(&mut c, BAR0, 0xc000);
    assert_eq!(
        at(&c),
        Some(Mapping {
            space: Space::Pio,
            addr: 0xc000,
            size: 0x20
        })
    );
    ww(&mut c, COMMAND, COMMAND_MEMORY);
    assert_eq!(at(&c), None, "memory enable does not decode I/O");
    ww(&mut c, COMMAND, COMMAND_IO);
    wd(&mut c, BAR0, 0xffff_ffff);
    assert_eq!(at(&c), None, "sizing value is past port 0xffff");
    wd(&mut c, BAR0, 0xffe0);
    assert_eq!(
        at(&c),
        Some(Mapping {
            space: Space::Pio,
            addr: 0xffe0,
            size: 0x20
        })
    );
    wd(&mut c, BAR0, 0x1_0000);
    assert_eq!(at(&c), None, "above the port space");
}

#[test]
fn mem32_bar_decodes_only_with_memory_enable_and_below_the_sizing_value() {
    let mut c = space();
    c.add_bar(1, bar(BarKind::Mem32, 0x1000, false)).unwrap();
    let at = |c: &ConfigSpace| c.bar_mapping(RegionIndex::Bar(1));
    wd(&mut c, BAR0 + 4, 0xfebf_0000);
    assert_eq!(at(&c), None);
    ww(&mut c, COMMAND, COMMAND_MEMORY | COMMAND_IO);
    assert_eq!(
        at(&c),
        Some(Mapping {
            space: Space::Mmio,
            addr: 0xfebf_0000,
            size: 0x1000
        })
    );
    wd(&mut c, BAR0 + 4, 0xffff_ffff);
    assert_eq!(at(&c), None, "all-ones sizing value is never decoded");
    wd(&mut c, BAR0 + 4, 0xffff_e000);
    assert!(at(&c).is_some());
    assert_eq!(c.bar_mapping(RegionIndex::Bar(0)), None, "undeclared BAR");
    assert_eq!(c.bar_mapping(RegionIndex::Custom(0)), None);
}

#[test]
fn mem64_bar_decodes_the_high_dword() {
    let mut c = space();
    c.add_bar(2, bar(BarKind::Mem64, 0x4000, true)).unwrap();
    ww(&mut c, COMMAND, COMMAND_MEMORY);
    let at = |c: &ConfigSpace| c.bar_mapping(RegionIndex::Bar(2));
    wd(&mut c, BAR0 + 12, 0x8);
    assert_eq!(
        at(&c),
        Some(Mapping {
            space: Space::Mmio,
            addr: 0x8_0000_0000,
            size: 0x4000
        })
    );
    wd(&mut c, BAR0 + 8, 0x1234_8000);
    assert_eq!(
        at(&c),
        Some(Mapping {
            space: Space::Mmio,
            addr: 0x8_1234_8000,
            size: 0x4000
        })
    );
    wd(&mut c, BAR0 + 12, 0);
    assert_eq!(at(&c).map(|m| m.addr), Some(0x1234_8000));
    wd(&mut c, BAR0 + 8, 0xffff_ffff);
    wd(&mut c, BAR0 + 12, 0xffff_ffff);
    assert_eq!(at(&c), None, "all ones in both halves");
    assert_eq!(
        c.bar_mapping(RegionIndex::Bar(3)),
        None,
        "upper half is not a region"
    );
}

#[test]
fn regions_lists_every_decoded_region_in_order() {
    let mut c = common::TestDevice::full(1).cfg;
    assert!(c.regions().is_empty());
    wd(&mut c, BAR0, 0xc000);
    wd(&mut c, BAR0 + 4, 0xfebf_0000);
    wd(&mut c, BAR0 + 8, 0xfe00_0000);
    wd(&mut c, ROM_ADDRESS, 0xfeb0_0001);
    ww(&mut c, COMMAND, COMMAND_IO | COMMAND_MEMORY);
    let kinds: Vec<RegionIndex> = c.regions().into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        kinds,
        [
            RegionIndex::Bar(0),
            RegionIndex::Bar(1),
            RegionIndex::Bar(2),
            RegionIndex::Rom
        ]
    );
}

#[test]
fn capability_list_links_in_order_after_the_header() {
    let mut c = space();
    assert_eq!(c.word(STATUS) & STATUS_CAP_LIST, 0);
    assert!(c.capabilities().is_empty());
    let first = c.add_capability(0x05, &[0; 12]).unwrap();
    let second = c.add_capability(0x09, &[0x05, 0x42, 0x43]).unwrap();
    assert_eq!(first, 0x40);
    assert_eq!(
        second, 0x50,
        "dword aligned after the first (0x40 + 14 -> 0x50)"
    );
    assert_ne!(c.word(STATUS) & STATUS_CAP_LIST, 0);
    assert_eq!(c.byte(CAPABILITY_LIST), 0x40);
    assert_eq!(c.byte(0x41), 0x50);
    assert_eq!(c.byte(0x51), 0x00, "last capability ends the list");
    assert_eq!(
        &[c.byte(0x52), c.byte(0x53), c.byte(0x54)],
        &[0x05, 0x42, 0x43]
    );
    assert_eq!(c.capabilities(), vec![(0x05, 0x40), (0x09, 0x50)]);
    // Pointers and bodies are read-only to the guest; the capability bit survives w1c.
    c.write(CAPABILITY_LIST, &[0x80]);
    wd(&mut c, 0x50, 0xffff_ffff);
    ww(&mut c, STATUS, 0xffff);
    assert_eq!(c.capabilities(), vec![(0x05, 0x40), (0x09, 0x50)]);
    assert_ne!(c.word(STATUS) & STATUS_CAP_LIST, 0);
    // A device may open a capability register to the guest.
    c.set_write_mask_byte(0x54, 0xff);
    c.write(0x54, &[0x99]);
    assert_eq!(c.byte(0x54), 0x99);
}

#[test]
fn capability_that_does_not_fit_is_refused() {
    let mut c = space();
    c.add_capability(0x10, &[0; 0xb0]).unwrap();
    let err = c.add_capability(0x11, &[0; 0x20]).unwrap_err();
    assert_eq!(
        err,
        Error::NoRoomForCapability {
            id: 0x11,
            len: 0x22,
            offset: 0xf4
        }
    );
    assert!(err.to_string().contains("0x100"));
    assert_eq!(c.capabilities().len(), 1, "the list is unchanged");
    c.add_capability(0x11, &[0; 10]).unwrap();
    assert_eq!(c.capabilities().len(), 2, "a small one still fits");
}

#[test]
fn accesses_past_the_end_read_ones_and_are_dropped() {
    let mut c = space();
    c.set_byte(0xff, 0x12);
    let mut w = [0u8; 2];
    c.read(0xff, &mut w);
    assert_eq!(w, [0x12, 0xff]);
    c.write(0x100, &[0]);
    c.set_write_mask_byte(0xff, 0xff);
    c.write(0xff, &[0x34, 0x56]);
    assert_eq!(c.byte(0xff), 0x34);
    assert_eq!(c.dword(0x1000), 0xffff_ffff);
    assert_eq!(c.byte(u16::MAX), 0xff);
    c.write(u16::MAX, &[1, 2, 3, 4]);
    c.set_dword(0xfe, 0xdead_beef);
    assert_eq!(c.word(0xfe), 0xbeef);
}

#[test]
fn device_specific_registers_are_read_only_until_opened() {
    let mut c = space();
    c.write(0x60, &[0xaa]);
    assert_eq!(c.byte(0x60), 0);
    c.set_write_mask_byte(0x60, 0x0f);
    c.write(0x60, &[0xaa]);
    assert_eq!(c.byte(0x60), 0x0a);
    c.set_byte(0x61, 0xff);
    c.set_w1c_mask_byte(0x61, 0x81);
    assert_eq!(
        (c.write_mask_byte(0x60), c.w1c_mask_byte(0x61)),
        (0x0f, 0x81)
    );
    c.write(0x61, &[0x01]);
    assert_eq!(c.byte(0x61), 0xfe);
}

#[test]
fn reset_restores_power_on_values_and_keeps_read_only_bits() {
    let mut c = common::TestDevice::full(7).cfg;
    let power_on = c.clone();
    wd(&mut c, BAR0, 0xc000);
    wd(&mut c, BAR0 + 8, 0xfe00_0000);
    wd(&mut c, BAR0 + 12, 0x1);
    wd(&mut c, ROM_ADDRESS, 0xfeb0_0001);
    ww(&mut c, COMMAND, 0x0407);
    c.write(INTERRUPT_LINE, &[10]);
    c.write(CACHE_LINE_SIZE, &[0x10]);
    c.set_word(STATUS, c.word(STATUS) | STATUS_REC_MASTER_ABORT);
    assert_ne!(c, power_on);
    c.reset();
    assert_eq!(c, power_on);
    assert_eq!(c.dword(BAR0), 0x1, "I/O type bit kept");
    assert_eq!(c.dword(BAR0 + 8), 0xc, "64-bit prefetchable type bits kept");
    assert_eq!(c.capabilities(), vec![(0x09, 0x40)]);
}
