//! Random guest access sequences: selector writes, data reads, stray writes, resets and DMA
//! descriptors with random (in RAM, at region edges, outside RAM, wrapping) addresses and
//! lengths. Properties: no panic; after every access only the bytes the spec allows changed
//! (the descriptor's control word and, for a READ, its buffer); the control word reads back
//! 0 or ERROR; a successful READ delivered exactly the item bytes (zero-padded); the offset
//! never passes the end of the selected item.
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_fwcfg::{
    FwCfg, FW_CFG_DMA_CTL_ERROR, FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT, FW_CFG_DMA_CTL_SKIP,
    FW_CFG_DMA_CTL_WRITE, FW_CFG_FILE_DIR, FW_CFG_ID, FW_CFG_SIGNATURE,
};

type Mem = GuestMemoryMmap<()>;

const PAGE: u64 = 0x1000;
/// Three 4 KiB regions: low RAM, one after a gap, and the highest page vm-memory accepts
/// (a region may not end at `u64::MAX`), so descriptors and buffers can wrap right after RAM.
const REGIONS: [u64; 3] = [0, 0x3000, u64::MAX - 2 * PAGE + 1];

fn memory() -> Mem {
    let ranges: Vec<_> = REGIONS
        .iter()
        .map(|&b| (GuestAddress(b), PAGE as usize))
        .collect();
    let mem = Mem::from_ranges(&ranges).unwrap();
    for (i, &b) in REGIONS.iter().enumerate() {
        let fill: Vec<u8> = (0..PAGE).map(|x| (x as u8) ^ (0x5A + i as u8)).collect();
        mem.write_slice(&fill, GuestAddress(b)).unwrap();
    }
    mem
}

fn snapshot(mem: &Mem) -> Vec<Vec<u8>> {
    REGIONS
        .iter()
        .map(|&b| {
            let mut v = vec![0u8; PAGE as usize];
            mem.read_slice(&mut v, GuestAddress(b)).unwrap();
            v
        })
        .collect()
}

fn in_ram(addr: u64, len: u64) -> bool {
    REGIONS
        .iter()
        .any(|&b| addr >= b && (addr - b) as u128 + len as u128 <= PAGE as u128)
}

#[derive(Debug, Clone)]
enum Op {
    Select(u16),
    Read {
        offset: u64,
        len: usize,
    },
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    Reset,
    Dma {
        desc: u64,
        control: u32,
        length: u32,
        address: u64,
        single_write: bool,
    },
}

fn key() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(FW_CFG_SIGNATURE),
        Just(FW_CFG_ID),
        Just(FW_CFG_FILE_DIR),
        0x20u16..0x26,
        Just(0x8003u16),
        any::<u16>(),
    ]
}

fn address() -> impl Strategy<Value = u64> {
    prop_oneof![
        0u64..PAGE,
        (0x3000 - 0x20u64)..(0x4000 + 0x20),
        (PAGE - 0x20)..(PAGE + 0x20),
        (u64::MAX - 2 * PAGE - 0x20)..=u64::MAX,
        any::<u64>(),
    ]
}

fn length() -> impl Strategy<Value = u32> {
    prop_oneof![
        0u32..0x180,
        0u32..0x2100,
        (u32::MAX - 0x20)..=u32::MAX,
        any::<u32>(),
    ]
}

fn control() -> impl Strategy<Value = u32> {
    let bits = prop_oneof![
        Just(FW_CFG_DMA_CTL_READ),
        Just(FW_CFG_DMA_CTL_SKIP),
        Just(FW_CFG_DMA_CTL_WRITE),
        0u32..0x20,
    ];
    prop_oneof![
        3 => (key(), bits, any::<bool>()).prop_map(|(k, b, sel)| {
            (u32::from(k) << 16) | b | if sel { FW_CFG_DMA_CTL_SELECT } else { 0 }
        }),
        1 => any::<u32>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => key().prop_map(Op::Select),
        4 => ((0u64..14), 1usize..5).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => ((0u64..14), proptest::collection::vec(any::<u8>(), 1..9))
            .prop_map(|(offset, data)| Op::Write { offset, data }),
        1 => Just(Op::Reset),
        4 => (address(), control(), length(), address(), any::<bool>()).prop_map(
            |(desc, control, length, address, single_write)| Op::Dma {
                desc,
                control,
                length,
                address,
                single_write,
            }
        ),
    ]
}

