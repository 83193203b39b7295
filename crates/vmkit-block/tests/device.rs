//! virtio-blk requests end to end through the device, its I/O thread and the worker pool,
//! on memory and raw-file backends.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use vm_memory::{Bytes, GuestAddress};
use vmkit_block::{
    config as cfg, BlkOptions, BlockBackend, CacheMode, DiscardMode, MemoryBackend, RawFile,
    RawOptions, VirtioBlk,
};
use vmkit_virtio::VirtioDevice;

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn write_flush_and_read_back() {
    let backend = Arc::new(MemoryBackend::new(64 * 512));
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), F_FLUSH);
    let data = pattern(7, 1024);
    assert_eq!(b.request(T_OUT, 3, &data, 0).0, S_OK);
    let flushes = backend.flush_count();
    let (status, used, _) = b.request(T_FLUSH, 0, &[], 0);
    assert_eq!((status, used), (S_OK, 1));
    assert_eq!(backend.flush_count(), flushes + 1);
    let (status, used, read) = b.request(T_IN, 3, &[], 1024);
    assert_eq!((status, used), (S_OK, 1025));
    assert_eq!(read, data);
    assert_eq!(&backend.contents()[3 * 512..5 * 512], &data[..]);
    assert!(b.irqs.0.load(Ordering::SeqCst) >= 3);
    assert!(b.reset());
}

#[test]
fn get_id_returns_the_serial_cut_to_20_bytes() {
    let backend = Arc::new(MemoryBackend::new(4096));
    let options = BlkOptions {
        serial: "vmkit-disk-0".into(),
        ..BlkOptions::default()
    };
    let mut b = Bench::start(
        VirtioBlk::with_options(backend.clone(), options).unwrap(),
        0,
    );
    let (status, used, id) = b.request(T_GET_ID, 0, &[], 20);
    assert_eq!(status, S_OK);
    assert_eq!(used, 14, "serial, NUL and status");
    assert_eq!(&id[..13], b"vmkit-disk-0\0");
    let options = BlkOptions {
        serial: "a-serial-much-longer-than-twenty".into(),
        ..BlkOptions::default()
    };
    let mut b = Bench::start(VirtioBlk::with_options(backend, options).unwrap(), 0);
    let (status, used, id) = b.request(T_GET_ID, 0, &[], 32);
    assert_eq!((status, used), (S_OK, 21));
    assert_eq!(&id[..20], b"a-serial-much-longer");
    assert_eq!(id[20], 0xa5, "nothing past 20 bytes");
}

#[test]
fn out_of_range_and_partial_sectors_are_ioerr() {
    let backend = Arc::new(MemoryBackend::new(16 * 512));
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), 0);
    assert_eq!(b.request(T_IN, 16, &[], 512).0, S_IOERR);
    assert_eq!(b.request(T_IN, 15, &[], 1024).0, S_IOERR);
    assert_eq!(b.request(T_IN, u64::MAX, &[], 512).0, S_IOERR);
    assert_eq!(b.request(T_IN, 0, &[], 100).0, S_IOERR);
    assert_eq!(b.request(T_OUT, 16, &[1; 512], 0).0, S_IOERR);
    assert_eq!(b.request(T_OUT, u64::MAX / 512, &[1; 512], 0).0, S_IOERR);
    assert_eq!(b.request(T_OUT, 0, &[1; 300], 0).0, S_IOERR);
    assert_eq!(backend.contents(), vec![0; 16 * 512], "nothing was written");
    // The last sector is fine.
    assert_eq!(b.request(T_OUT, 15, &[9; 512], 0).0, S_OK);
    assert_eq!(b.request(T_IN, 15, &[], 512), (S_OK, 513, vec![9; 512]));
}

#[test]
fn a_read_only_drive_offers_ro_and_refuses_writes_with_ioerr() {
    let backend = Arc::new(MemoryBackend::from_bytes(vec![3; 8 * 512]).read_only());
    let blk = VirtioBlk::new(backend.clone());
    assert_ne!(VirtioDevice::<Mem>::device_features(&blk) & F_RO, 0);
    let mut b = Bench::start(blk, F_DISCARD | F_WRITE_ZEROES | F_RO);
    assert_eq!(b.request(T_OUT, 0, &[1; 512], 0).0, S_IOERR);
    let mut seg = [0u8; 16];
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(b.request(T_DISCARD, 0, &seg, 0).0, S_IOERR);
    assert_eq!(b.request(T_WRITE_ZEROES, 0, &seg, 0).0, S_IOERR);
    assert_eq!(backend.contents(), vec![3; 8 * 512]);
    assert_eq!(b.request(T_IN, 0, &[], 512), (S_OK, 513, vec![3; 512]));
}

