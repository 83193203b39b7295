//! Registration, removal and dispatch rules of both buses.

mod common;

use std::sync::{Arc, Mutex};

use common::{pattern, Recorder, Seen};
use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::DevicePio;
use vmkit_bus::{Dispatch, Error, MmioBus, MmioRange, PioBus, PioRange, Space};

fn seen(device: &Arc<Mutex<Recorder>>) -> Vec<Seen> {
    device.lock().unwrap().seen.clone()
}

fn pio(base: u16, size: u16) -> PioRange {
    PioRange::new(base, size).unwrap()
}

fn mmio(base: u64, size: u64) -> MmioRange {
    MmioRange::new(base, size).unwrap()
}

#[test]
fn overlap_rules_at_range_edges() {
    let bus = PioBus::new();
    bus.insert(pio(0x10, 8), "mid", Recorder::new(1)).unwrap();

    // Touching but not overlapping, on either side.
    bus.insert(pio(0x08, 8), "below", Recorder::new(2)).unwrap();
    bus.insert(pio(0x18, 8), "above", Recorder::new(3)).unwrap();

    // Anything sharing even one port is refused, whatever its shape.
    for (base, size) in [
        (0x17, 1),
        (0x0F, 2),
        (0x10, 8),
        (0x12, 2),
        (0x00, 0x100),
        (0x1F, 1),
    ] {
        let err = bus
            .insert(pio(base, size), "new", Recorder::new(9))
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Overlap {
                    space: Space::Pio,
                    ..
                }
            ),
            "{base:#x}+{size}"
        );
    }
    assert_eq!(bus.len(), 3);

    // The error names both devices and both ranges.
    let err = bus
        .insert(pio(0x14, 0x10), "fdc", Recorder::new(9))
        .unwrap_err();
    assert_eq!(
        err,
        Error::Overlap {
            space: Space::Pio,
            name: "fdc".into(),
            base: 0x14,
            last: 0x23,
            existing_name: "mid".into(),
            existing_base: 0x10,
            existing_last: 0x17,
        }
    );
    let message = err.to_string();
    for part in ["\"fdc\"", "0x14..=0x23", "\"mid\"", "0x10..=0x17"] {
        assert!(message.contains(part), "{message} lacks {part}");
    }

    // A gap of exactly one port between two ranges can still be filled.
    bus.insert(pio(0x21, 1), "after-gap", Recorder::new(4))
        .unwrap();
    bus.insert(pio(0x20, 1), "gap", Recorder::new(5)).unwrap();
    assert_eq!(bus.len(), 5);
}

#[test]
fn ranges_at_the_top_of_both_spaces() {
    let bus = PioBus::new();
    let top = Recorder::new(1);
    bus.insert(pio(0xFFF8, 8), "top", top.clone()).unwrap();
    assert!(bus
        .insert(pio(0xFFFF, 1), "again", Recorder::new(2))
        .is_err());
    assert!(matches!(
        PioRange::new(0xFFF9, 8),
        Err(Error::RangeOverflow { .. })
    ));
    assert_eq!(bus.write(0xFFFF, &[7]), Dispatch::Handled);
    assert_eq!(
        seen(&top)[0],
        Seen {
            write: true,
            base: 0xFFF8,
            offset: 7,
            len: 1,
            first: 7
        }
    );

    let bus = MmioBus::new();
    let top = Recorder::new(1);
    bus.insert(mmio(u64::MAX - 0xFFF, 0x1000), "top", top.clone())
        .unwrap();
    assert!(bus
        .insert(mmio(u64::MAX, 1), "again", Recorder::new(2))
        .is_err());
    bus.insert(mmio(u64::MAX - 0x1FFF, 0x1000), "below", Recorder::new(3))
        .unwrap();
    let mut data = [0u8; 8];
    assert_eq!(bus.read(u64::MAX - 7, &mut data), Dispatch::Handled);
    assert_eq!(seen(&top)[0].offset, 0xFF8);
    assert_eq!(bus.lookup(u64::MAX).unwrap().1.as_ref(), "top");
}

