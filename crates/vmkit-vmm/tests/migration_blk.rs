//! Migration with a virtio-blk disk in use.
//!
//! The guest (a real-mode legacy virtio-blk driver) loops: sequence number `n` is written
//! to sector `(n % 16) + 1` (the number in the sector's first word), the sector is read
//! back, and `n` is printed on COM1 as four hex digits and a newline, or with `!` before
//! the newline if what came back is not `n` or a status is not OK. It ends after [`END`]
//! with S5. Every request waits for its used-ring entry with `used.idx == requests made`:
//! a request the migration lost would hang the guest, one it ran twice would overshoot
//! the count and hang it too.
//!
//! While it runs, it is live-migrated to a second vmkit process (`-incoming unix:...`), or
//! saved to a file and restored in a new process. The source's lines and the
//! destination's must run on with no number lost or repeated and none marked `!`, and the
//! disk file must hold, in each sector, the last number written there.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::migrate::{qmp_arg, scratch_path, Vmkit};
use common::virtio_legacy::*;
use common::*;
use serde_json::json;

const QUEUE_SIZE: u32 = 256;
const RING: u32 = 0x1_0000;
const HEADERS: u32 = 0x2_0000;
const STATUSES: u32 = 0x2_1000;
const READ_BUF: u32 = 0x2_2000;
const WRITE_BUF: u32 = 0x2_3000;
/// The sequence number and the number of requests made (words at 0x500 and 0x502).
const SEQ: u32 = 0x500;
const REQS: u32 = 0x502;
/// The guest's last sequence number.
const END: u32 = 0x800;
/// Sectors the numbers go to (1..=16).
const DATA_SECTORS: u32 = 16;
const SLOT: u32 = 4;

/// Emits: avail.ring[reqs % size] = `head`, avail.idx = ++reqs, ring the doorbell, wait
/// until used.idx == reqs. Leaves DS = 0.
fn emit_request(a: &mut CodeAssembler, head: u32) -> Result<(), IcedError> {
    let (avail, used) = ring_offsets(QUEUE_SIZE);
    let mut poll = a.create_label();
    a.xor(ax, ax)?;
    a.mov(ds, ax)?;
    a.mov(si, word_ptr(REQS))?;
    a.mov(di, si)?;
    a.and(di, (QUEUE_SIZE - 1) as i32)?;
    a.shl(di, 1)?;
    a.inc(si)?;
    a.mov(word_ptr(REQS), si)?;
    a.mov(ax, RING >> 4)?;
    a.mov(ds, ax)?;
    a.mov(word_ptr(di + (avail + 4)), head)?;
    a.mov(word_ptr(avail + 2), si)?;
    emit_notify(a, 0)?;
    a.set_label(&mut poll)?;
    a.pause()?;
    a.cmp(word_ptr(used + 2), si)?;
    a.jne(poll)?;
    a.xor(ax, ax)?;
    a.mov(ds, ax)
}

/// Emits: DS = the segment of `addr` (below 1 MiB, 16-byte aligned).
fn emit_segment(a: &mut CodeAssembler, addr: u32) -> Result<(), IcedError> {
    a.mov(ax, addr >> 4)?;
    a.mov(ds, ax)
}