#[test]
fn unknown_types_and_unnegotiated_discard_are_unsupp() {
    let backend = Arc::new(MemoryBackend::new(8 * 512));
    let mut b = Bench::start(VirtioBlk::new(backend), 0);
    assert_eq!(b.request(99, 0, &[], 0).0, S_UNSUPP);
    assert_eq!(b.request(2 /* SCSI_CMD */, 0, &[], 0).0, S_UNSUPP);
    let seg = [0u8; 16];
    assert_eq!(b.request(T_DISCARD, 0, &seg, 0).0, S_UNSUPP);
    assert_eq!(b.request(T_WRITE_ZEROES, 0, &seg, 0).0, S_UNSUPP);
}

fn segment(sector: u64, count: u32, flags: u32) -> [u8; 16] {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&count.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    s
}

#[test]
fn discard_and_write_zeroes_on_a_raw_file_with_discard_unmap() {
    let path = temp_image("discard", &vec![0x5a; 64 * 1024]);
    let raw = RawFile::open(
        &path,
        RawOptions {
            discard: DiscardMode::Unmap,
            ..RawOptions::default()
        },
    )
    .unwrap();
    let backend: Arc<dyn BlockBackend> = Arc::new(raw);
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), F_DISCARD | F_WRITE_ZEROES);
    assert_eq!(b.request(T_WRITE_ZEROES, 8, &segment(8, 8, 1), 0).0, S_OK);
    assert_eq!(b.request(T_WRITE_ZEROES, 0, &segment(0, 1, 0), 0).0, S_OK);
    assert_eq!(b.request(T_DISCARD, 0, &segment(64, 8, 0), 0).0, S_OK);
    // Bad segments: past the end, discard with the unmap flag, unknown flags, two segments.
    assert_eq!(b.request(T_DISCARD, 0, &segment(127, 2, 0), 0).0, S_IOERR);
    assert_eq!(b.request(T_DISCARD, 0, &segment(0, 1, 1), 0).0, S_UNSUPP);
    assert_eq!(
        b.request(T_WRITE_ZEROES, 0, &segment(0, 1, 2), 0).0,
        S_UNSUPP
    );
    let two = [segment(0, 1, 0), segment(2, 1, 0)].concat();
    assert_eq!(b.request(T_DISCARD, 0, &two, 0).0, S_UNSUPP);
    let bytes = backend_bytes(&*backend);
    assert_eq!(&bytes[..512], &[0; 512][..]);
    assert_eq!(&bytes[512..4096], &vec![0x5a; 3584][..]);
    assert_eq!(&bytes[4096..8192], &[0; 4096][..]);
    assert!(bytes[8192..32768].iter().all(|&b| b == 0x5a));
    // discard=unmap punched a hole: it reads back as zeros.
    assert!(bytes[32768..36864].iter().all(|&b| b == 0));
    assert!(bytes[36864..].iter().all(|&b| b == 0x5a));
    assert!(b.reset());
    drop(b);
    drop(backend);
    let file = std::fs::read(&path).unwrap();
    assert!(file[4096..8192].iter().all(|&b| b == 0));
    assert!(file[36864..].iter().all(|&b| b == 0x5a));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn configuration_space_as_qemu_fills_it() {
    let backend = Arc::new(MemoryBackend::new(10 << 20));
    let blk = VirtioBlk::new(backend.clone());
    let c = config(&blk);
    let le32 = |o: usize| u32::from_le_bytes(c[o..o + 4].try_into().unwrap());
    assert_eq!(u64::from_le_bytes(c[0..8].try_into().unwrap()), 20480);
    assert_eq!(le32(cfg::SEG_MAX), 254);
    assert_eq!(le32(cfg::BLK_SIZE), 512);
    assert_eq!(c[cfg::GEOMETRY + 2..cfg::GEOMETRY + 4], [16, 63]);
    assert_eq!(u16::from_le_bytes([c[16], c[17]]), 20);
    assert_eq!(c[cfg::WRITEBACK], 1);
    assert_eq!(le32(cfg::MAX_DISCARD_SEG), 1);
    assert_eq!(le32(cfg::MAX_WRITE_ZEROES_SEG), 1);
    assert_eq!(c[cfg::WRITE_ZEROES_MAY_UNMAP], 1);
    // Reads past the end are zeros, and odd offsets work.
    let mut tail = [0xffu8; 8];
    VirtioDevice::<Mem>::read_config(&blk, 56, &mut tail);
    assert_eq!(tail, [1, 0, 0, 0, 0, 0, 0, 0]);
    let mut far = [0xffu8; 4];
    VirtioDevice::<Mem>::read_config(&blk, u64::MAX, &mut far);
    assert_eq!(far, [0; 4]);
}