#[test]
fn device_gets_base_and_offset() {
    let bus = PioBus::new();
    let com1 = Recorder::new(3);
    bus.insert(pio(0x3f8, 8), "com1", com1.clone()).unwrap();
    let mut data = [0u8; 2];
    assert_eq!(bus.read(0x3fa, &mut data), Dispatch::Handled);
    assert_eq!(data, [pattern(3, 2), pattern(3, 3)]);
    assert_eq!(bus.write(0x3fd, &[0x42]), Dispatch::Handled);
    assert_eq!(
        seen(&com1),
        vec![
            Seen {
                write: false,
                base: 0x3f8,
                offset: 2,
                len: 2,
                first: 0
            },
            Seen {
                write: true,
                base: 0x3f8,
                offset: 5,
                len: 1,
                first: 0x42
            },
        ]
    );

    let bus = MmioBus::new();
    let bar = Recorder::new(4);
    bus.insert(mmio(0xfeb0_0000, 0x1000), "bar", bar.clone())
        .unwrap();
    assert_eq!(
        bus.write(0xfeb0_0ff8, &[1, 2, 3, 4, 5, 6, 7, 8]),
        Dispatch::Handled
    );
    assert_eq!(
        seen(&bar),
        vec![Seen {
            write: true,
            base: 0xfeb0_0000,
            offset: 0xff8,
            len: 8,
            first: 1
        }]
    );
}

#[test]
fn unassigned_reads_are_all_ones_and_writes_are_dropped() {
    let bus = PioBus::new();
    let dev = Recorder::new(1);
    bus.insert(pio(0x60, 1), "kbd", dev.clone()).unwrap();
    for size in [1usize, 2, 4] {
        let mut data = [0u8; 4];
        assert_eq!(bus.read(0x80, &mut data[..size]), Dispatch::Unassigned);
        assert!(data[..size].iter().all(|&b| b == 0xFF));
        assert!(
            data[size..].iter().all(|&b| b == 0),
            "bytes past the access untouched"
        );
        assert_eq!(bus.write(0x80, &data[..size]), Dispatch::Unassigned);
    }
    assert!(seen(&dev).is_empty());

    let mmio_bus = MmioBus::new();
    let mut data = [0u8; 8];
    assert_eq!(mmio_bus.read(u64::MAX - 7, &mut data), Dispatch::Unassigned);
    assert_eq!(data, [0xFF; 8]);
    assert_eq!(mmio_bus.write(0, &data), Dispatch::Unassigned);

    let stats = bus.stats();
    assert_eq!((stats.unassigned_reads, stats.unassigned_writes), (3, 3));
    assert_eq!(
        (stats.reads, stats.writes, stats.accesses, stats.unassigned),
        (3, 3, 6, 6)
    );
    assert_eq!(stats.ranges[0].accesses, 0);
    let stats = mmio_bus.stats();
    assert_eq!((stats.unassigned_reads, stats.unassigned_writes), (1, 1));
}

#[test]
fn sizes_other_than_1_2_4_8_never_reach_a_device() {
    let bus = MmioBus::new();
    let dev = Recorder::new(1);
    bus.insert(mmio(0x1000, 0x100), "dev", dev.clone()).unwrap();
    for size in [1usize, 2, 4, 8] {
        let mut data = [0u8; 8];
        assert_eq!(bus.read(0x1010, &mut data[..size]), Dispatch::Handled);
        assert_eq!(bus.write(0x1010, &data[..size]), Dispatch::Handled);
    }
    let sizes: Vec<usize> = seen(&dev).iter().map(|s| s.len).collect();
    assert_eq!(sizes, [1, 1, 2, 2, 4, 4, 8, 8]);

    for size in [0usize, 3, 5, 6, 7, 9, 16, 4096] {
        let mut data = vec![0u8; size];
        assert_eq!(bus.read(0x1010, &mut data), Dispatch::InvalidSize);
        assert!(data.iter().all(|&b| b == 0xFF));
        assert_eq!(bus.write(0x1010, &data), Dispatch::InvalidSize);
    }
    assert_eq!(seen(&dev).len(), 8, "no invalid access reached the device");
    let stats = bus.stats();
    assert_eq!(stats.invalid_size, 16);
    assert_eq!((stats.unassigned_reads, stats.unassigned_writes), (8, 8));
}

#[test]
fn straddling_the_end_of_a_range_splits_into_bytes() {
    let bus = PioBus::new();
    let dev = Recorder::new(2);
    bus.insert(pio(0x100, 4), "dev", dev.clone()).unwrap();

    // Two bytes inside (offsets 2 and 3), two past the end.
    let mut data = [0u8; 4];
    assert_eq!(bus.read(0x102, &mut data), Dispatch::Split);
    assert_eq!(data, [pattern(2, 2), pattern(2, 3), 0xFF, 0xFF]);
    assert_eq!(bus.write(0x102, &[0xA, 0xB, 0xC, 0xD]), Dispatch::Split);
    assert_eq!(
        seen(&dev),
        vec![
            Seen {
                write: false,
                base: 0x100,
                offset: 2,
                len: 1,
                first: 0
            },
            Seen {
                write: false,
                base: 0x100,
                offset: 3,
                len: 1,
                first: 0
            },
            Seen {
                write: true,
                base: 0x100,
                offset: 2,
                len: 1,
                first: 0xA
            },
            Seen {
                write: true,
                base: 0x100,
                offset: 3,
                len: 1,
                first: 0xB
            },
        ]
    );
    let stats = bus.stats();
    assert_eq!(stats.split, 2);
    assert_eq!((stats.ranges[0].reads, stats.ranges[0].writes), (2, 2));
    assert_eq!((stats.unassigned_reads, stats.unassigned_writes), (2, 2));
}