fn blk_loop_guest() -> PathBuf {
    let guest = real_mode_guest(|a| {
        let mut next = a.create_label();
        let mut bad = a.create_label();
        let mut newline = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x8000u32)?;
        a.mov(word_ptr(SEQ), 0u32)?;
        a.mov(word_ptr(REQS), 0u32)?;
        emit_legacy_virtio_probe(a, SLOT, 0x1001, IO_BASE)?;
        a.mov(al, b'\n' as u32)?;
        emit_putc(a)?;
        // No features.
        a.mov(dx, IO_BASE + 0x04)?;
        a.xor(eax, eax)?;
        a.out(dx, eax)?;
        // Header 0: OUT, header 1: IN; both for the sector set per round.
        emit_segment(a, HEADERS)?;
        a.mov(dword_ptr(0), 1u32)?;
        a.mov(dword_ptr(4), 0u32)?;
        a.mov(dword_ptr(12), 0u32)?;
        a.mov(dword_ptr(16), 0u32)?;
        a.mov(dword_ptr(20), 0u32)?;
        a.mov(dword_ptr(28), 0u32)?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        // Chain 0 (write): header, data, status; chain 3 (read): header, buffer, status.
        emit_desc(a, RING, 0, HEADERS, 16, DESC_NEXT, 1)?;
        emit_desc(a, RING, 1, WRITE_BUF, 512, DESC_NEXT, 2)?;
        emit_desc(a, RING, 2, STATUSES, 1, DESC_WRITE, 0)?;
        emit_desc(a, RING, 3, HEADERS + 16, 16, DESC_NEXT, 4)?;
        emit_desc(a, RING, 4, READ_BUF, 512, DESC_NEXT | DESC_WRITE, 5)?;
        emit_desc(a, RING, 5, STATUSES + 1, 1, DESC_WRITE, 0)?;
        emit_queue_pfn(a, 0, RING)?;
        emit_status_driver_ok(a)?;

        a.set_label(&mut next)?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.inc(word_ptr(SEQ))?;
        a.mov(bx, word_ptr(SEQ))?;
        // sector = (seq % 16) + 1, in both headers.
        a.mov(cx, bx)?;
        a.and(cx, (DATA_SECTORS - 1) as i32)?;
        a.inc(cx)?;
        emit_segment(a, HEADERS)?;
        a.mov(word_ptr(8), cx)?;
        a.mov(word_ptr(24), cx)?;
        // The data: seq in the first word; the read buffer cleared; statuses 0xff.
        emit_segment(a, WRITE_BUF)?;
        a.mov(word_ptr(0), bx)?;
        emit_segment(a, READ_BUF)?;
        a.mov(word_ptr(0), 0u32)?;
        emit_segment(a, STATUSES)?;
        a.mov(word_ptr(0), 0xffffu32)?;
        emit_request(a, 0)?;
        emit_request(a, 3)?;
        // Print seq (BX: rotated back to itself after four digits).
        for _ in 0..4 {
            let mut digit = a.create_label();
            a.rol(bx, 4)?;
            a.mov(al, bl)?;
            a.and(al, 0x0f)?;
            a.add(al, b'0' as u32)?;
            a.cmp(al, b'9' as u32)?;
            a.jbe(digit)?;
            a.add(al, 7)?;
            a.set_label(&mut digit)?;
            emit_putc(a)?;
        }
        emit_segment(a, READ_BUF)?;
        a.mov(cx, word_ptr(0))?;
        emit_segment(a, STATUSES)?;
        a.mov(si, word_ptr(0))?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.cmp(cx, bx)?;
        a.jne(bad)?;
        a.cmp(si, 0)?;
        a.je(newline)?;
        a.set_label(&mut bad)?;
        a.mov(al, b'!' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut newline)?;
        a.mov(al, b'\n' as u32)?;
        emit_putc(a)?;
        a.cmp(bx, END)?;
        a.jb(next)?;
        emit_s5_power_off(a)
    });
    guest_file("migration-blk-loop", &guest)
}

fn scratch(name: &str) -> PathBuf {
    scratch_path("migblk", name)
}

impl Vmkit {
    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(mut e) = self.0.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }

    /// Waits for the guest's S5 (exit status 0).
    fn wait_poweroff(&mut self, who: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{who}: the guest did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = self.stderr();
        assert_eq!(status.code(), Some(0), "{who}: {err}");
    }
}

