//! Save, restore and live migration of a running guest between `vmkit` processes.
//!
//! The guest counts PIT interrupts (100 Hz, IRQ0 through the 8259A) and prints every count,
//! in order, as four hex digits and a newline on COM1. The lines the source printed and the
//! lines the destination prints after the migration must continue with no number lost or
//! repeated; the stream must be refused when truncated, corrupt or foreign, and a source
//! whose target is unreachable keeps running.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::migrate::{qmp_arg, scratch_path, Vmkit};
use common::*;
use serde_json::{json, Value};

const COUNT: u64 = 0x500;
const PRINTED: u64 = 0x504;

fn counter_guest() -> PathBuf {
    counter_guest_with(0, 0)
}

/// The counter guest with its variables in shadow RAM: it opens the BIOS segment
/// (0xF0000-0xFFFFF) read/write through the i440FX's PAM0 and keeps COUNT and PRINTED at
/// F000:0500 and F000:0504 (DS = 0xF000 from then on).
fn shadow_counter_guest() -> PathBuf {
    build_counter_guest(0, 0, true)
}

fn counter_guest_filling(segments: u32) -> PathBuf {
    counter_guest_with(segments, 0)
}

/// Pages of the window the dirtying guest writes (0x20000..0xA0000).
const DIRTY_WINDOW_PAGES: u32 = 128;

/// The counter guest; first it fills `segments` 64 KiB segments from 0x10000 on with a
/// non-zero pattern (RAM the stream must carry); then each PIT tick (100 Hz) writes the
/// count into `dirty_per_tick` pages of a 128-page window at 0x20000, the next ones each
/// tick (a guest dirtying `100 * dirty_per_tick` pages per second).
fn counter_guest_with(segments: u32, dirty_per_tick: u32) -> PathBuf {
    build_counter_guest(segments, dirty_per_tick, false)
}

fn build_counter_guest(segments: u32, dirty_per_tick: u32, shadow: bool) -> PathBuf {
    let handler = ENTRY + 0x200;
    let mut guest = real_mode_guest(|a| {
        let mut main = a.create_label();
        let mut check = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(ss, ax)?;
        a.mov(sp, 0x8000u32)?;
        for seg in 0..segments {
            a.mov(ax, 0x1000 + 0x1000 * seg)?;
            a.mov(es, ax)?;
            a.xor(di, di)?;
            a.mov(cx, 0x8000u32)?;
            a.mov(ax, 0xa55au32 + seg)?;
            a.cld()?;
            a.rep().stosw()?;
        }
        // IRQ0 is vector 8 after the BIOS-style PIC setup.
        a.mov(word_ptr(8 * 4), handler as u32)?;
        a.mov(word_ptr(8 * 4 + 2), 0u32)?;
        if shadow {
            // PAM0 (i440FX 0x59) = 0x30: the BIOS segment reads and writes RAM.
            a.mov(eax, 0x8000_0058u32)?;
            a.mov(dx, 0xcf8u32)?;
            a.out(dx, eax)?;
            a.mov(dx, 0xcfdu32)?;
            a.mov(al, 0x30u32)?;
            a.out(dx, al)?;
            a.mov(ax, 0xf000u32)?;
            a.mov(ds, ax)?;
        }
        a.mov(word_ptr(COUNT), 0u32)?;
        a.mov(word_ptr(PRINTED), 0u32)?;
        emit_pic_init(a, 0xfe)?;
        // PIT counter 0, mode 2, 11932: 100 Hz.
        a.mov(al, 0x34u32)?;
        a.out(0x43, al)?;
        a.mov(al, 0x9cu32)?;
        a.out(0x40, al)?;
        a.mov(al, 0x2eu32)?;
        a.out(0x40, al)?;
        a.sti()?;
        a.set_label(&mut check)?;
        a.mov(bx, word_ptr(PRINTED))?;
        a.cmp(bx, word_ptr(COUNT))?;
        a.je(main)?;
        a.inc(bx)?;
        a.mov(word_ptr(PRINTED), bx)?;
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
        a.mov(al, b'\n' as u32)?;
        emit_putc(a)?;
        a.jmp(check)?;
        a.set_label(&mut main)?;
        a.hlt()?;
        a.jmp(check)
    });
    let isr = assemble(16, handler, |a| {
        a.push(ax)?;
        a.inc(word_ptr(COUNT))?;
        if dirty_per_tick > 0 {
            let mut page = a.create_label();
            a.push(bx)?;
            a.push(cx)?;
            a.push(si)?;
            a.push(ds)?;
            a.mov(bx, word_ptr(COUNT))?;
            a.mov(si, bx)?;
            a.imul_3(si, si, dirty_per_tick as i32)?;
            a.mov(cx, dirty_per_tick)?;
            a.set_label(&mut page)?;
            a.mov(ax, si)?;
            a.and(ax, (DIRTY_WINDOW_PAGES - 1) as i32)?;
            a.shl(ax, 8)?;
            a.add(ax, 0x2000)?;
            a.mov(ds, ax)?;
            a.mov(word_ptr(0), bx)?;
            a.inc(si)?;
            a.loop_(page)?;
            a.pop(ds)?;
            a.pop(si)?;
            a.pop(cx)?;
            a.pop(bx)?;
        }
        a.mov(al, 0x20u32)?;
        a.out(0x20, al)?;
        a.pop(ax)?;
        a.iret()
    });
    assert!(guest.len() <= 0x200);
    guest.resize(0x200, 0x90);
    guest.extend_from_slice(&isr);
    guest_file(
        &format!("migration-counter-{segments}-{dirty_per_tick}-{shadow}"),
        &guest,
    )
}