#[test]
fn straddling_into_a_range_and_across_two_ranges() {
    let bus = MmioBus::new();
    let low = Recorder::new(1);
    let high = Recorder::new(2);
    bus.insert(mmio(0x1000, 0x10), "low", low.clone()).unwrap();
    bus.insert(mmio(0x1010, 0x10), "high", high.clone())
        .unwrap();

    // Starts in unassigned space, runs into "low".
    let mut data = [0u8; 4];
    assert_eq!(bus.read(0xFFE, &mut data), Dispatch::Split);
    assert_eq!(data, [0xFF, 0xFF, pattern(1, 0), pattern(1, 1)]);

    // Crosses from "low" into "high": each byte goes to its own device at its own offset.
    let mut data = [0u8; 8];
    assert_eq!(bus.read(0x100C, &mut data), Dispatch::Split);
    let expected: Vec<u8> = (0xC..0x10)
        .map(|o| pattern(1, o))
        .chain((0..4).map(|o| pattern(2, o)))
        .collect();
    assert_eq!(data.to_vec(), expected);
    let high_offsets: Vec<u64> = seen(&high).iter().map(|s| s.offset).collect();
    assert_eq!(high_offsets, [0, 1, 2, 3]);
    assert!(seen(&low)
        .iter()
        .chain(seen(&high).iter())
        .all(|s| s.len == 1));
}

#[test]
fn accesses_past_the_top_of_the_space_do_not_wrap() {
    let bus = PioBus::new();
    let top = Recorder::new(1);
    let zero = Recorder::new(2);
    bus.insert(pio(0xFFFF, 1), "top", top.clone()).unwrap();
    bus.insert(pio(0, 4), "zero", zero.clone()).unwrap();
    let mut data = [0u8; 4];
    assert_eq!(bus.read(0xFFFF, &mut data), Dispatch::Split);
    assert_eq!(data, [pattern(1, 0), 0xFF, 0xFF, 0xFF]);
    assert_eq!(bus.write(0xFFFE, &[1, 2]), Dispatch::Split);
    assert_eq!(seen(&top).len(), 2);
    assert!(
        seen(&zero).is_empty(),
        "port 0x10000 must not wrap to port 0"
    );
    assert_eq!(bus.read(0xFFFE, &mut data[..2]), Dispatch::Split);
    assert_eq!(data[..2], [0xFF, pattern(1, 0)]);

    let bus = MmioBus::new();
    let top = Recorder::new(3);
    let zero = Recorder::new(4);
    bus.insert(mmio(u64::MAX - 1, 2), "top", top.clone())
        .unwrap();
    bus.insert(mmio(0, 8), "zero", zero.clone()).unwrap();
    let mut data = [0u8; 8];
    assert_eq!(bus.read(u64::MAX - 1, &mut data), Dispatch::Split);
    assert_eq!(
        data,
        [
            pattern(3, 0),
            pattern(3, 1),
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF,
            0xFF
        ]
    );
    assert_eq!(bus.write(u64::MAX, &[0; 8]), Dispatch::Split);
    assert!(seen(&zero).is_empty());
    // All in unassigned space near the top: no device, no wrap.
    let bus = MmioBus::new();
    assert_eq!(bus.read(u64::MAX - 2, &mut data), Dispatch::Unassigned);
}

#[test]
fn removal_and_re_add() {
    let bus = PioBus::new();
    let first = Recorder::new(1);
    bus.insert(pio(0x70, 2), "rtc", first.clone()).unwrap();
    assert_eq!(bus.write(0x70, &[0x0A]), Dispatch::Handled);

    // Removal by any port of the range returns that very range and device.
    let (range, device) = bus.remove(0x71).unwrap();
    assert_eq!(range, pio(0x70, 2));
    let first_dyn: Arc<dyn DevicePio + Send + Sync> = first.clone();
    assert!(Arc::ptr_eq(&device, &first_dyn));
    assert!(bus.is_empty());
    assert_eq!(bus.write(0x70, &[0x0B]), Dispatch::Unassigned);
    assert_eq!(
        bus.remove(0x70).err(),
        Some(Error::NotFound {
            space: Space::Pio,
            addr: 0x70
        })
    );

    // The freed range can be mapped again, to another device with fresh counters.
    let second = Recorder::new(2);
    bus.insert(pio(0x70, 2), "rtc", second.clone()).unwrap();
    assert_eq!(bus.write(0x71, &[0x0C]), Dispatch::Handled);
    assert_eq!(seen(&first).len(), 1);
    assert_eq!(seen(&second)[0].first, 0x0C);

    let stats = bus.stats();
    assert_eq!(stats.ranges.len(), 1);
    assert_eq!(stats.ranges[0].writes, 1);
    // Bus totals keep what the removed range handled.
    assert_eq!((stats.writes, stats.unassigned_writes), (3, 1));
}

