//! PciBus: slots, absent functions, region bookkeeping through a recording mapper.

mod common;

use std::sync::Arc;

use common::{Event, RecordingMapper, TestDevice};
use vmkit_bus::Space;
use vmkit_pci::config::{BAR0, COMMAND, COMMAND_IO, COMMAND_MEMORY, ROM_ADDRESS};
use vmkit_pci::{intx_swizzle, DevFn, Error, Mapping, PciBus, RegionIndex};

fn bus_with_mapper() -> (PciBus, Arc<RecordingMapper>) {
    let mapper = Arc::new(RecordingMapper::default());
    (PciBus::with_mapper(mapper.clone()), mapper)
}

fn wd(bus: &PciBus, devfn: DevFn, off: u16, v: u32) {
    bus.config_write(devfn, off, &v.to_le_bytes());
}

fn rd(bus: &PciBus, devfn: DevFn, off: u16) -> u32 {
    let mut b = [0; 4];
    bus.config_read(devfn, off, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn devfn_numbers_and_names() {
    let d = DevFn::new(1, 3);
    assert_eq!(d, DevFn(0x0b));
    assert_eq!((d.device(), d.function()), (1, 3));
    assert_eq!(d.to_string(), "00:01.3");
    assert_eq!(DevFn::new(0x1f, 7).to_string(), "00:1f.7");
    assert_eq!(DevFn::new(0x20, 8), DevFn(0), "high bits dropped");
    assert_eq!(RegionIndex::Bar(2).to_string(), "bar2");
    assert_eq!(RegionIndex::Rom.to_string(), "rom");
    assert_eq!(RegionIndex::Custom(1).to_string(), "custom1");
}

#[test]
fn intx_swizzle_matches_qemu_pc_and_seabios() {
    // (slot - 1 + pin - 1) mod 4.
    assert_eq!(intx_swizzle(DevFn::new(1, 0), 1), Some(0));
    assert_eq!(intx_swizzle(DevFn::new(1, 1), 4), Some(3));
    assert_eq!(intx_swizzle(DevFn::new(2, 0), 1), Some(1));
    assert_eq!(intx_swizzle(DevFn::new(3, 0), 2), Some(3));
    assert_eq!(intx_swizzle(DevFn::new(4, 0), 2), Some(0));
    assert_eq!(intx_swizzle(DevFn::new(0, 0), 1), Some(3));
    assert_eq!(intx_swizzle(DevFn::new(31, 0), 4), Some(1));
    assert_eq!(intx_swizzle(DevFn::new(5, 0), 0), None, "no interrupt pin");
    assert_eq!(intx_swizzle(DevFn::new(5, 0), 5), None);
}

#[test]
fn occupied_slot_is_refused_by_name() {
    let bus = PciBus::new();
    let devfn = DevFn::new(1, 3);
    bus.add(DevFn::new(1, 0), TestDevice::new(1).shared())
        .unwrap();
    bus.add(devfn, TestDevice::new(2).shared()).unwrap();
    let err = bus.add(devfn, TestDevice::new(3).shared()).unwrap_err();
    assert_eq!(err, Error::DevFnInUse { devfn });
    assert!(err.to_string().contains("00:01.3"), "{err}");
    assert_eq!(bus.devfns(), vec![DevFn::new(1, 0), devfn]);
    assert_eq!(rd(&bus, devfn, 0) >> 16, 2, "the first device stays");
}

#[test]
fn absent_functions_read_ones_and_ignore_writes() {
    let bus = PciBus::new();
    assert_eq!(rd(&bus, DevFn::new(5, 0), 0), 0xffff_ffff);
    wd(&bus, DevFn::new(5, 0), 4, 0xffff);
    // Function 2 without function 0 is invisible.
    let f2 = DevFn::new(3, 2);
    bus.add(f2, TestDevice::new(0x22).shared()).unwrap();
    assert!(!bus.is_present(f2));
    assert_eq!(rd(&bus, f2, 0), 0xffff_ffff);
    wd(&bus, f2, 0x3c, 9);
    bus.add(DevFn::new(3, 0), TestDevice::new(0x20).shared())
        .unwrap();
    assert!(bus.is_present(f2));
    assert_eq!(rd(&bus, f2, 0), 0x0022_8086);
    assert_eq!(
        rd(&bus, f2, 0x3c) & 0xff,
        0,
        "the earlier write went nowhere"
    );
    let mut b = [0u8; 1];
    bus.config_read(f2, 0x3c, &mut b);
    assert_eq!(b, [0]);
}

#[test]
fn bars_are_mapped_moved_and_unmapped_after_config_writes() {
    let (bus, mapper) = bus_with_mapper();
    let devfn = DevFn::new(2, 0);
    bus.add(devfn, TestDevice::full(1).shared()).unwrap();
    assert!(
        mapper.take_events().is_empty(),
        "nothing decodes at power-on"
    );

    wd(&bus, devfn, BAR0, 0xc000);
    wd(&bus, devfn, BAR0 + 4, 0xfebf_0000);
    assert!(mapper.take_events().is_empty(), "decode still off");
    bus.config_write(devfn, COMMAND, &COMMAND_IO.to_le_bytes());
    let io = Mapping {
        space: Space::Pio,
        addr: 0xc000,
        size: 0x20,
    };
    assert_eq!(
        mapper.take_events(),
        vec![Event::Map(devfn, RegionIndex::Bar(0), io)]
    );

    bus.config_write(devfn, COMMAND, &(COMMAND_IO | COMMAND_MEMORY).to_le_bytes());
    let mem = Mapping {
        space: Space::Mmio,
        addr: 0xfebf_0000,
        size: 0x1000,
    };
    assert_eq!(
        mapper.take_events(),
        vec![Event::Map(devfn, RegionIndex::Bar(1), mem)]
    );

    // Moving the I/O BAR: unmap at the old place, then map at the new.
    wd(&bus, devfn, BAR0, 0xc100);
    let moved = Mapping { addr: 0xc100, ..io };
    assert_eq!(
        mapper.take_events(),
        vec![
            Event::Unmap(devfn, RegionIndex::Bar(0), io),
            Event::Map(devfn, RegionIndex::Bar(0), moved)
        ]
    );
    // Rewriting the same value changes nothing.
    wd(&bus, devfn, BAR0, 0xc100);
    assert!(mapper.take_events().is_empty());

    // Sizing with decode on: the all-ones value is not decoded, so the BAR unmaps.
    wd(&bus, devfn, BAR0 + 4, 0xffff_ffff);
    assert_eq!(
        mapper.take_events(),
        vec![Event::Unmap(devfn, RegionIndex::Bar(1), mem)]
    );
    wd(&bus, devfn, BAR0 + 4, 0xfebf_0000);
    assert_eq!(
        mapper.take_events(),
        vec![Event::Map(devfn, RegionIndex::Bar(1), mem)]
    );

    // The ROM needs its enable bit.
    wd(&bus, devfn, ROM_ADDRESS, 0xfeb0_0000);
    assert!(mapper.take_events().is_empty());
    wd(&bus, devfn, ROM_ADDRESS, 0xfeb0_0001);
    let rom = Mapping {
        space: Space::Mmio,
        addr: 0xfeb0_0000,
        size: 0x10000,
    };
    assert_eq!(
        mapper.take_events(),
        vec![Event::Map(devfn, RegionIndex::Rom, rom)]
    );
    assert_eq!(
        bus.mapped(devfn),
        vec![
            (RegionIndex::Bar(0), moved),
            (RegionIndex::Bar(1), mem),
            (RegionIndex::Rom, rom)
        ]
    );

    // Clearing memory decode unmaps both memory regions but not the I/O BAR.
    bus.config_write(devfn, COMMAND, &COMMAND_IO.to_le_bytes());
    assert_eq!(
        mapper.take_events(),
        vec![
            Event::Unmap(devfn, RegionIndex::Bar(1), mem),
            Event::Unmap(devfn, RegionIndex::Rom, rom)
        ]
    );

    // Reset unmaps the rest and clears the BARs.
    bus.reset();
    assert_eq!(
        mapper.take_events(),
        vec![Event::Unmap(devfn, RegionIndex::Bar(0), moved)]
    );
    assert!(bus.mapped(devfn).is_empty());
    assert_eq!(rd(&bus, devfn, BAR0), 0x1);
    assert!(mapper.inconsistencies.lock().unwrap().is_empty());
}

#[test]
fn adding_a_decoding_device_maps_it_and_removing_unmaps_it() {
    let (bus, mapper) = bus_with_mapper();
    let mut dev = TestDevice::full(1);
    dev.cfg.set_dword(BAR0, 0xd001);
    dev.cfg.set_word(COMMAND, COMMAND_IO);
    let devfn = DevFn::new(4, 0);
    bus.add(devfn, dev.shared()).unwrap();
    let io = Mapping {
        space: Space::Pio,
        addr: 0xd000,
        size: 0x20,
    };
    assert_eq!(
        mapper.take_events(),
        vec![Event::Map(devfn, RegionIndex::Bar(0), io)]
    );
    assert!(bus.remove(devfn).is_some());
    assert_eq!(
        mapper.take_events(),
        vec![Event::Unmap(devfn, RegionIndex::Bar(0), io)]
    );
    assert!(bus.remove(devfn).is_none());
    assert!(bus.device(devfn).is_none());
}

#[test]
fn a_refused_mapping_is_reported_once_and_retried_later() {
    let (bus, mapper) = bus_with_mapper();
    let devfn = DevFn::new(2, 0);
    bus.add(devfn, TestDevice::full(1).shared()).unwrap();
    let io = Mapping {
        space: Space::Pio,
        addr: 0xc000,
        size: 0x20,
    };
    mapper.refuse.lock().unwrap().push(io);
    wd(&bus, devfn, BAR0, 0xc000);
    bus.config_write(devfn, COMMAND, &COMMAND_IO.to_le_bytes());
    assert!(bus.mapped(devfn).is_empty());
    let errors = bus.take_map_errors();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].to_string().contains("00:02.0 bar0"),
        "{}",
        errors[0]
    );
    // Unrelated writes retry but do not report again.
    bus.config_write(devfn, 0x3c, &[5]);
    assert!(bus.take_map_errors().is_empty());
    // Once the conflict is gone, the next config write anywhere maps it.
    mapper.refuse.lock().unwrap().clear();
    bus.config_write(devfn, 0x3c, &[6]);
    assert_eq!(bus.mapped(devfn), vec![(RegionIndex::Bar(0), io)]);
    assert_eq!(
        mapper.take_events(),
        vec![Event::Map(devfn, RegionIndex::Bar(0), io)]
    );
}

#[test]
fn bus_without_mapper_keeps_bookkeeping() {
    let bus = PciBus::new();
    let devfn = DevFn::new(1, 0);
    bus.add(devfn, TestDevice::full(1).shared()).unwrap();
    wd(&bus, devfn, BAR0, 0xc000);
    bus.config_write(devfn, COMMAND, &COMMAND_IO.to_le_bytes());
    assert_eq!(
        bus.mapped(devfn),
        vec![(
            RegionIndex::Bar(0),
            Mapping {
                space: Space::Pio,
                addr: 0xc000,
                size: 0x20
            }
        )]
    );
    bus.update_mappings(devfn);
    assert_eq!(bus.mapped(devfn).len(), 1);
    assert!(format!("{bus:?}").contains("00:01.0"));
}