fn scratch(name: &str) -> PathBuf {
    scratch_path("mig", name)
}

fn start(guest: &Path, irqchip: &str, mem: &str, out: &Path, extra: &[String]) -> Vmkit {
    let child = vmkit()
        .arg("-flat")
        .arg(guest)
        .args(["-irqchip", irqchip, "-m", mem])
        .arg("-serial")
        .arg(format!("file:{}", out.display()))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    Vmkit(child)
}

struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
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
        let greeting = qmp.read();
        assert!(greeting.get("QMP").is_some(), "{greeting}");
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

    fn execute(&mut self, command: Value) -> Value {
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

    fn status(&mut self) -> String {
        let r = self.execute(json!({"execute": "query-status"}));
        r["return"]["status"].as_str().unwrap_or("?").to_string()
    }

    /// Waits until query-migrate reports an end state and returns its reply.
    fn wait_migration(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.execute(json!({"execute": "query-migrate"}));
            let status = r["return"]["status"].as_str().unwrap_or("").to_string();
            if status == "completed" || status == "failed" {
                return r["return"].clone();
            }
            assert!(Instant::now() < deadline, "migration did not end: {r}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The counter values printed so far (complete lines only).
fn lines(path: &Path) -> Vec<u32> {
    parse_lines(&std::fs::read_to_string(path).unwrap_or_default())
}

/// The destination's complete lines: the source may have stopped in the middle of one,
/// which the destination finishes, so the source's unfinished tail comes first.
fn dest_lines(source: &Path, dest: &Path) -> Vec<u32> {
    let a = std::fs::read_to_string(source).unwrap_or_default();
    let tail = a.rsplit_once('\n').map_or(a.as_str(), |(_, t)| t);
    parse_lines(&format!(
        "{tail}{}",
        std::fs::read_to_string(dest).unwrap_or_default()
    ))
}

/// Like [`wait_lines`], for the destination's lines ([`dest_lines`]).
fn wait_dest_lines(source: &Path, dest: &Path, n: usize, child: &mut Vmkit) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = dest_lines(source, dest);
        if l.len() >= n {
            return l;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("vmkit ended ({status}) with {} lines: {err}", l.len());
        }
        assert!(Instant::now() < deadline, "only {} lines in 30 s", l.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn parse_lines(text: &str) -> Vec<u32> {
    let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
    complete
        .lines()
        .map(|l| u32::from_str_radix(l, 16).unwrap_or_else(|_| panic!("bad line {l:?}")))
        .collect()
}

fn wait_lines(path: &Path, n: usize, child: &mut Vmkit) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let l = lines(path);
        if l.len() >= n {
            return l;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("vmkit ended ({status}) with {} lines: {err}", l.len());
        }
        assert!(Instant::now() < deadline, "only {} lines in 30 s", l.len());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_consecutive(values: &[u32], first: u32, who: &str) {
    for (i, v) in values.iter().enumerate() {
        assert_eq!(*v, first + i as u32, "{who}: line {i} of {values:x?}");
    }
}

fn end(mut child: Vmkit) -> String {
    let _ = child.0.kill();
    child.0.wait_with_output_ref()
}

trait WaitRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl WaitRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        let _ = self.wait();
        let mut err = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }
}

/// Save to a file, restore in a new process: the counter runs on from where it stopped.
fn save_and_restore(irqchip: &str) -> PathBuf {
    save_and_restore_via(irqchip, false)
}

/// As [`save_and_restore`]; with `exec`, through `exec:cat > FILE` and `exec:cat FILE`.
fn save_and_restore_via(irqchip: &str, exec: bool) -> PathBuf {
    let guest = counter_guest();
    let socket = scratch(&format!("save-{irqchip}-{exec}.qmp"));
    let out_a = scratch(&format!("save-{irqchip}-{exec}-a.txt"));
    let out_b = scratch(&format!("save-{irqchip}-{exec}-b.txt"));
    let state = scratch(&format!("save-{irqchip}-{exec}.state"));
    let (save_uri, load_uri) = if exec {
        (
            format!("exec:cat > '{}'", state.display()),
            format!("exec:cat '{}'", state.display()),
        )
    } else {
        (
            format!("file:{}", state.display()),
            format!("file:{}", state.display()),
        )
    };
    let mut source = start(&guest, irqchip, "64", &out_a, &qmp_arg(&socket));
    let mut qmp = Qmp::connect(&socket);
    wait_lines(&out_a, 5, &mut source);
    let r = qmp.execute(json!({"execute": "migrate", "arguments": {"uri": save_uri}}));
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "completed", "{info}");
    assert_eq!(qmp.status(), "postmigrate");
    eprintln!("save ({irqchip}): {info}");
    let before = lines(&out_a);
    assert_consecutive(&before, 1, "source");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(lines(&out_a), before, "a migrated source stays stopped");
    drop(qmp);
    end(source);

    let dest_socket = scratch(&format!("save-{irqchip}-{exec}-b.qmp"));
    let mut restore = qmp_arg(&dest_socket).to_vec();
    restore.extend(["-incoming".to_string(), load_uri]);
    if exec {
        // With -S the loaded machine waits for `cont`, as QEMU's.
        restore.push("-S".to_string());
    }
    let mut dest = start(&guest, irqchip, "64", &out_b, &restore);
    let mut dest_qmp = Qmp::connect(&dest_socket);
    if exec {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = dest_qmp.execute(json!({"execute": "query-migrate"}));
            if r["return"]["status"] == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "no incoming migration: {r}");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert!(lines(&out_b).is_empty(), "the guest ran before cont");
        assert_eq!(dest_qmp.status(), "prelaunch");
        let r = dest_qmp.execute(json!({"execute": "cont"}));
        assert!(r.get("return").is_some(), "{r}");
    }
    let after = wait_dest_lines(&out_a, &out_b, 5, &mut dest);
    let dest_info = dest_qmp.execute(json!({"execute": "query-migrate"}));
    assert_eq!(
        dest_info["return"]["x-vmkit-ram-crc32"], info["x-vmkit-ram-crc32"],
        "RAM checksum: {dest_info} vs {info}"
    );
    let last = *before.last().unwrap();
    assert_consecutive(&after, last + 1, "restored");
    end(dest);
    state
}