#[test]
fn remove_named_takes_every_range_of_a_device() {
    let bus = PioBus::new();
    let pic = Recorder::new(1);
    bus.insert(pio(0xA0, 2), "pic", pic.clone()).unwrap();
    bus.insert(pio(0x20, 2), "pic", pic.clone()).unwrap();
    bus.insert(pio(0x40, 4), "pit", Recorder::new(2)).unwrap();
    let removed = bus.remove_named("pic");
    let ranges: Vec<PioRange> = removed.iter().map(|(r, _)| *r).collect();
    assert_eq!(ranges, [pio(0x20, 2), pio(0xA0, 2)]);
    assert!(bus.remove_named("pic").is_empty());
    assert_eq!(bus.len(), 1);
    assert_eq!(
        bus.lookup(0x43).map(|(r, n)| (r, n.to_string())),
        Some((pio(0x40, 4), "pit".into()))
    );
}

#[test]
fn stats_list_every_range_in_order() {
    let bus = MmioBus::new();
    bus.insert(mmio(0x2000, 0x100), "b", Recorder::new(2))
        .unwrap();
    bus.insert(mmio(0x1000, 0x100), "a", Recorder::new(1))
        .unwrap();
    bus.insert(mmio(0x3000, 0x100), "a", Recorder::new(1))
        .unwrap();
    let mut data = [0u8; 4];
    for _ in 0..3 {
        bus.read(0x1004, &mut data);
    }
    bus.write(0x2000, &data);
    bus.write(0x3000, &data);
    let stats = bus.stats();
    let summary: Vec<(&str, u64, u64, u64, u64)> = stats
        .ranges
        .iter()
        .map(|r| (&*r.name, r.base, r.last, r.reads, r.writes))
        .collect();
    assert_eq!(
        summary,
        [
            ("a", 0x1000, 0x10FF, 3, 0),
            ("b", 0x2000, 0x20FF, 0, 1),
            ("a", 0x3000, 0x30FF, 0, 1)
        ]
    );
    assert_eq!(stats.ranges_named("a").map(|r| r.accesses).sum::<u64>(), 4);
    assert_eq!((stats.accesses, stats.reads, stats.writes), (5, 3, 2));
}

#[test]
fn handle_sees_later_insertions_and_removals() {
    let bus = PioBus::new();
    let mut handle = bus.handle();
    assert_eq!(handle.write(0x80, &[1]), Dispatch::Unassigned);
    let post = Recorder::new(1);
    bus.insert(pio(0x80, 1), "post", post.clone()).unwrap();
    assert_eq!(handle.write(0x80, &[2]), Dispatch::Handled);
    bus.remove(0x80).unwrap();
    assert_eq!(handle.write(0x80, &[3]), Dispatch::Unassigned);
    assert_eq!(seen(&post).len(), 1);
    assert_eq!(handle.bus().stats().unassigned_writes, 2);

    let mmio_bus = MmioBus::new();
    let mut handle = mmio_bus.handle();
    mmio_bus
        .insert(mmio(0x1000, 8), "dev", Recorder::new(5))
        .unwrap();
    let mut data = [0u8; 2];
    assert_eq!(handle.read(0x1006, &mut data), Dispatch::Handled);
    assert_eq!(data, [pattern(5, 6), pattern(5, 7)]);
    assert_eq!(handle.read(0x1007, &mut data), Dispatch::Split);
}

/// A device that implements vm-device's shared-reference trait directly, without a Mutex.
struct Constant;

impl DevicePio for Constant {
    fn pio_read(&self, _: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        data.fill(offset as u8);
    }
    fn pio_write(&self, _: PioAddress, _: PioAddressOffset, _: &[u8]) {}
}

#[test]
fn plain_vm_device_devices_plug_in() {
    let bus = PioBus::new();
    let range = vm_device::bus::PioRange::new(PioAddress(0x510), 2).unwrap();
    bus.insert(range.into(), "fw_cfg", Arc::new(Constant))
        .unwrap();
    let mut data = [0u8; 1];
    assert_eq!(bus.read(0x511, &mut data), Dispatch::Handled);
    assert_eq!(data, [1]);
    assert!(format!("{bus:?}").contains("fw_cfg"));
}
