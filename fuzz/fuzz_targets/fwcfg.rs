//! fw_cfg: selector, data and DMA registers, with DMA descriptors (control, length,
//! address, big-endian) written into a small guest memory with a gap and a page at the
//! top of the address space.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmkit_fuzz::{access_len, value_bytes};
use vmkit_fwcfg::FwCfg;

const PAGE: u64 = 0x1000;
const REGIONS: [u64; 3] = [0, 0x3000, u64::MAX - 2 * PAGE + 1];

#[derive(Arbitrary, Debug)]
enum Op {
    Select(u16),
    Read {
        offset: u8,
        len: u8,
    },
    Write {
        offset: u8,
        len: u8,
        value: u64,
    },
    Dma {
        desc: u16,
        high: bool,
        control: u32,
        length: u32,
        address: u64,
        split: bool,
    },
    Reset,
}

fn addr(a: u16, high: bool) -> u64 {
    if high {
        REGIONS[2].wrapping_add(u64::from(a))
    } else {
        u64::from(a)
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let ranges: Vec<_> = REGIONS
        .iter()
        .map(|&b| (GuestAddress(b), PAGE as usize))
        .collect();
    let mem = GuestMemoryMmap::<()>::from_ranges(&ranges).unwrap();
    let mut fw = FwCfg::new(&mem);
    let _ = fw.add_file("etc/fuzz", vec![0x5a; 300]);
    let _ = fw.add_file("etc/empty", Vec::new());
    let _ = fw.add_item(0x20, vec![1, 2, 3]);
    fw.set_ram_size(0x8000);
    fw.set_cpus(1, 2);
    fw.set_max_dma_len(0x2000);
    for op in ops {
        match op {
            Op::Select(k) => fw.write(0, &k.to_le_bytes()),
            Op::Read { offset, len } => {
                let mut b = vec![0; access_len(len)];
                fw.read(u64::from(offset % 14), &mut b);
            }
            Op::Write { offset, len, value } => {
                fw.write(u64::from(offset % 14), &value_bytes(value, access_len(len)))
            }
            Op::Dma {
                desc,
                high,
                control,
                length,
                address,
                split,
            } => {
                let at = addr(desc, high);
                let mut d = Vec::new();
                d.extend_from_slice(&control.to_be_bytes());
                d.extend_from_slice(&length.to_be_bytes());
                let target = if address >> 63 == 0 {
                    address % 0x5000
                } else {
                    address
                };
                d.extend_from_slice(&target.to_be_bytes());
                let _ = mem.write_slice(&d, GuestAddress(at));
                if split {
                    fw.write(4, &((at >> 32) as u32).to_be_bytes());
                    fw.write(8, &(at as u32).to_be_bytes());
                } else {
                    fw.write(4, &at.to_be_bytes());
                }
            }
            Op::Reset => fw.reset(),
        }
    }
});