#[test]
fn save_to_file_and_restore_with_the_kernel_irqchip() {
    require_kvm!();
    let _ = std::fs::remove_file(save_and_restore("kernel"));
}

#[test]
fn save_and_restore_through_exec_commands() {
    require_kvm!();
    let _ = std::fs::remove_file(save_and_restore_via("kernel", true));
}

#[test]
fn save_to_file_and_restore_with_the_userspace_irqchip() {
    require_kvm!();
    let _ = std::fs::remove_file(save_and_restore("user"));
}

fn live(irqchip: &str, mem: &str, smp: &str) {
    live_via(irqchip, mem, smp, "unix");
}

fn live_via(irqchip: &str, mem: &str, smp: &str, transport: &str) {
    let guest = counter_guest();
    // Tests run in parallel: every file of this one is its own.
    let tag = format!("live-{irqchip}-{mem}-{smp}-{transport}");
    let socket = scratch(&format!("{tag}.qmp"));
    let mig = scratch(&format!("{tag}.sock"));
    let out_a = scratch(&format!("{tag}-a.txt"));
    let out_b = scratch(&format!("{tag}-b.txt"));
    let dest_socket = scratch(&format!("{tag}-b.qmp"));
    let mut extra = qmp_arg(&dest_socket).to_vec();
    let uri = if transport == "tcp" {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("tcp:127.0.0.1:{port}")
    } else {
        format!("unix:{}", mig.display())
    };
    extra.extend(["-incoming".to_string(), uri.clone()]);
    extra.extend(["-smp".to_string(), smp.to_string()]);
    let mut dest = start(&guest, irqchip, mem, &out_b, &extra);
    let mut dest_qmp = Qmp::connect(&dest_socket);
    assert_eq!(dest_qmp.status(), "inmigrate");
    let mut source_args = qmp_arg(&socket).to_vec();
    source_args.extend(["-smp".to_string(), smp.to_string()]);
    let mut source = start(&guest, irqchip, mem, &out_a, &source_args);
    let mut qmp = Qmp::connect(&socket);
    wait_lines(&out_a, 5, &mut source);
    let r = qmp.execute(json!({"execute": "migrate", "arguments": {"uri": uri}}));
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "completed", "{info}");
    eprintln!(
        "live migration ({irqchip}, -m {mem}): total-time {} ms, downtime {} ms, ram transferred {} bytes, {} zero pages",
        info["total-time"], info["downtime"], info["ram"]["transferred"], info["ram"]["duplicate"]
    );
    let before = lines(&out_a);
    assert_consecutive(&before, 1, "source");
    let after = wait_dest_lines(&out_a, &out_b, 5, &mut dest);
    assert_eq!(dest_qmp.status(), "running");
    let dest_info = dest_qmp.execute(json!({"execute": "query-migrate"}));
    assert_eq!(dest_info["return"]["status"], "completed", "{dest_info}");
    let crc = &info["x-vmkit-ram-crc32"];
    assert!(crc.is_u64(), "{info}");
    assert_eq!(
        &dest_info["return"]["x-vmkit-ram-crc32"], crc,
        "RAM checksum"
    );
    assert_consecutive(&after, *before.last().unwrap() + 1, "destination");
    drop(qmp);
    end(source);
    end(dest);
}

