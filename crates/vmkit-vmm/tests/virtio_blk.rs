//! virtio-blk-pci on a raw image, driven by a tiny real-mode legacy virtio-blk driver:
//! it reads sector 0, writes a pattern to sector 1, flushes and powers off; the test checks
//! what the guest read and what the file holds afterwards. Plus the refusals: a missing
//! image, format=qcow2, and a read-only drive answering a write with IOERR.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::virtio_legacy::*;
use common::*;

/// The virtio-blk queue size (vmkit-block's BLK_QUEUE_SIZE, QEMU's 256).
const QUEUE_SIZE: u32 = 256;
const RING: u32 = 0x1_0000;
/// Request headers (16 bytes each), status bytes, the read buffer and the written data.
const HEADERS: u32 = 0x2_0000;
const STATUSES: u32 = 0x2_1000;
const READ_BUF: u32 = 0x2_2000;
const WRITE_BUF: u32 = 0x2_3000;
/// VIRTIO_BLK_F_FLUSH.
const F_FLUSH: u32 = 1 << 9;

/// The byte the guest writes at offset `i` of sector 1.
fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(7).wrapping_add(3)
}

/// Emits: request header `n` at HEADERS + 16n = (type, sector).
fn emit_header(a: &mut CodeAssembler, n: u32, kind: u32, sector: u32) -> Result<(), IcedError> {
    let at = HEADERS + 16 * n;
    a.mov(ax, at >> 4)?;
    a.mov(ds, ax)?;
    a.mov(dword_ptr(0), kind)?;
    a.mov(dword_ptr(4), 0u32)?;
    a.mov(dword_ptr(8), sector)?;
    a.mov(dword_ptr(12), 0u32)?;
    // The status byte starts as 0xff: the device must overwrite it.
    a.mov(ax, STATUSES >> 4)?;
    a.mov(ds, ax)?;
    a.mov(byte_ptr(n), 0xffu32)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)
}

/// The driver for the virtio-blk function at `slot`.0. On COM1 it prints: 'V' (the
/// function is 1af4:1001), the low byte of the host features, the low byte of the
/// capacity, 'U' once all three requests completed, the three status bytes (read, write,
/// flush), then bytes 0..16 and 510..512 of what it read from sector 0.
fn blk_driver(slot: u32) -> Vec<u8> {
    real_mode_guest(|a| {
        let mut fill = a.create_label();
        a.cli()?;
        emit_probe_with_features(a, slot, 0x1001, F_FLUSH)?;
        // Capacity (the config starts at 0x14 while MSI-X is off), low byte.
        a.mov(dx, IO_BASE + 0x14)?;
        a.in_(al, dx)?;
        emit_putc(a)?;
        // The pattern for sector 1.
        a.mov(ax, WRITE_BUF >> 4)?;
        a.mov(ds, ax)?;
        a.xor(bx, bx)?;
        a.mov(al, 3u32)?;
        a.set_label(&mut fill)?;
        a.mov(byte_ptr(bx), al)?;
        a.add(al, 7u32)?;
        a.inc(bx)?;
        a.cmp(bx, 512u32)?;
        a.jb(fill)?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        // Request 0: read sector 0 (descriptors 0-2).
        emit_header(a, 0, 0 /* IN */, 0)?;
        emit_desc(a, RING, 0, HEADERS, 16, DESC_NEXT, 1)?;
        emit_desc(a, RING, 1, READ_BUF, 512, DESC_NEXT | DESC_WRITE, 2)?;
        emit_desc(a, RING, 2, STATUSES, 1, DESC_WRITE, 0)?;
        emit_publish(a, RING, QUEUE_SIZE, 0, 0)?;
        emit_queue_pfn(a, 0, RING)?;
        emit_status_driver_ok(a)?;
        emit_notify(a, 0)?;
        emit_wait_used_count(a, RING, QUEUE_SIZE, 1)?;
        // Request 1: write sector 1 (descriptors 3-5).
        emit_header(a, 1, 1 /* OUT */, 1)?;
        emit_desc(a, RING, 3, HEADERS + 16, 16, DESC_NEXT, 4)?;
        emit_desc(a, RING, 4, WRITE_BUF, 512, DESC_NEXT, 5)?;
        emit_desc(a, RING, 5, STATUSES + 1, 1, DESC_WRITE, 0)?;
        emit_publish(a, RING, QUEUE_SIZE, 1, 3)?;
        emit_notify(a, 0)?;
        emit_wait_used_count(a, RING, QUEUE_SIZE, 2)?;
        // Request 2: flush (descriptors 6-7).
        emit_header(a, 2, 4 /* FLUSH */, 0)?;
        emit_desc(a, RING, 6, HEADERS + 32, 16, DESC_NEXT, 7)?;
        emit_desc(a, RING, 7, STATUSES + 2, 1, DESC_WRITE, 0)?;
        emit_publish(a, RING, QUEUE_SIZE, 2, 6)?;
        emit_notify(a, 0)?;
        emit_wait_used_count(a, RING, QUEUE_SIZE, 3)?;
        a.mov(al, b'U' as u32)?;
        emit_putc(a)?;
        for i in 0..3 {
            emit_print_byte_at(a, STATUSES + i)?;
        }
        for i in (0..16).chain(510..512) {
            emit_print_byte_at(a, READ_BUF + i)?;
        }
        emit_s5_power_off(a)
    })
}

/// A raw image of `sectors` sectors: sector 0 holds a known header and the 0x55AA
/// signature, the rest a fill byte.
fn image(name: &str, sectors: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes = vec![0x6b; sectors * 512];
    bytes[..16].copy_from_slice(b"vmkit-blk-test\r\n");
    bytes[510] = 0x55;
    bytes[511] = 0xaa;
    let path = guest_file(&format!("{name}-disk"), &bytes);
    (path, bytes)
}

