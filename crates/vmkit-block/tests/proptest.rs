//! Any descriptor table, avail ring and request header a driver can build: the device
//! completes every chain or stops at a malformed one and asks for NEEDS_RESET, never
//! panics, never hangs its I/O thread, and stops cleanly on reset. Random configuration accesses too.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress};
use vmkit_block::{MemoryBackend, VirtioBlk};
use vmkit_virtio::VirtioDevice;

/// A descriptor: address mostly near the request buffers (sometimes anywhere), any
/// length, any flags, any next.
fn descriptor() -> impl Strategy<Value = (u64, u32, u16, u16)> {
    (
        prop_oneof![
            4 => 0u64..0x80_0000,
            1 => any::<u64>(),
            2 => Just(HEADER),
            2 => Just(STATUS),
        ],
        prop_oneof![
            3 => 0u32..2048,
            1 => any::<u32>(),
            1 => Just(16u32),
            1 => Just(1u32),
        ],
        0u16..8,
        0u16..300,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_chains_never_panic_the_device(
        descs in proptest::collection::vec(descriptor(), 1..24),
        heads in proptest::collection::vec(0u16..300, 1..12),
        kind in prop_oneof![Just(0u32), Just(1), Just(4), Just(8), Just(11), Just(13), any::<u32>()],
        sector in prop_oneof![0u64..80, any::<u64>()],
        segment in any::<[u8; 16]>(),
        features in any::<u64>(),
        avail_jump in prop_oneof![5 => Just(0u16), 1 => any::<u16>()],
    ) {
        let backend = Arc::new(MemoryBackend::new(64 * 512));
        let blk = VirtioBlk::new(backend);
        let offered = VirtioDevice::<Mem>::device_features(&blk);
        let mut b = Bench::start(blk, features & offered);
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        b.mem().write_slice(&header, GuestAddress(HEADER)).unwrap();
        b.mem().write_slice(&segment, GuestAddress(HEADER + 16)).unwrap();
        for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
            b.driver.write_desc(i as u16, addr, len, flags, next);
        }
        for &head in &heads {
            b.driver.publish(head);
        }
        if avail_jump != 0 {
            // A driver that moves avail idx arbitrarily far.
            let at = GuestAddress(b.driver.avail_addr() + 2);
            b.mem().write_obj(avail_jump, at).unwrap();
        }
        b.notify.write(1).unwrap();
        // Every published chain gets a defined result: all complete, or the device stops
        // at a malformed one and asks for a reset (once).
        let asked = |b: &Bench| b.irqs.1.load(std::sync::atomic::Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        let target = if avail_jump == 0 { heads.len() as u16 } else { avail_jump };
        while b.driver.used_idx() != target && asked(&b) == 0 {
            prop_assert!(
                Instant::now() < deadline,
                "neither completed ({} of {}) nor NEEDS_RESET",
                b.driver.used_idx(),
                target
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        prop_assert!(asked(&b) <= 1);
        prop_assert!(b.driver.used_idx() as usize <= heads.len().max(usize::from(avail_jump)));
        prop_assert!(b.reset(), "the I/O thread panicked or hung");
    }

    #[test]
    fn random_config_accesses_never_panic(
        ops in proptest::collection::vec((any::<bool>(), 0u64..80, proptest::collection::vec(any::<u8>(), 0..9)), 1..40),
        huge in any::<u64>(),
    ) {
        let backend = Arc::new(MemoryBackend::new(8 * 512));
        let mut blk = VirtioBlk::new(backend.clone());
        for (write, offset, data) in ops {
            if write {
                VirtioDevice::<Mem>::write_config(&mut blk, offset, &data);
            } else {
                let mut buf = data.clone();
                VirtioDevice::<Mem>::read_config(&blk, offset, &mut buf);
            }
        }
        VirtioDevice::<Mem>::write_config(&mut blk, huge, &[1, 2, 3]);
        let mut buf = [0u8; 8];
        VirtioDevice::<Mem>::read_config(&blk, huge, &mut buf);
        // The capacity never changes, whatever was written.
        let c = config(&blk);
        prop_assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 8);
    }
}