#[test]
fn the_write_cache_follows_the_driver_as_in_qemu() {
    let backend = Arc::new(MemoryBackend::new(8 * 512));
    // A driver without FLUSH or CONFIG_WCE gets writethrough: each write is flushed.
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), 0);
    assert!(!backend.write_cache());
    let before = backend.flush_count();
    assert_eq!(b.request(T_OUT, 1, &[1; 512], 0).0, S_OK);
    assert_eq!(
        backend.flush_count(),
        before + 1,
        "writethrough flushed the write"
    );
    assert_eq!(config(&b.blk)[cfg::WRITEBACK], 0);
    assert!(b.reset());
    assert!(
        backend.write_cache(),
        "reset restores the drive's cache mode"
    );
    // With CONFIG_WCE the driver sets it through the configuration.
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), F_FLUSH | F_CONFIG_WCE);
    assert!(backend.write_cache());
    VirtioDevice::<Mem>::write_config(&mut b.blk, cfg::WRITEBACK as u64, &[0]);
    assert!(!backend.write_cache());
    VirtioDevice::<Mem>::write_config(&mut b.blk, 30, &[0, 0, 1, 0]);
    assert!(backend.write_cache());
    let before = backend.flush_count();
    assert_eq!(b.request(T_OUT, 1, &[1; 512], 0).0, S_OK);
    assert_eq!(
        backend.flush_count(),
        before,
        "writeback: no flush per write"
    );
}

/// A backend whose writes take a while.
struct Slow {
    inner: MemoryBackend,
    delay: Duration,
    log: Mutex<Vec<&'static str>>,
}

impl BlockBackend for Slow {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> vmkit_block::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> vmkit_block::Result<()> {
        std::thread::sleep(self.delay);
        self.log.lock().unwrap().push("write");
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> vmkit_block::Result<()> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64) -> vmkit_block::Result<()> {
        Ok(())
    }
}

#[test]
fn reset_and_drop_wait_for_requests_in_flight() {
    let slow = Arc::new(Slow {
        inner: MemoryBackend::new(64 * 512),
        delay: Duration::from_millis(200),
        log: Mutex::new(Vec::new()),
    });
    let mut b = Bench::start(VirtioBlk::new(slow.clone()), F_FLUSH);
    for sector in 0..4u64 {
        let mut header = [0u8; 16];
        header[0] = T_OUT as u8;
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        let h = HEADER + 0x100 * sector;
        b.mem().write_slice(&header, GuestAddress(h)).unwrap();
        b.mem()
            .write_slice(
                &[sector as u8 + 1; 512],
                GuestAddress(DATA + 0x1000 * sector),
            )
            .unwrap();
        b.driver.add_chain(&[
            (h, 16, false),
            (DATA + 0x1000 * sector, 512, false),
            (STATUS + sector, 1, true),
        ]);
    }
    b.notify.write(1).unwrap();
    // Let the I/O thread pop them, then reset while the workers sleep.
    std::thread::sleep(Duration::from_millis(50));
    assert!(b.reset());
    assert_eq!(
        slow.log.lock().unwrap().len(),
        4,
        "every write finished first"
    );
    assert_eq!(b.driver.used_idx(), 4, "and completed to the driver");
    let contents = slow.inner.contents();
    for sector in 0..4usize {
        assert_eq!(contents[sector * 512], sector as u8 + 1);
        let status: u8 = b
            .mem()
            .read_obj(GuestAddress(STATUS + sector as u64))
            .unwrap();
        assert_eq!(status, S_OK);
    }
}