fn run_driver(name: &str, slot: u32, args: &[String]) -> (std::process::Output, String) {
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(guest_file(name, &blk_driver(slot)))
        .args(args);
    let (output, _) = run(command, Duration::from_secs(60));
    let err = stderr(&output);
    (output, err)
}

/// What a successful run prints: header, features, capacity, 'U', statuses, data.
fn expected_output(features: u8, capacity: u8, statuses: [u8; 3], sector0: &[u8]) -> Vec<u8> {
    let mut out = vec![b'V', features, capacity, b'U'];
    out.extend_from_slice(&statuses);
    out.extend_from_slice(&sector0[..16]);
    out.extend_from_slice(&sector0[510..512]);
    out
}

/// The host features' low byte: SEG_MAX | GEOMETRY | BLK_SIZE (| RO).
const FEATURES_LOW: u8 = 0x04 | 0x10 | 0x40;

#[test]
fn a_legacy_driver_reads_writes_and_flushes_a_raw_image() {
    require_kvm!();
    let (disk, original) = image("blk-rw", 40);
    let (output, err) = run_driver(
        "blk-rw",
        4,
        &[
            "-drive".into(),
            format!(
                "file={},format=raw,if=none,id=d0,cache=writeback",
                disk.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=d0,addr=04.0,serial=vmkit0".into(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert_eq!(
        output.stdout,
        expected_output(FEATURES_LOW, 40, [0, 0, 0], &original),
        "guest output"
    );
    let after = std::fs::read(&disk).unwrap();
    assert_eq!(after.len(), original.len(), "the image keeps its size");
    assert_eq!(&after[..512], &original[..512], "sector 0 unchanged");
    let expected: Vec<u8> = (0..512).map(pattern).collect();
    assert_eq!(
        &after[512..1024],
        &expected[..],
        "sector 1 holds the guest's pattern"
    );
    assert_eq!(&after[1024..], &original[1024..], "nothing else written");
    std::fs::remove_file(disk).unwrap();
}

#[test]
fn if_virtio_creates_the_device_and_cache_none_works() {
    require_kvm!();
    let (disk, original) = image("blk-ifvirtio", 24);
    // The first free slot is 2, as on QEMU's pc without VGA.
    let (output, err) = run_driver(
        "blk-ifvirtio",
        2,
        &[
            "-drive".into(),
            format!("file={},if=virtio,format=raw,cache=none", disk.display()),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert_eq!(
        output.stdout,
        expected_output(FEATURES_LOW, 24, [0, 0, 0], &original)
    );
    let after = std::fs::read(&disk).unwrap();
    let expected: Vec<u8> = (0..512).map(pattern).collect();
    assert_eq!(&after[512..1024], &expected[..]);
    assert_eq!(&after[1024..], &original[1024..]);
    std::fs::remove_file(disk).unwrap();
}

#[test]
fn a_read_only_drive_answers_the_write_with_ioerr() {
    require_kvm!();
    let (disk, original) = image("blk-ro", 16);
    let (output, err) = run_driver(
        "blk-ro",
        2,
        &[
            "-drive".into(),
            format!("file={},format=raw,if=virtio,readonly=on", disk.display()),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    // RO (bit 5) offered; read OK, write IOERR (1), flush OK.
    assert_eq!(
        output.stdout,
        expected_output(FEATURES_LOW | 0x20, 16, [0, 1, 0], &original)
    );
    assert_eq!(
        std::fs::read(&disk).unwrap(),
        original,
        "the image is untouched"
    );
    std::fs::remove_file(disk).unwrap();
}

#[test]
fn bad_drives_are_refused_naming_the_file_or_the_format() {
    let (qcow_path, _) = {
        let mut bytes = b"QFI\xfb\0\0\0\x03".to_vec();
        bytes.resize(4096, 0);
        let path = guest_file("blk-looks-qcow2", &bytes);
        (path, bytes)
    };
    let missing = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmkit-no-such-disk.img");
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec![
                "-drive".into(),
                format!("file={},if=virtio", missing.display()),
            ],
            vec!["Could not open".into(), missing.display().to_string()],
        ),
        (
            vec![
                "-drive".into(),
                "file=disk.qcow2,format=qcow2,if=virtio".into(),
            ],
            vec!["format=qcow2".into(), "raw only".into()],
        ),
        (
            vec![
                "-drive".into(),
                format!("file={},if=virtio", qcow_path.display()),
            ],
            vec!["format=qcow2".into(), "raw only".into()],
        ),
        (
            vec![
                "-drive".into(),
                format!("file={},if=virtio,cache=fast", qcow_path.display()),
            ],
            vec!["cache=fast".into()],
        ),
        (
            vec![
                "-drive".into(),
                format!("file={},format=raw,if=none,id=d0", qcow_path.display()),
                "-device".into(),
                "virtio-blk-pci,drive=d1".into(),
            ],
            vec!["'d1'".into()],
        ),
        (
            vec![
                "-drive".into(),
                format!("file={},format=raw,if=none,id=d0", qcow_path.display()),
                "-device".into(),
                "virtio-blk-pci,drive=d0".into(),
                "-device".into(),
                "virtio-blk-pci,drive=d0".into(),
            ],
            vec!["'d0'".into(), "another device".into()],
        ),
    ];
    for (args, needles) in cases {
        let mut command = vmkit();
        command
            .arg("-flat")
            .arg(guest_file("blk-bad", &[0xf4]))
            .args(&args);
        let (output, _) = run(command, Duration::from_secs(20));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
        for needle in needles {
            assert!(err.contains(&needle), "{args:?}: '{needle}' not in {err}");
        }
    }
    std::fs::remove_file(qcow_path).unwrap();
}
