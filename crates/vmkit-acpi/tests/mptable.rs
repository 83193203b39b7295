//! The MP table parsed back from guest memory by an independent parser.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_acpi::mptable::{mptable_size, MAX_CPUS, MPTABLE_END, MPTABLE_START};
use vmkit_acpi::{write_mptable_at, write_mptable_to_ebda, Error, Irq0Pin, MpTableConfig};

fn memory(size: usize) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

#[derive(Debug, Default)]
struct Parsed {
    cpus: Vec<(u8, u8)>,             // (apic id, flags)
    buses: Vec<(u8, String)>,        // (id, type)
    ioapics: Vec<(u8, u8, u8, u32)>, // (id, version, flags, address)
    io_ints: Vec<(u8, u8, u8, u8)>,  // (type, src irq, dst ioapic, pin)
    local_ints: Vec<(u8, u8, u8)>,   // (type, dst apic, lint)
    local_apic: u32,
    table_len: usize,
}

/// Scans guest memory like a guest kernel: find "_MP_" on a 16-byte boundary, check it,
/// follow the pointer, check the configuration table and walk its entries.
fn parse(mem: &GuestMemoryMmap, scan: std::ops::Range<u64>) -> Parsed {
    let mut area = vec![0u8; (scan.end - scan.start) as usize];
    mem.read_slice(&mut area, GuestAddress(scan.start)).unwrap();
    let at = (0..area.len())
        .step_by(16)
        .find(|&i| area[i..].starts_with(b"_MP_"))
        .expect("no _MP_ floating pointer");
    let fp = &area[at..at + 16];
    assert_eq!(sum(fp), 0, "floating pointer checksum");
    assert_eq!(fp[8], 1, "length in paragraphs");
    assert_eq!(fp[9], 4, "spec revision 1.4");
    assert_eq!(fp[11], 0, "configuration table present");
    let table_addr = u32_at(fp, 4) as u64;

    let mut header = [0u8; 44];
    mem.read_slice(&mut header, GuestAddress(table_addr))
        .unwrap();
    assert_eq!(&header[..4], b"PCMP");
    let len = u16_at(&header, 4) as usize;
    let mut table = vec![0u8; len];
    mem.read_slice(&mut table, GuestAddress(table_addr))
        .unwrap();
    assert_eq!(sum(&table), 0, "configuration table checksum");
    assert_eq!(table[6], 4);
    assert_eq!(u16_at(&table, 40), 0, "no extended table");
    let count = u16_at(&table, 34) as usize;

    let mut parsed = Parsed {
        local_apic: u32_at(&table, 36),
        table_len: len,
        ..Parsed::default()
    };
    let mut off = 44;
    for _ in 0..count {
        let e = &table[off..];
        off += match e[0] {
            0 => {
                parsed.cpus.push((e[1], e[3]));
                20
            }
            1 => {
                parsed
                    .buses
                    .push((e[1], String::from_utf8_lossy(&e[2..8]).into_owned()));
                8
            }
            2 => {
                parsed.ioapics.push((e[1], e[2], e[3], u32_at(e, 4)));
                8
            }
            3 => {
                assert_eq!(u16_at(e, 2), 0, "conforming polarity/trigger");
                assert_eq!(e[4], 0, "source bus ISA");
                parsed.io_ints.push((e[1], e[5], e[6], e[7]));
                8
            }
            4 => {
                parsed.local_ints.push((e[1], e[6], e[7]));
                8
            }
            other => panic!("unknown entry type {other}"),
        };
    }
    assert_eq!(off, len, "entries fill the table exactly");
    parsed
}

#[test]
fn mp_table_for_1_2_4_and_40_cpus() {
    for n in [1u32, 2, 4, 40] {
        let mem = memory(1 << 20);
        let range = write_mptable_to_ebda(&mem, n).unwrap();
        assert_eq!(range.start, MPTABLE_START);
        assert_eq!(
            range.end - range.start,
            mptable_size(&MpTableConfig::new(n))
        );
        assert!(range.end <= MPTABLE_END);

        let p = parse(&mem, 0x9_fc00..0xa_0000);
        assert_eq!(p.table_len as u64 + 16, range.end - range.start);
        assert_eq!(p.local_apic, 0xfee0_0000);
        let expected: Vec<(u8, u8)> = (0..n as u8)
            .map(|i| (i, if i == 0 { 3 } else { 1 }))
            .collect();
        assert_eq!(p.cpus, expected, "APIC ids, enabled, BSP only on 0");
        assert_eq!(p.buses, [(0, "ISA   ".to_string())]);
        assert_eq!(p.ioapics, [(n as u8, 0x11, 1, 0xfec0_0000)]);
        let ioapic = n as u8;
        let routes: Vec<_> = (0..16).map(|irq| (0, irq, ioapic, irq)).collect();
        assert_eq!(p.io_ints, routes, "ISA IRQ i -> pin i");
        assert_eq!(
            p.local_ints,
            [(3, 0xff, 0), (1, 0xff, 1)],
            "LINT0 ExtINT, LINT1 NMI"
        );
    }
}

#[test]
fn irq0_on_pin2_routing() {
    let mem = memory(1 << 20);
    let config = MpTableConfig {
        irq0_pin: Irq0Pin::Pin2,
        ..MpTableConfig::new(2)
    };
    write_mptable_at(&mem, &config).unwrap();
    let p = parse(&mem, 0x9_fc00..0xa_0000);
    assert_eq!(p.io_ints.len(), 15);
    assert_eq!(p.io_ints[0], (0, 0, 2, 2));
    assert!(p
        .io_ints
        .iter()
        .all(|&(_, irq, _, pin)| irq != 2 && (irq == 0 || irq == pin)));
}

#[test]
fn mp_table_limits() {
    let mem = memory(1 << 20);
    for n in [0, MAX_CPUS + 1, 1000] {
        let err = write_mptable_to_ebda(&mem, n).unwrap_err();
        assert!(
            matches!(err, Error::TooManyCpus { max: 254, .. }),
            "{n}: {err}"
        );
    }
    // 41 CPUs no longer fit in the EBDA's KiB...
    let err = write_mptable_to_ebda(&mem, 41).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MpTableNoRoom {
                cpus: 41,
                available: 1024,
                ..
            }
        ),
        "{err}"
    );
    // ...but 254 fit in a larger area.
    let config = MpTableConfig {
        area: 0xf_0000..0x10_0000,
        ..MpTableConfig::new(MAX_CPUS)
    };
    let range = write_mptable_at(&mem, &config).unwrap();
    let p = parse(&mem, range.clone());
    assert_eq!(p.cpus.len(), 254);
    assert_eq!(p.ioapics[0].0, 254);
    // An area outside guest memory is a memory error, not a panic.
    let config = MpTableConfig {
        area: 0x20_0000..0x30_0000,
        ..MpTableConfig::new(2)
    };
    assert!(matches!(
        write_mptable_at(&mem, &config),
        Err(Error::GuestMemory {
            addr: 0x20_0000,
            ..
        })
    ));
    // An area above 4 GiB cannot be pointed at.
    let config = MpTableConfig {
        area: u64::MAX - 10..u64::MAX,
        ..MpTableConfig::new(1)
    };
    assert!(matches!(
        write_mptable_at(&mem, &config),
        Err(Error::MpTableNoRoom { .. })
    ));
}