/// Starts a fresh device, lets `build` put one bad request on the ring, and checks the
/// defined result: no completion, one NEEDS_RESET request, the queue served no more (a
/// good request after it stays pending), the backend untouched; then a reset and a fresh
/// activation serve requests again.
fn needs_reset_after(what: &str, build: impl FnOnce(&mut Driver)) {
    let backend = Arc::new(MemoryBackend::new(8 * 512));
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), 0);
    build(&mut b.driver);
    b.notify.write(1).unwrap();
    b.irqs.wait_needs_reset();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        b.driver.used_idx(),
        0,
        "{what}: the bad chain is not completed"
    );
    assert_eq!(b.irqs.1.load(Ordering::SeqCst), 1, "{what}: asked once");
    // A good write after it is not served: the queue is stopped until a reset.
    b.mem()
        .write_slice(&[0u8; 16], GuestAddress(HEADER + 0x100))
        .unwrap();
    b.mem()
        .write_obj(T_OUT, GuestAddress(HEADER + 0x100))
        .unwrap();
    b.mem()
        .write_slice(&[0x77; 512], GuestAddress(DATA))
        .unwrap();
    b.driver.add_chain(&[
        (HEADER + 0x100, 16, false),
        (DATA, 512, false),
        (STATUS, 1, true),
    ]);
    b.notify.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(b.driver.used_idx(), 0, "{what}: nothing served after it");
    assert!(
        backend_bytes(&*backend).iter().all(|&x| x == 0),
        "{what}: the disk is untouched"
    );
    assert!(b.reset(), "{what}: the device stops");
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), 0);
    assert_eq!(
        b.request(T_IN, 0, &[], 512).0,
        S_OK,
        "{what}: works after a reset"
    );
    assert!(b.reset());
}

#[test]
fn malformed_chains_end_in_needs_reset_and_bad_requests_in_ioerr() {
    // Request-level errors with a writable status byte: IOERR.
    let backend = Arc::new(MemoryBackend::new(8 * 512));
    let mut b = Bench::start(VirtioBlk::new(backend.clone()), 0);
    // A header of 8 bytes.
    b.mem().write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
    b.driver.add_chain(&[(HEADER, 8, false), (STATUS, 1, true)]);
    b.notify.write(1).unwrap();
    assert_eq!(b.driver.wait_used(1)[0].1, 1);
    assert_eq!(
        b.mem().read_obj::<u8>(GuestAddress(STATUS)).unwrap(),
        S_IOERR
    );
    // Header, data and status in one writable descriptor, with the header readable
    // nowhere: IOERR.
    b.driver.add_chain(&[(STATUS, 600, true)]);
    b.notify.write(1).unwrap();
    assert_eq!(b.driver.wait_used(1)[0].1, 1);
    // A read far past the capacity (a huge sector): IOERR.
    assert_eq!(b.request(T_IN, u64::MAX - 1, &[], 512).0, S_IOERR);
    assert_eq!(
        b.irqs.1.load(Ordering::SeqCst),
        0,
        "no NEEDS_RESET for these"
    );
    assert!(b.reset());

    // Chains with nowhere to put a status, or structurally broken: NEEDS_RESET.
    needs_reset_after("no writable descriptor", |d| {
        d.add_chain(&[(HEADER, 16, false)]);
    });
    needs_reset_after("status device-readable (wrong direction)", |d| {
        d.add_chain(&[(HEADER, 16, false), (DATA, 512, true), (STATUS, 1, false)]);
    });
    needs_reset_after("a data buffer outside guest memory", |d| {
        d.add_chain(&[(HEADER, 16, false), (1 << 40, 512, true), (STATUS, 1, true)]);
    });
    needs_reset_after("a buffer straddling the end of guest memory", |d| {
        d.add_chain(&[
            (HEADER, 16, false),
            ((8 << 20) - 256, 512, true),
            (STATUS, 1, true),
        ]);
    });
    needs_reset_after("a huge length", |d| {
        d.add_chain(&[
            (HEADER, 16, false),
            (DATA, u32::MAX, true),
            (STATUS, 1, true),
        ]);
    });
    needs_reset_after("a zero-length data descriptor", |d| {
        d.add_chain(&[(HEADER, 16, false), (DATA, 0, true), (STATUS, 1, true)]);
    });
    needs_reset_after("a descriptor pointing at itself", |d| {
        d.write_desc(200, HEADER, 16, NEXT, 200);
        d.publish(200);
    });
    needs_reset_after(
        "a loop through the whole table (more than queue-size descriptors)",
        |d| {
            for i in 0..d.size {
                d.write_desc(i, HEADER, 16, NEXT, (i + 1) % d.size);
            }
            d.publish(0);
        },
    );
    needs_reset_after("next outside the table", |d| {
        d.write_desc(0, HEADER, 16, NEXT, 300);
        d.publish(0);
    });
    needs_reset_after("a head index past the table", |d| {
        d.publish(400);
    });
    needs_reset_after("avail idx moved more than queue-size entries", |d| {
        d.mem
            .write_obj(1000u16, GuestAddress(d.avail_addr() + 2))
            .unwrap();
    });
    needs_reset_after("an indirect table outside guest memory", |d| {
        d.write_desc(0, 1 << 40, 48, INDIRECT, 0);
        d.publish(0);
    });
}