#[test]
fn live_migration_over_unix_with_the_kernel_irqchip() {
    require_kvm!();
    live("kernel", "256", "1");
}

#[test]
fn live_migration_over_unix_with_the_userspace_irqchip() {
    require_kvm!();
    live("user", "64", "1");
}

#[test]
fn live_migration_over_tcp() {
    require_kvm!();
    live_via("kernel", "64", "1", "tcp");
}

#[test]
fn live_migration_over_unix_with_two_vcpus() {
    require_kvm!();
    live("kernel", "64", "2");
}

/// Truncated, corrupt and foreign streams are refused with the reason, and the
/// destination never runs the guest (no line printed, exit status 1).
#[test]
fn bad_streams_are_refused_and_an_unreachable_target_leaves_the_source_running() {
    require_kvm!();
    let guest = counter_guest();
    let socket = scratch("bad.qmp");
    let out_a = scratch("bad-a.txt");
    let state = scratch("bad.state");
    let mut source = start(&guest, "kernel", "64", &out_a, &qmp_arg(&socket));
    let mut qmp = Qmp::connect(&socket);
    wait_lines(&out_a, 3, &mut source);

    // Unreachable target: failed, and the guest keeps running.
    let r = qmp.execute(
        json!({"execute": "migrate", "arguments": {"uri": "unix:/nonexistent/vmkit.sock"}}),
    );
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "failed", "{info}");
    assert!(
        info["error-desc"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/vmkit.sock"),
        "{info}"
    );
    assert_eq!(qmp.status(), "running");
    let n = lines(&out_a).len();
    wait_lines(&out_a, n + 3, &mut source);
    let r = qmp.execute(json!({"execute": "migrate", "arguments": {"uri": "fd:3"}}));
    assert!(
        r["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("not supported yet"),
        "{r}"
    );

    let r = qmp.execute(
        json!({"execute": "migrate", "arguments": {"uri": format!("file:{}", state.display())}}),
    );
    assert!(r.get("return").is_some(), "{r}");
    assert_eq!(qmp.wait_migration()["status"], "completed");
    drop(qmp);
    end(source);
    let good = std::fs::read(&state).unwrap();

    let mut corrupt = good.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle] ^= 0x40;
    let mut foreign = b"QEVM\0\0\0\x03".to_vec();
    foreign.extend_from_slice(&good[8..]);
    let mut other_version = good.clone();
    other_version[8] = 9;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("truncated", good[..good.len() / 2].to_vec(), "truncated"),
        ("corrupt", corrupt, "checksum"),
        ("foreign", foreign, "not a vmkit migration stream"),
        ("version", other_version, "stream version 9"),
    ];
    for (name, bytes, expect) in cases {
        let file = scratch(&format!("bad-{name}.state"));
        std::fs::write(&file, bytes).unwrap();
        let out = scratch(&format!("bad-{name}.txt"));
        let restore = ["-incoming".to_string(), format!("file:{}", file.display())];
        let mut dest = start(&guest, "kernel", "64", &out, &restore);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = dest.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{name}: vmkit did not end");
            std::thread::sleep(Duration::from_millis(20));
        };
        let err = dest.0.wait_with_output_ref();
        assert_eq!(status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(expect), "{name}: expected {expect:?} in {err}");
        assert!(
            lines(&out).is_empty(),
            "{name}: the guest ran: {:?}",
            lines(&out)
        );
        let _ = std::fs::remove_file(file);
    }
    // A destination of another size refuses the stream, naming the options.
    let out = scratch("bad-size.txt");
    let restore = ["-incoming".to_string(), format!("file:{}", state.display())];
    let mut dest = start(&guest, "kernel", "32", &out, &restore);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dest.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "vmkit did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = dest.0.wait_with_output_ref();
    assert!(err.contains("same -m"), "{err}");
    let _ = std::fs::remove_file(state);
}

