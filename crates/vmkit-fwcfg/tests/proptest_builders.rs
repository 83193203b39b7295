//! Random host-side construction: file names (long, empty, NUL, non-ASCII, duplicates) and
//! table-loader commands never panic; the directory stays sorted and consistent with the
//! files; a refused command leaves the loader's bytes unchanged.
use proptest::prelude::*;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmkit_fwcfg::{AllocZone, FwCfg, TableLoader, FW_CFG_FILE_DIR, FW_CFG_FILE_FIRST};

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-c]{1,3}",
        "etc/[a-z/]{0,60}",
        "[\\PC]{0,30}",
        Just(String::new()),
        Just("a\0b".to_string()),
    ]
}

#[derive(Debug, Clone)]
enum LoaderOp {
    Allocate(String, u32, u32, bool),
    Pointer(String, String, u32, u8),
    Checksum(String, u32, u32, u32),
}

fn loader_op() -> impl Strategy<Value = LoaderOp> {
    let small = prop_oneof![0u32..80, any::<u32>()];
    prop_oneof![
        (
            name(),
            0u32..100,
            prop_oneof![Just(1u32), Just(16), Just(64), any::<u32>()],
            any::<bool>()
        )
            .prop_map(|(n, s, a, z)| LoaderOp::Allocate(n, s, a, z)),
        (name(), name(), small.clone(), any::<u8>())
            .prop_map(|(d, s, o, z)| LoaderOp::Pointer(d, s, o, z)),
        (name(), small.clone(), small.clone(), small)
            .prop_map(|(f, o, s, l)| LoaderOp::Checksum(f, o, s, l)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn files_keep_the_directory_sorted(files in proptest::collection::vec((name(), 0usize..70), 0..24)) {
        let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let mut dev = FwCfg::new(&ram);
        let mut accepted: Vec<(String, usize)> = Vec::new();
        for (n, len) in files {
            let ok = !n.is_empty() && n.len() <= 55 && !n.contains('\0') && !accepted.iter().any(|(a, _)| *a == n);
            prop_assert_eq!(dev.add_file(&n, vec![0x11; len]).is_ok(), ok, "{:?}", n);
            if ok {
                accepted.push((n, len));
            }
        }
        accepted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let dir = dev.item(FW_CFG_FILE_DIR).unwrap();
        prop_assert_eq!(dir.len(), 4 + 64 * accepted.len());
        prop_assert_eq!(u32::from_be_bytes(dir[0..4].try_into().unwrap()) as usize, accepted.len());
        for (i, (n, len)) in accepted.iter().enumerate() {
            let e = &dir[4 + 64 * i..4 + 64 * (i + 1)];
            let select = u16::from_be_bytes([e[4], e[5]]);
            prop_assert_eq!(u32::from_be_bytes(e[0..4].try_into().unwrap()) as usize, *len);
            prop_assert_eq!(select, FW_CFG_FILE_FIRST + i as u16);
            prop_assert_eq!(&e[8..8 + n.len()], n.as_bytes());
            prop_assert_eq!(e[8 + n.len()], 0);
            prop_assert_eq!(dev.file_selector(n), Some(select));
            prop_assert_eq!(dev.item(select).unwrap().len(), *len);
        }
    }

    #[test]
    fn loader_never_panics_and_refusals_change_nothing(ops in proptest::collection::vec(loader_op(), 0..32)) {
        let mut l = TableLoader::new();
        for op in ops {
            let before = l.to_bytes();
            let r = match op {
                LoaderOp::Allocate(n, s, a, z) => {
                    l.allocate(&n, s, a, if z { AllocZone::High } else { AllocZone::Fseg })
                }
                LoaderOp::Pointer(d, s, o, z) => l.add_pointer(&d, &s, o, z),
                LoaderOp::Checksum(f, o, s, n) => l.add_checksum(&f, o, s, n),
            };
            let after = l.to_bytes();
            match r {
                Ok(()) => {
                    prop_assert_eq!(after.len(), before.len() + 128);
                    prop_assert_eq!(&after[..before.len()], &before[..]);
                }
                Err(e) => {
                    prop_assert_eq!(&after, &before, "{}", e);
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            prop_assert_eq!(l.len() * 128, after.len());
        }
    }
}