#[test]
fn the_raw_file_sees_guest_writes_in_every_cache_mode() {
    for (name, cache) in CacheMode::ALL {
        let path = temp_image(&format!("cache-{name}"), &vec![0; 32 * 1024]);
        let raw = RawFile::open(
            &path,
            RawOptions {
                cache,
                ..RawOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("cache={name}: {e}"));
        let backend: Arc<dyn BlockBackend> = Arc::new(raw);
        let mut b = Bench::start(VirtioBlk::new(backend.clone()), F_FLUSH);
        let data = pattern(cache as u8, 2048);
        assert_eq!(b.request(T_OUT, 5, &data, 0).0, S_OK, "{name}");
        assert_eq!(b.request(T_FLUSH, 0, &[], 0).0, S_OK, "{name}");
        // On the file as soon as FLUSH completed, read by another open file description.
        let file = std::fs::read(&path).unwrap();
        assert_eq!(&file[5 * 512..9 * 512], &data[..], "cache={name}");
        assert_eq!(b.request(T_IN, 5, &[], 2048).2, data, "{name}");
        drop(b);
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn the_shutdown_handle_drains_requests_in_flight_and_flushes() {
    let slow = Arc::new(Slow {
        inner: MemoryBackend::new(64 * 512),
        delay: Duration::from_millis(100),
        log: Mutex::new(Vec::new()),
    });
    let mut b = Bench::start(VirtioBlk::new(slow.clone()), F_FLUSH);
    let handle = b.blk.shutdown_handle();
    for sector in 0..3u64 {
        let mut header = [0u8; 16];
        header[0] = T_OUT as u8;
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        let h = HEADER + 0x100 * sector;
        b.mem().write_slice(&header, GuestAddress(h)).unwrap();
        b.driver.add_chain(&[
            (h, 16, false),
            (DATA, 512, false),
            (STATUS + sector, 1, true),
        ]);
    }
    b.notify.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    // From another thread, as a machine's shutdown path would.
    std::thread::spawn(move || handle.drain_and_flush().unwrap())
        .join()
        .unwrap();
    assert_eq!(slow.log.lock().unwrap().len(), 3);
    assert_eq!(b.driver.used_idx(), 3);
    assert!(!b.blk.is_running());
    assert!(b.reset());
}

#[test]
fn quiesce_finishes_requests_in_flight_and_reports_where_the_queue_stands() {
    let slow = Arc::new(Slow {
        inner: MemoryBackend::new(64 * 512),
        delay: Duration::from_millis(200),
        log: Mutex::new(Vec::new()),
    });
    let mut b = Bench::start(VirtioBlk::new(slow.clone()), F_FLUSH);
    for sector in 0..3u64 {
        let mut header = [0u8; 16];
        header[0] = T_OUT as u8;
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        let h = HEADER + 0x100 * sector;
        b.mem().write_slice(&header, GuestAddress(h)).unwrap();
        b.mem()
            .write_slice(
                &[0x40 + sector as u8; 512],
                GuestAddress(DATA + 0x1000 * sector),
            )
            .unwrap();
        b.driver.add_chain(&[
            (h, 16, false),
            (DATA + 0x1000 * sector, 512, false),
            (STATUS + sector, 1, true),
        ]);
    }
    b.notify.write(1).unwrap();
    // The I/O thread has popped them; the workers are still sleeping in write_at.
    std::thread::sleep(Duration::from_millis(50));
    assert!(slow.log.lock().unwrap().is_empty());
    let positions = VirtioDevice::<Mem>::quiesce(&mut b.blk).unwrap();
    assert_eq!(
        positions,
        vec![vmkit_virtio::QueuePosition {
            index: 0,
            next_avail: 3,
            next_used: 3
        }],
        "all three were taken and completed before quiesce returned"
    );
    assert_eq!(b.driver.used_idx(), 3);
    assert_eq!(slow.log.lock().unwrap().len(), 3);
    assert!(!b.blk.is_running());
    // A request made available after the pause is not taken by the stopped device.
    b.driver
        .add_chain(&[(HEADER, 16, false), (DATA, 512, false), (STATUS, 1, true)]);
    b.notify.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(b.driver.used_idx(), 3);
    // Quiescing a stopped device is an error that names it.
    let err = VirtioDevice::<Mem>::quiesce(&mut b.blk)
        .unwrap_err()
        .to_string();
    assert!(err.contains("virtio-blk"), "{err}");
}
