//! The raw-file backend in QEMU's cache and discard modes, opening errors, and the pool.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::temp_image;
use vmkit_block::{
    BlockBackend, CacheMode, Completions, DiscardMode, DriveSpec, Error, RawFile, RawOptions,
    ThreadPool,
};

fn open(path: &std::path::Path, cache: CacheMode) -> RawFile {
    RawFile::open(
        path,
        RawOptions {
            cache,
            ..RawOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("cache={cache}: {e}"))
}

#[test]
fn every_cache_mode_reads_and_writes_unaligned_ranges() {
    for (name, cache) in CacheMode::ALL {
        let initial: Vec<u8> = (0..16384u32).map(|i| (i % 251) as u8).collect();
        let path = temp_image(&format!("modes-{name}"), &initial);
        let raw = open(&path, cache);
        assert_eq!(raw.size(), 16384);
        assert_eq!(raw.write_cache(), cache.writeback(), "{name}");
        assert_eq!(raw.alignment() > 1, cache.direct(), "{name}");
        // Unaligned under O_DIRECT: read-modify-write of the edge blocks.
        raw.write_at(b"abc", 510).unwrap();
        raw.write_at(&[7; 1000], 4000).unwrap();
        let mut buf = [0u8; 7];
        raw.read_at(&mut buf, 508).unwrap();
        assert_eq!(
            &buf,
            &[
                initial[508],
                initial[509],
                b'a',
                b'b',
                b'c',
                initial[513],
                initial[514]
            ]
        );
        raw.flush().unwrap();
        drop(raw);
        let mut expected = initial.clone();
        expected[510..513].copy_from_slice(b"abc");
        expected[4000..5000].fill(7);
        assert!(
            std::fs::read(&path).unwrap() == expected,
            "cache={name}: file contents"
        );
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn accesses_past_the_end_are_refused_with_the_numbers() {
    let path = temp_image("range", &[0; 4096]);
    let raw = open(&path, CacheMode::Writeback);
    let err = raw.read_at(&mut [0; 16], 4090).unwrap_err().to_string();
    assert!(
        err.contains("16 bytes at offset 4090") && err.contains("4096-byte"),
        "{err}"
    );
    assert!(matches!(
        raw.write_at(&[1], u64::MAX),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        raw.discard(4096, 1),
        Err(Error::OutOfRange { .. })
    ));
    raw.read_at(&mut [0; 16], 4080).unwrap();
    std::fs::remove_file(path).unwrap();
}

#[test]
fn readonly_refuses_writes_discards_and_zeroes_naming_the_file() {
    let path = temp_image("ro", &[9; 4096]);
    let raw = RawFile::open(
        &path,
        RawOptions {
            read_only: true,
            discard: DiscardMode::Unmap,
            ..RawOptions::default()
        },
    )
    .unwrap();
    assert!(raw.is_read_only());
    let err = raw.write_at(&[1], 0).unwrap_err().to_string();
    assert!(err.contains("read-only") && err.contains("ro-"), "{err}");
    assert!(matches!(raw.discard(0, 512), Err(Error::ReadOnly { .. })));
    assert!(matches!(
        raw.write_zeroes(0, 512, true),
        Err(Error::ReadOnly { .. })
    ));
    raw.flush().unwrap();
    drop(raw);
    assert_eq!(std::fs::read(&path).unwrap(), vec![9; 4096]);
    std::fs::remove_file(path).unwrap();
}

#[test]
fn discard_unmap_punches_holes_and_ignore_keeps_data() {
    let path = temp_image("punch", &[0xcc; 65536]);
    let unmap = RawFile::open(
        &path,
        RawOptions {
            discard: DiscardMode::Unmap,
            ..RawOptions::default()
        },
    )
    .unwrap();
    unmap.discard(8192, 8192).unwrap();
    let mut buf = vec![0xffu8; 8192];
    unmap.read_at(&mut buf, 8192).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "a punched hole reads as zeros");
    drop(unmap);
    let ignore = open(&path, CacheMode::Writeback);
    ignore.discard(0, 4096).unwrap();
    let mut buf = vec![0u8; 4096];
    ignore.read_at(&mut buf, 0).unwrap();
    assert!(
        buf.iter().all(|&b| b == 0xcc),
        "discard=ignore keeps the data"
    );
    // Write-zeroes without unmap writes zeros.
    ignore.write_zeroes(100, 1000, false).unwrap();
    let mut buf = vec![1u8; 1000];
    ignore.read_at(&mut buf, 100).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn opening_errors_name_the_file_and_the_reason() {
    let missing = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-image.img");
    let err = RawFile::open(&missing, RawOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("Could not open '") && err.contains("no-such-image.img"),
        "{err}"
    );
    assert!(err.contains("No such file"), "{err}");

    let odd = temp_image("odd-size", &[0; 1000]);
    let err = RawFile::open(
        &odd,
        RawOptions {
            cache: CacheMode::None,
            ..RawOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("cache=none") && err.contains("1000 bytes") && err.contains("512"),
        "{err}"
    );
    // Without O_DIRECT any size opens.
    assert_eq!(open(&odd, CacheMode::Writeback).size(), 1000);
    std::fs::remove_file(odd).unwrap();

    let mut qcow = b"QFI\xfb\0\0\0\x03".to_vec();
    qcow.resize(4096, 0);
    let qcow = temp_image("looks-qcow2", &qcow);
    let spec = DriveSpec::parse(&format!("file={},if=virtio", qcow.display())).unwrap();
    let err = spec.open().unwrap_err().to_string();
    assert!(
        err.contains("format=qcow2") && err.contains("raw only"),
        "{err}"
    );
    // format=raw says it is raw: then it opens.
    let spec = DriveSpec::parse(&format!("file={},if=virtio,format=raw", qcow.display())).unwrap();
    assert_eq!(spec.open().unwrap().size(), 4096);
    std::fs::remove_file(qcow).unwrap();
}

#[test]
fn writethrough_flushes_and_write_cache_can_be_toggled() {
    let path = temp_image("wt", &[0; 4096]);
    let raw = open(&path, CacheMode::Writethrough);
    assert!(!raw.write_cache());
    raw.write_at(&[1; 512], 0).unwrap();
    raw.set_write_cache(true);
    assert!(raw.write_cache());
    raw.write_at(&[2; 512], 512).unwrap();
    drop(raw);
    let file = std::fs::read(&path).unwrap();
    assert_eq!((file[0], file[512]), (1, 2));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn the_pool_runs_jobs_off_the_caller_and_completions_wake_it() {
    let pool = ThreadPool::new("test-pool", 3).unwrap();
    assert_eq!(pool.threads(), 3);
    let done = Completions::<(usize, String)>::new().unwrap();
    let caller = std::thread::current().id();
    for i in 0..20 {
        let done = Arc::clone(&done);
        pool.submit(move || {
            assert_ne!(std::thread::current().id(), caller);
            std::thread::sleep(Duration::from_millis(1));
            let name = std::thread::current()
                .name()
                .unwrap_or_default()
                .to_string();
            done.complete((i, name));
        })
        .unwrap();
    }
    drop(pool); // lets queued jobs finish
    let mut results = done.take();
    results.sort();
    assert_eq!(results.len(), 20);
    assert!(results
        .iter()
        .all(|(_, name)| name.starts_with("test-pool-")));
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..20).collect::<Vec<_>>()
    );
    assert!(done.take().is_empty());
}