fn device(mem: &Mem) -> FwCfg<&Mem> {
    let mut dev = FwCfg::new(mem);
    dev.set_cpus(2, 4);
    dev.set_ram_size(3 * PAGE);
    dev.add_item(0x8003, vec![0xE8; 20]).unwrap();
    dev.add_file("empty", Vec::new()).unwrap();
    dev.add_file("one", vec![1]).unwrap();
    dev.add_file("etc/hundred", (0..100u8).collect::<Vec<_>>())
        .unwrap();
    dev.add_file(
        "etc/big",
        (0..0x1800u32).map(|x| (x * 7) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    dev.add_e820(&[(0u64, PAGE, 1u32), (0x3000, PAGE, 1)])
        .unwrap();
    dev
}

/// What a DMA trigger will do, worked out from RAM before the access (independently of the
/// device's code): which bytes may change and what a successful READ must deliver.
struct Expect {
    desc: u64,
    allowed: Vec<(u128, u128)>,
    read: Option<(u64, Vec<u8>)>,
}

fn expect_dma(mem: &Mem, dev: &FwCfg<&Mem>, desc: u64) -> Expect {
    let mut allowed = vec![(desc as u128, desc as u128 + 4)];
    let mut read = None;
    if in_ram(desc, 16) {
        let mut raw = [0u8; 16];
        mem.read_slice(&mut raw, GuestAddress(desc)).unwrap();
        let control = u32::from_be_bytes(raw[0..4].try_into().unwrap());
        let length = u32::from_be_bytes(raw[4..8].try_into().unwrap());
        let address = u64::from_be_bytes(raw[8..16].try_into().unwrap());
        if control & FW_CFG_DMA_CTL_READ != 0 {
            allowed.push((address as u128, address as u128 + length as u128));
            let (sel, off) = if control & FW_CFG_DMA_CTL_SELECT != 0 {
                ((control >> 16) as u16, 0usize)
            } else {
                (dev.selector(), dev.offset() as usize)
            };
            let data = dev.item(sel).unwrap_or(&[]);
            let mut want: Vec<u8> = data
                .iter()
                .skip(off)
                .take(length as usize)
                .copied()
                .collect();
            if in_ram(address, u64::from(length)) {
                want.resize(length as usize, 0);
                read = Some((address, want));
            }
        }
    }
    Expect {
        desc,
        allowed,
        read,
    }
}

fn check_diff(
    before: &[Vec<u8>],
    after: &[Vec<u8>],
    allowed: &[(u128, u128)],
) -> Result<(), String> {
    for (r, &base) in REGIONS.iter().enumerate() {
        for i in 0..PAGE as usize {
            if before[r][i] != after[r][i] {
                let a = base as u128 + i as u128;
                if !allowed.iter().any(|&(s, e)| a >= s && a < e) {
                    return Err(format!(
                        "byte {a:#x} changed outside the allowed ranges {allowed:x?}"
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_accesses_stay_inside_the_rules(ops in proptest::collection::vec(op(), 1..40)) {
        let mem = memory();
        let mut dev = device(&mem);
        // Shadow of the DMA address register (high half written, low half pending).
        let mut dma_addr: u64 = 0;
        for op in ops {
            let before = snapshot(&mem);
            let mut trigger = None;
            match &op {
                Op::Select(k) => dev.write(0, &k.to_le_bytes()),
                Op::Read { offset, len } => {
                    let item = dev.item(dev.selector()).unwrap_or(&[]).to_vec();
                    let at = dev.offset() as usize;
                    let mut buf = vec![0xAAu8; *len];
                    dev.read(*offset, &mut buf);
                    match (*offset, *len) {
                        (0 | 1, 1) => {
                            prop_assert_eq!(buf[0], item.get(at).copied().unwrap_or(0));
                            prop_assert_eq!(dev.offset() as usize, (at + 1).min(item.len().max(at)));
                        }
                        (0 | 1, _) => prop_assert!(buf.iter().all(|&b| b == 0)),
                        _ => prop_assert_eq!(dev.offset() as usize, at),
                    }
                }
                Op::Write { offset, data } => {
                    match (*offset, data.len()) {
                        (4, 4) => dma_addr = u64::from(u32::from_be_bytes(data[..4].try_into().unwrap())) << 32,
                        (8, 4) => {
                            trigger = Some(dma_addr | u64::from(u32::from_be_bytes(data[..4].try_into().unwrap())));
                            dma_addr = 0;
                        }
                        (4, 8) => {
                            trigger = Some(u64::from_be_bytes(data[..8].try_into().unwrap()));
                            dma_addr = 0;
                        }
                        _ => {}
                    }
                    let expect = trigger.map(|d| expect_dma(&mem, &dev, d));
                    dev.write(*offset, data);
                    let after = snapshot(&mem);
                    let allowed = expect.map(|e| e.allowed).unwrap_or_default();
                    prop_assert!(check_diff(&before, &after, &allowed).is_ok(), "{:?}", check_diff(&before, &after, &allowed));
                    continue;
                }
                Op::Reset => {
                    dev.reset();
                    dma_addr = 0;
                    prop_assert_eq!(dev.selector(), FW_CFG_SIGNATURE);
                }
                Op::Dma { desc, control, length, address, single_write } => {
                    if in_ram(*desc, 16) {
                        let mut d = Vec::new();
                        d.extend_from_slice(&control.to_be_bytes());
                        d.extend_from_slice(&length.to_be_bytes());
                        d.extend_from_slice(&address.to_be_bytes());
                        mem.write_slice(&d, GuestAddress(*desc)).unwrap();
                    }
                    let before = snapshot(&mem);
                    let expect = expect_dma(&mem, &dev, *desc);
                    if *single_write {
                        dev.write(4, &desc.to_be_bytes());
                    } else {
                        dev.write(4, &((desc >> 32) as u32).to_be_bytes());
                        dev.write(8, &(*desc as u32).to_be_bytes());
                    }
                    dma_addr = 0;
                    let after = snapshot(&mem);
                    let diff = check_diff(&before, &after, &expect.allowed);
                    prop_assert!(diff.is_ok(), "{:?}", diff);
                    if in_ram(expect.desc, 4) {
                        let mut c = [0u8; 4];
                        mem.read_slice(&mut c, GuestAddress(expect.desc)).unwrap();
                        let status = u32::from_be_bytes(c);
                        prop_assert!(status == 0 || status == FW_CFG_DMA_CTL_ERROR, "status {status:#x}");
                        if let (0, Some((addr, want))) = (status, &expect.read) {
                            let mut got = vec![0u8; want.len()];
                            mem.read_slice(&mut got, GuestAddress(*addr)).unwrap();
                            // The control word write-back may land inside the buffer.
                            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                                let a = addr + i as u64;
                                if !(expect.desc..expect.desc + 4).contains(&a) {
                                    prop_assert_eq!(g, w, "byte {:#x}", a);
                                }
                            }
                        }
                    }
                    continue;
                }
            }
            let after = snapshot(&mem);
            prop_assert!(check_diff(&before, &after, &[]).is_ok(), "non-DMA access changed RAM");
            let len = dev.item(dev.selector()).map_or(0, |d| d.len());
            prop_assert!(dev.offset() as usize <= len);
        }
        let len = dev.item(dev.selector()).map_or(0, |d| d.len());
        prop_assert!(dev.offset() as usize <= len);
    }
}