/// `migrate-set-parameters` / `query-migrate-parameters` with QEMU's names, defaults and
/// refusals; `max-bandwidth` paces the stream; `migrate_cancel` stops a slow one and the
/// guest runs on.
#[test]
fn migration_parameters_throttle_the_stream_and_a_cancel_leaves_the_guest_running() {
    require_kvm!();
    // 512 KiB of non-zero RAM for the stream.
    let guest = counter_guest_filling(8);
    let socket = scratch("params.qmp");
    let out = scratch("params.txt");
    let state = scratch("params.state");
    let mut source = start(&guest, "kernel", "64", &out, &qmp_arg(&socket));
    let mut qmp = Qmp::connect(&socket);
    let r = qmp.execute(json!({"execute": "query-migrate-parameters"}));
    assert_eq!(r["return"]["downtime-limit"], 300, "QEMU's default: {r}");
    assert_eq!(
        r["return"]["max-bandwidth"], 134217728,
        "QEMU's default: {r}"
    );
    for (args, desc) in [
        (
            json!({"downtime-limit": 2000001}),
            "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
        ),
        (
            json!({"downtime-limit": -1}),
            "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
        ),
        (
            json!({"max-bandwidth": "fast"}),
            "Parameter 'max-bandwidth' expects uint64",
        ),
        (json!({"speed": 1}), "Parameter 'speed' is unexpected"),
    ] {
        let r = qmp.execute(json!({"execute": "migrate-set-parameters", "arguments": args}));
        assert_eq!(r["error"]["desc"], desc, "{args}: {r}");
    }
    let rate = 1u64 << 20;
    let r = qmp.execute(json!({"execute": "migrate-set-parameters",
        "arguments": {"downtime-limit": 100, "max-bandwidth": rate}}));
    assert!(r.get("return").is_some(), "{r}");
    let r = qmp.execute(json!({"execute": "query-migrate-parameters"}));
    assert_eq!(
        r["return"],
        json!({"downtime-limit": 100, "max-bandwidth": rate})
    );
    wait_lines(&out, 3, &mut source);

    // 64 KiB/s: the 512 KiB would take 8 s; cancelled after 300 ms.
    let r = qmp.execute(json!({"execute": "migrate-set-parameters",
        "arguments": {"max-bandwidth": 64 << 10}}));
    assert!(r.get("return").is_some(), "{r}");
    let r = qmp.execute(
        json!({"execute": "migrate", "arguments": {"uri": format!("file:{}", state.display())}}),
    );
    assert!(r.get("return").is_some(), "{r}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        qmp.execute(json!({"execute": "query-migrate"}))["return"]["status"],
        "active"
    );
    let r = qmp.execute(json!({"execute": "migrate_cancel"}));
    assert!(r.get("return").is_some(), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = qmp.execute(json!({"execute": "query-migrate"}));
        if r["return"]["status"] == "cancelled" {
            break;
        }
        assert!(Instant::now() < deadline, "not cancelled: {r}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(qmp.status(), "running");
    let n = lines(&out).len();
    wait_lines(&out, n + 3, &mut source);

    // 1 MiB/s: the stream takes at least its size over the rate.
    let r = qmp.execute(json!({"execute": "migrate-set-parameters",
        "arguments": {"max-bandwidth": rate}}));
    assert!(r.get("return").is_some(), "{r}");
    let r = qmp.execute(
        json!({"execute": "migrate", "arguments": {"uri": format!("file:{}", state.display())}}),
    );
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "completed", "{info}");
    let transferred = info["ram"]["transferred"].as_u64().unwrap();
    assert!(transferred >= 512 << 10, "{info}");
    let size = std::fs::metadata(&state).unwrap().len();
    // The first 64 KiB piece goes out at once; the rest is paced.
    let floor_ms = (size - (64 << 10)) * 1000 / rate;
    let total = info["total-time"].as_u64().unwrap();
    assert!(
        total >= floor_ms,
        "{size} bytes at {rate} bytes/s took {total} ms (at least {floor_ms} expected)"
    );
    eprintln!("throttled: {size} bytes at {rate} bytes/s in {total} ms");
    drop(qmp);
    end(source);
    let _ = std::fs::remove_file(state);
}

/// Pre-copy: a guest dirtying 1600 pages per second (16 a PIT tick) is live-migrated with
/// `max-bandwidth` 4 MiB/s and `downtime-limit` 1 ms, so the first pass (over 100 ms, ten
/// ticks) leaves dirty pages (one tick's 16 take 15 ms at that rate) that are sent again
/// while the guest runs. The counter runs on,
/// the RAM checksums match, and query-migrate reports the syncs and the dirty rate.
#[test]
fn precopy_sends_dirty_pages_again_while_a_dirtying_guest_runs() {
    require_kvm!();
    let guest = counter_guest_with(0, 16);
    let tag = "precopy";
    let (socket, dest_socket) = (
        scratch(&format!("{tag}.qmp")),
        scratch(&format!("{tag}-b.qmp")),
    );
    let (out_a, out_b) = (
        scratch(&format!("{tag}-a.txt")),
        scratch(&format!("{tag}-b.txt")),
    );
    let uri = format!("unix:{}", scratch(&format!("{tag}.sock")).display());
    let mut extra = qmp_arg(&dest_socket).to_vec();
    extra.extend(["-incoming".to_string(), uri.clone()]);
    let mut dest = start(&guest, "kernel", "64", &out_b, &extra);
    let mut dest_qmp = Qmp::connect(&dest_socket);
    let mut source = start(&guest, "kernel", "64", &out_a, &qmp_arg(&socket));
    let mut qmp = Qmp::connect(&socket);
    // Every page of the window written once before the migration starts.
    wait_lines(&out_a, (DIRTY_WINDOW_PAGES / 16 + 2) as usize, &mut source);

    // At 2 MiB/s (under the guest's 6.4 MB/s) a pre-copy to a file is watched while
    // active (the first round after the first sync takes some 250 ms), then cancelled:
    // dirty logging goes off and the guest runs on.
    let state = scratch(&format!("{tag}.state"));
    let r = qmp.execute(json!({"execute": "migrate-set-parameters",
        "arguments": {"downtime-limit": 1, "max-bandwidth": 2u64 << 20}}));
    assert!(r.get("return").is_some(), "{r}");
    let r = qmp.execute(
        json!({"execute": "migrate", "arguments": {"uri": format!("file:{}", state.display())}}),
    );
    assert!(r.get("return").is_some(), "{r}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let active = loop {
        let r = qmp.execute(json!({"execute": "query-migrate"}));
        let info = r["return"].clone();
        if info["status"] == "active" && info["ram"]["remaining"].as_u64().unwrap_or(0) > 0 {
            break info;
        }
        assert!(Instant::now() < deadline, "no pre-copy round seen: {r}");
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("pre-copy under way: {active}");
    assert!(active["expected-downtime"].as_u64().is_some(), "{active}");
    assert!(
        active["ram"]["dirty-sync-count"].as_u64().unwrap() >= 2,
        "{active}"
    );
    assert_eq!(qmp.status(), "running", "the guest runs during pre-copy");
    let r = qmp.execute(json!({"execute": "migrate_cancel"}));
    assert!(r.get("return").is_some(), "{r}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while qmp.execute(json!({"execute": "query-migrate"}))["return"]["status"] != "cancelled" {
        assert!(Instant::now() < deadline, "not cancelled");
        std::thread::sleep(Duration::from_millis(10));
    }
    let n = lines(&out_a).len();
    wait_lines(&out_a, n + 3, &mut source);
    let _ = std::fs::remove_file(&state);
    let r = qmp.execute(json!({"execute": "migrate-set-parameters",
        "arguments": {"downtime-limit": 1, "max-bandwidth": 4u64 << 20}}));
    assert!(r.get("return").is_some(), "{r}");
    let r = qmp.execute(json!({"execute": "migrate", "arguments": {"uri": uri}}));
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "completed", "{info}");
    eprintln!("pre-copy: {info}");
    let ram = &info["ram"];
    // Sync 1 (after the first pass) found pages, a round sent them, sync 2, and the last
    // sync with the guest stopped.
    assert!(ram["dirty-sync-count"].as_u64().unwrap() >= 4, "{info}");
    let rate = ram["dirty-pages-rate"].as_u64().unwrap();
    assert!(
        (100..=16_000).contains(&rate),
        "the guest dirties 1600 pages/s; measured {rate}: {info}"
    );
    assert_eq!(ram["remaining"], 0, "{info}");
    assert!(info["downtime"].as_u64().unwrap() <= info["total-time"].as_u64().unwrap());
    let before = lines(&out_a);
    assert_consecutive(&before, 1, "source");
    let after = wait_dest_lines(&out_a, &out_b, 5, &mut dest);
    let dest_info = dest_qmp.execute(json!({"execute": "query-migrate"}));
    assert_eq!(
        dest_info["return"]["x-vmkit-ram-crc32"], info["x-vmkit-ram-crc32"],
        "RAM checksum: every page dirtied during pre-copy arrived"
    );
    assert_consecutive(&after, *before.last().unwrap() + 1, "destination");
    drop(qmp);
    end(source);
    end(dest);
}

/// Shadow RAM and PAM: a guest whose counter lives in the BIOS segment's shadow RAM (PAM0
/// read/write) is saved and restored, then live-migrated: the counter runs on from its
/// value in shadow RAM on the destination, which only works if the PAM state and the
/// shadow pages both came along.
#[test]
fn shadow_ram_behind_pam_is_migrated() {
    require_kvm!();
    let guest = shadow_counter_guest();
    let tag = "shadow";
    let (socket, dest_socket) = (
        scratch(&format!("{tag}.qmp")),
        scratch(&format!("{tag}-b.qmp")),
    );
    let (out_a, out_b) = (
        scratch(&format!("{tag}-a.txt")),
        scratch(&format!("{tag}-b.txt")),
    );
    let uri = format!("unix:{}", scratch(&format!("{tag}.sock")).display());
    let mut extra = qmp_arg(&dest_socket).to_vec();
    extra.extend(["-incoming".to_string(), uri.clone()]);
    let mut dest = start(&guest, "kernel", "64", &out_b, &extra);
    let mut dest_qmp = Qmp::connect(&dest_socket);
    let mut source = start(&guest, "kernel", "64", &out_a, &qmp_arg(&socket));
    let mut qmp = Qmp::connect(&socket);
    wait_lines(&out_a, 10, &mut source);
    let r = qmp.execute(json!({"execute": "migrate", "arguments": {"uri": uri}}));
    assert!(r.get("return").is_some(), "{r}");
    let info = qmp.wait_migration();
    assert_eq!(info["status"], "completed", "{info}");
    let before = lines(&out_a);
    assert_consecutive(&before, 1, "source");
    let after = wait_dest_lines(&out_a, &out_b, 5, &mut dest);
    assert_consecutive(&after, *before.last().unwrap() + 1, "destination");
    let dest_info = dest_qmp.execute(json!({"execute": "query-migrate"}));
    assert_eq!(
        dest_info["return"]["x-vmkit-ram-crc32"],
        info["x-vmkit-ram-crc32"]
    );
    drop(qmp);
    end(source);
    end(dest);
}