fn start(guest: &Path, disk: &Path, out: &Path, irqchip: &str, extra: &[String]) -> Vmkit {
    let child = vmkit()
        .arg("-flat")
        .arg(guest)
        .args(["-m", "64", "-irqchip", irqchip])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=d0,cache=writeback",
            disk.display()
        ))
        .arg("-device")
        .arg(format!("virtio-blk-pci,drive=d0,addr={SLOT:02x}.0"))
        .arg("-serial")
        .arg(format!("file:{}", out.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    Vmkit(child)
}

/// The guest's complete lines after its "V": (number, whether it was marked `!`).
fn lines(path: &Path) -> Vec<(u32, bool)> {
    parse(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The complete lines of `text` after its "V".
fn parse(text: &str) -> Vec<(u32, bool)> {
    let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
    complete
        .lines()
        .skip_while(|l| *l == "V")
        .map(|l| {
            let (digits, bad) = match l.strip_suffix('!') {
                Some(d) => (d, true),
                None => (l, false),
            };
            let n = u32::from_str_radix(digits, 16).unwrap_or_else(|_| panic!("bad line {l:?}"));
            (n, bad)
        })
        .collect()
}

fn wait_lines(path: &Path, n: usize, child: &mut Vmkit) -> Vec<(u32, bool)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = lines(path);
        if l.len() >= n {
            return l;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "vmkit ended ({status}) with {} lines: {}",
                l.len(),
                child.stderr()
            );
        }
        assert!(Instant::now() < deadline, "only {} lines in 60 s", l.len());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the source printed up to the migration (its last line may be cut off there), then
/// what the destination printed: one run of lines 1..=END with none marked `!`. Returns
/// the last number the source printed whole.
fn check_both(out_a: &Path, out_b: &Path) -> u32 {
    let a = std::fs::read_to_string(out_a).unwrap();
    let b = std::fs::read_to_string(out_b).unwrap();
    let source = parse(&a);
    let last = source.last().map_or(0, |l| l.0);
    assert!(
        source.len() >= 20,
        "the source printed {} lines",
        source.len()
    );
    assert!(
        last < END,
        "the guest finished before the migration: {last:#x}"
    );
    let all = parse(&(a + &b));
    check_run(&all, 1, "source then destination");
    assert_eq!(all.last().unwrap().0, END, "the destination ran to the end");
    last
}

fn check_run(values: &[(u32, bool)], first: u32, who: &str) {
    for (i, &(n, bad)) in values.iter().enumerate() {
        assert_eq!(n, first + i as u32, "{who}: line {i} out of order");
        assert!(!bad, "{who}: sector {n:#x} read back something else");
    }
}

/// The disk holds, in every data sector, the last number the guest wrote there.
fn check_disk(disk: &Path) {
    let bytes = std::fs::read(disk).unwrap();
    assert_eq!(&bytes[..16], b"vmkit-migblk\r\n\0\0", "sector 0 untouched");
    for sector in 1..=DATA_SECTORS {
        let last = (1..=END)
            .rev()
            .find(|n| (n % DATA_SECTORS) + 1 == sector)
            .unwrap();
        let at = (sector * 512) as usize;
        let word = u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        assert_eq!(
            u32::from(word),
            last,
            "sector {sector}: the last write there was {last:#x}"
        );
    }
}

fn disk(name: &str) -> PathBuf {
    let mut bytes = vec![0u8; (DATA_SECTORS as usize + 1) * 512];
    bytes[..14].copy_from_slice(b"vmkit-migblk\r\n");
    let path = scratch(&format!("{name}.img"));
    std::fs::write(&path, bytes).unwrap();
    path
}

mod qmp {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::time::{Duration, Instant};

    use serde_json::{json, Value};

    pub struct Qmp {
        reader: BufReader<UnixStream>,
        writer: UnixStream,
    }

    impl Qmp {
        pub fn connect(path: &Path) -> Self {
            let deadline = Instant::now() + Duration::from_secs(20);
            let stream = loop {
                match UnixStream::connect(path) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => panic!("cannot connect to {}: {e}", path.display()),
                }
            };
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let mut qmp = Self {
                reader: BufReader::new(stream.try_clone().unwrap()),
                writer: stream,
            };
            assert!(qmp.read().get("QMP").is_some());
            let r = qmp.execute(json!({"execute": "qmp_capabilities"}));
            assert!(r.get("return").is_some(), "{r}");
            qmp
        }

        fn read(&mut self) -> Value {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("a QMP line");
            assert!(!line.is_empty(), "QMP closed");
            serde_json::from_str(&line).unwrap()
        }

        pub fn execute(&mut self, command: Value) -> Value {
            self.writer
                .write_all(format!("{command}\n").as_bytes())
                .unwrap();
            loop {
                let m = self.read();
                if m.get("event").is_none() {
                    return m;
                }
            }
        }

        pub fn status(&mut self) -> String {
            let r = self.execute(json!({"execute": "query-status"}));
            r["return"]["status"].as_str().unwrap_or("?").to_string()
        }

        pub fn wait_migration(&mut self) -> Value {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let r = self.execute(json!({"execute": "query-migrate"}));
                let status = r["return"]["status"].as_str().unwrap_or("").to_string();
                if status == "completed" || status == "failed" {
                    return r["return"].clone();
                }
                assert!(Instant::now() < deadline, "migration did not end: {r}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
use qmp::Qmp;

fn live(irqchip: &str) {
    let guest = blk_loop_guest();
    let disk = disk(&format!("live-{irqchip}"));
    let (socket, dest_socket) = (
        scratch(&format!("live-{irqchip}-a.qmp")),
        scratch(&format!("live-{irqchip}-b.qmp")),
    );
    let (out_a, out_b) = (
        scratch(&format!("live-{irqchip}-a.txt")),
        scratch(&format!("live-{irqchip}-b.txt")),
    );
    let uri = format!(
        "unix:{}",
        scratch(&format!("live-{irqchip}.sock")).display()
    );
    let mut extra = qmp_arg(&dest_socket).to_vec();
    extra.extend(["-incoming".to_string(), uri.clone()]);
    let mut dest = start(&guest, &disk, &out_b, irqchip, &extra);
    let mut dest_qmp = Qmp::connect(&dest_socket);
    assert_eq!(dest_qmp.status(), "inmigrate");
    let mut source = start(&guest, &disk, &out_a, irqchip, &qmp_arg(&socket));
    let mut qmp = Qmp::connect(&socket);
    wait_lines(&out_a, 20, &mut source);
    let r = qmp.execute(json!({"execute": "migrate", "arguments": {"uri": uri}}));
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "completed", "{info}");
    assert_eq!(qmp.status(), "postmigrate");
    let before = std::fs::read(&out_a).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        std::fs::read(&out_a).unwrap(),
        before,
        "a migrated source does no more I/O"
    );
    dest.wait_poweroff("destination");
    let last = check_both(&out_a, &out_b);
    eprintln!(
        "live migration with virtio-blk ({irqchip}): source printed up to {last:#x}, \
         downtime {} ms, total {} ms",
        info["downtime"], info["total-time"]
    );
    drop(qmp);
    drop(source);
    check_disk(&disk);
    let _ = std::fs::remove_file(disk);
}

#[test]
fn live_migration_with_the_disk_in_use_loses_and_repeats_no_request() {
    require_kvm!();
    live("kernel");
}

#[test]
fn live_migration_with_the_disk_in_use_and_the_userspace_irqchip() {
    require_kvm!();
    live("user");
}

#[test]
fn save_and_restore_with_the_disk_in_use_loses_and_repeats_no_request() {
    require_kvm!();
    let guest = blk_loop_guest();
    let disk = disk("save");
    let state = scratch("save.state");
    let (socket, out_a, out_b) = (
        scratch("save.qmp"),
        scratch("save-a.txt"),
        scratch("save-b.txt"),
    );
    let mut source = start(&guest, &disk, &out_a, "kernel", &qmp_arg(&socket));
    let mut qmp = Qmp::connect(&socket);
    wait_lines(&out_a, 20, &mut source);
    let r = qmp.execute(
        json!({"execute": "migrate", "arguments": {"uri": format!("file:{}", state.display())}}),
    );
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "completed", "{info}");
    drop(qmp);
    drop(source);

    let restore = ["-incoming".to_string(), format!("file:{}", state.display())];
    let mut dest = start(&guest, &disk, &out_b, "kernel", &restore);
    dest.wait_poweroff("restored");
    let last = check_both(&out_a, &out_b);
    eprintln!("save with virtio-blk: source printed up to {last:#x}, {info}");
    check_disk(&disk);
    let _ = std::fs::remove_file(disk);
    let _ = std::fs::remove_file(state);
}
