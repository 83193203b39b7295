//! The bus against a byte-by-byte model of the address space.

mod common;

use common::{pattern, Recorder};
use proptest::prelude::*;
use vmkit_bus::{Dispatch, MmioBus, MmioRange, PioBus, PioRange};

/// Which range (index into `accepted`) holds `addr`, by linear search.
fn owner(accepted: &[(u64, u64)], addr: u64) -> Option<usize> {
    accepted
        .iter()
        .position(|&(base, last)| base <= addr && addr <= last)
}

/// What the model says a read of `len` bytes at `addr` returns, and how it was dispatched.
fn model_read(accepted: &[(u64, u64)], max: u64, addr: u64, len: usize) -> (Vec<u8>, Dispatch) {
    if !matches!(len, 1 | 2 | 4 | 8) {
        return (vec![0xFF; len], Dispatch::InvalidSize);
    }
    let owners: Vec<Option<usize>> = (0..len as u64)
        .map(|k| {
            addr.checked_add(k)
                .filter(|a| *a <= max)
                .and_then(|a| owner(accepted, a))
        })
        .collect();
    let bytes = owners
        .iter()
        .zip(0u64..)
        .map(|(o, k)| match o {
            Some(i) => pattern(*i as u8, addr + k - accepted[*i].0),
            None => 0xFF,
        })
        .collect();
    let dispatch = if owners.iter().all(Option::is_none) {
        Dispatch::Unassigned
    } else if owners[0].is_some() && owners.iter().all(|o| *o == owners[0]) {
        Dispatch::Handled
    } else {
        Dispatch::Split
    };
    (bytes, dispatch)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Insertions succeed exactly when the model finds no overlap, and every read returns the
    /// bytes and outcome the model predicts (ports near 0xFFFF included).
    #[test]
    fn pio_matches_model(
        ranges in prop::collection::vec((0xFF00u16..=0xFFFF, 1u16..24), 1..12),
        accesses in prop::collection::vec((0xFEF0u16..=0xFFFF, 0usize..10), 1..40),
    ) {
        let bus = PioBus::new();
        let mut accepted: Vec<(u64, u64)> = Vec::new();
        for (base, size) in ranges {
            let Ok(range) = PioRange::new(base, size) else {
                prop_assert!(u32::from(base) + u32::from(size) > 0x10000);
                continue;
            };
            let span = (u64::from(range.base()), u64::from(range.last()));
            let overlaps = accepted.iter().any(|&(b, l)| b <= span.1 && span.0 <= l);
            let id = accepted.len() as u8;
            let inserted = bus.insert(range, format!("r{id}"), Recorder::new(id));
            prop_assert_eq!(inserted.is_ok(), !overlaps);
            if inserted.is_ok() {
                accepted.push(span);
            }
        }
        for (port, len) in accesses {
            let mut data = vec![0u8; len];
            let got = bus.read(port, &mut data);
            let (bytes, dispatch) = model_read(&accepted, 0xFFFF, u64::from(port), len);
            prop_assert_eq!(got, dispatch);
            prop_assert_eq!(data, bytes);
        }
    }

    /// The same near the top of the 64-bit MMIO space, with a removal in the middle.
    #[test]
    fn mmio_matches_model_across_removal(
        ranges in prop::collection::vec((0u64..0x200, 1u64..0x40), 1..10),
        remove_at in 0u64..0x200,
        accesses in prop::collection::vec((0u64..0x210, 0usize..10), 1..40),
    ) {
        let top = u64::MAX - 0x1FF;
        let bus = MmioBus::new();
        let mut accepted: Vec<(u64, u64)> = Vec::new();
        let mut ids: Vec<u8> = Vec::new();
        for (offset, size) in ranges {
            let Ok(range) = MmioRange::new(top + offset, size) else { continue };
            let span = (range.base(), range.last());
            let overlaps = accepted.iter().any(|&(b, l)| b <= span.1 && span.0 <= l);
            let id = ids.len() as u8;
            prop_assert_eq!(bus.insert(range, "r", Recorder::new(id)).is_ok(), !overlaps);
            if !overlaps {
                accepted.push(span);
                ids.push(id);
            }
        }
        let victim = owner(&accepted, top + remove_at);
        prop_assert_eq!(bus.remove(top + remove_at).is_ok(), victim.is_some());
        // Keep the model's indices equal to device ids: mark the removed range as empty.
        if let Some(i) = victim {
            accepted[i] = (1, 0);
        }
        for (offset, len) in accesses {
            let addr = top.saturating_add(offset);
            let mut data = vec![0u8; len];
            let got = bus.read(addr, &mut data);
            let (bytes, dispatch) = model_read(&accepted, u64::MAX, addr, len);
            prop_assert_eq!(got, dispatch);
            prop_assert_eq!(data, bytes);
        }
        let stats = bus.stats();
        prop_assert_eq!(stats.ranges.len(), accepted.iter().filter(|(b, l)| b <= l).count());
    }
}
