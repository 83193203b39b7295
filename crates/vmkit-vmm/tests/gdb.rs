//! The gdb stub against GNU gdb (`/usr/bin/gdb`, Debian's `gdb` package, which
//! scripts/test-all.sh installs) in batch mode, on tiny real-mode, protected-mode and
//! long-mode guests and on Debian's kernel, run by the `vmkit` binary on real KVM.
//!
//! The guest ([`counting_guest`]) counts BX from 1 to 3, storing BL at 0x2000 each round,
//! then exits through isa-debug-exit with the byte at 0x2001 (status `(byte << 1) | 1`): a
//! gdb that writes 0x2001 changes vmkit's exit status, which proves the write landed.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The loop head (`inc bx`): 3 bytes of `mov ax, 0x1234` and 2 of `xor bx, bx` after ENTRY.
const LOOP: u64 = ENTRY + 5;
/// After `inc bx` (1 byte): `mov [0x2000], bl` (4 bytes).
const STORE: u64 = LOOP + 1;
/// After the store: `cmp bx, 3`.
const COMPARE: u64 = STORE + 4;

fn counting_guest() -> Vec<u8> {
    let bytes = real_mode_guest(|a| {
        let mut head = a.create_label();
        a.mov(ax, 0x1234u32)?;
        a.xor(bx, bx)?;
        a.set_label(&mut head)?;
        a.inc(bx)?;
        a.mov(byte_ptr(0x2000), bl)?;
        a.cmp(bx, 3)?;
        a.jne(head)?;
        a.mov(al, byte_ptr(0x2001))?;
        emit_debug_exit(a)
    });
    // The addresses above are what the encoder produced.
    assert_eq!(&bytes[..5], &[0xb8, 0x34, 0x12, 0x31, 0xdb], "prologue");
    assert_eq!(bytes[(LOOP - ENTRY) as usize], 0x43, "inc bx at LOOP");
    assert_eq!(
        &bytes[(STORE - ENTRY) as usize..(COMPARE - ENTRY) as usize],
        &[0x88, 0x1e, 0x00, 0x20],
        "mov [0x2000], bl at STORE"
    );
    bytes
}

/// Spins forever incrementing CX (for Ctrl-C and detach).
fn spinning_guest() -> Vec<u8> {
    real_mode_guest(|a| {
        let mut head = a.create_label();
        a.set_label(&mut head)?;
        a.inc(cx)?;
        a.jmp(head)
    })
}

fn gdb_binary() -> &'static str {
    let path = "/usr/bin/gdb";
    assert!(
        Path::new(path).exists(),
        "GNU gdb is missing: `apt-get install gdb` (scripts/test-all.sh does)"
    );
    path
}

fn socket_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("gdb-{name}-{}.sock", std::process::id()))
}

/// Starts vmkit with `-gdb unix:SOCKET,server` and waits for the socket to exist.
fn start_vmkit(name: &str, guest: &[u8], extra: &[&str]) -> (Child, PathBuf) {
    start_vmkit_in(name, guest, "real", extra)
}

/// [`start_vmkit`] with the flat image entered in `mode` (`real`, `long`).
fn start_vmkit_in(name: &str, guest: &[u8], mode: &str, extra: &[&str]) -> (Child, PathBuf) {
    let guest = guest_file(name, guest);
    let socket = socket_path(name);
    let _ = std::fs::remove_file(&socket);
    let child = vmkit()
        .arg("-flat")
        .arg(format!("{},mode={mode}", guest.display()))
        .args(["-device", "isa-debug-exit", "-serial", "none", "-gdb"])
        .arg(format!("unix:{},server", socket.display()))
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    let start = Instant::now();
    while !socket.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "vmkit never created {}",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, socket)
}

/// Waits for vmkit to end (killing it after `limit`); returns (exit code, stderr).
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for vmkit") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (status.code(), err);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("vmkit did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs gdb in batch mode: connects to `socket`, then runs `commands`; returns its stdout
/// and stderr together.
fn gdb(socket: &Path, commands: &[&str]) -> String {
    let mut command = Command::new(gdb_binary());
    command
        .args(["-batch", "-nx", "-ex", "set confirm off", "-ex"])
        .arg(format!("target remote {}", socket.display()));
    for c in commands {
        command.arg("-ex").arg(c);
    }
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gdb");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.expect("gdb output"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("gdb did not finish within 60 s");
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("---- gdb ----\n{stdout}---- gdb stderr ----\n{stderr}-------------");
    format!("{stdout}{stderr}")
}

/// The value gdb printed for `print ...` number `n` (`$n = VALUE`).
fn printed(text: &str, n: usize) -> String {
    let key = format!("${n} = ");
    let line = text
        .lines()
        .find(|l| l.starts_with(&key))
        .unwrap_or_else(|| panic!("no {key} in gdb output:\n{text}"));
    line[key.len()..].trim().to_string()
}

/// The number gdb printed (in hex, `print/x`) for `print ...` number `n`.
fn printed_hex(text: &str, n: usize) -> u64 {
    let value = printed(text, n);
    u64::from_str_radix(value.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("${n} = {value} is not hex:\n{text}"))
}

#[test]
fn gdb_reads_registers_breaks_steps_watches_and_writes_memory() {
    require_kvm!();
    let (vmkit, socket) = start_vmkit("session", &counting_guest(), &["-S"]);
    let out = gdb(
        &socket,
        &[
            "print/x $pc", // $1: the reset state of the flat guest
            "print/x $cs", // $2
            &format!("hbreak *{LOOP:#x}"),
            "continue",
            "print/x $pc",  // $3: at the breakpoint
            "print $rbx",   // $4: before the first increment
            "print/x $rax", // $5: mov ax, 0x1234 ran
            "continue",     // the same breakpoint, one round later
            "print $rbx",   // $6
            "stepi",        // off the armed breakpoint
            "print/x $pc",  // $7
            "stepi",
            "print/x $pc",                     // $8
            "print/x *(unsigned char*)0x2000", // $9: the guest's store of BL=2
            "delete",
            "watch *(unsigned char*)0x2000",
            "continue",    // the guest stores BL=3
            "print/x $pc", // $10: just after the store
            "delete",
            &format!("x/4xb {ENTRY:#x}"),
            "set var *(unsigned char*)0x2001 = 0x21",
            "print/x *(unsigned char*)0x2001", // $11
            "info registers cr0 cr3 cr4 efer",
            "print/x $cr0",  // $12
            "print/x $efer", // $13
            "continue",
        ],
    );
    assert_eq!(printed(&out, 1), format!("{ENTRY:#x}"), "{out}");
    assert_eq!(printed(&out, 2), "0x0");
    // Real mode: CR0 is ET only (PE and PG clear), no long mode.
    assert_eq!(printed(&out, 12), "0x10");
    assert_eq!(printed(&out, 13), "0x0");
    assert!(out.contains("[ ET ]"), "{out}");
    assert!(
        out.contains("Hardware assisted breakpoint 1 at 0x1005"),
        "{out}"
    );
    assert_eq!(printed(&out, 3), format!("{LOOP:#x}"));
    assert_eq!(printed(&out, 4), "0");
    assert_eq!(printed(&out, 5), "0x1234");
    assert_eq!(printed(&out, 6), "1", "the second hit is one round later");
    assert_eq!(printed(&out, 7), format!("{STORE:#x}"), "stepi advances");
    assert_eq!(printed(&out, 8), format!("{COMPARE:#x}"));
    assert_eq!(printed(&out, 9), "0x2");
    assert!(
        out.contains("Hardware watchpoint 2: *(unsigned char*)0x2000"),
        "{out}"
    );
    assert!(
        out.contains("Old value = 2") && out.contains("New value = 3"),
        "{out}"
    );
    assert_eq!(printed(&out, 10), format!("{COMPARE:#x}"));
    assert!(out.contains("0x1000:\t0xb8\t0x34\t0x12\t0x31"), "{out}");
    assert_eq!(printed(&out, 11), "0x21");
    // gdb prints exit codes in octal: 0x43 = 0103.
    assert!(out.contains("exited with code 0103"), "{out}");
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some((0x21 << 1) | 1), "{err}");
}

/// Virtual alias of guest-physical 0: PML4 entry 1 (512 GiB) pointing at entry 0's PDPT.
const HIGH_ALIAS: u64 = 0x80_0000_0000;
/// The long-mode guest's #BP handler, IDT and IDTR.
const LM_HANDLER: u64 = ENTRY + 0x200;
const LM_IDT: u64 = ENTRY + 0x300;
const LM_IDTR: u64 = ENTRY + 0x400;

/// Where [`long_mode_guest`]'s instructions are.
struct LongModeGuest {
    image: Vec<u8>,
    /// The loop: `inc ecx` (head), `mov [rbx], cl`, `cmp ecx, 3`, `jne head`.
    head: u64,
    store: u64,
    compare: u64,
    branch: u64,
}

/// 64-bit guest: aliases physical memory at [`HIGH_ALIAS`] by copying PML4[0] into PML4[1],
/// counts ECX to 3 storing CL through the alias (physical 0x2000), executes its own `int3`
/// (its IDT's #BP handler at [`LM_HANDLER`] adds 1 to the byte at 0x2001), then exits with
/// the byte at physical 0x2001.
fn long_mode_guest() -> LongModeGuest {
    fn prologue(a: &mut CodeAssembler) -> Result<(), IcedError> {
        a.mov(rsp, 0x7000u64)?;
        a.lidt(ptr(LM_IDTR))?;
        a.mov(rax, cr3)?;
        a.mov(rdx, qword_ptr(rax))?;
        a.mov(qword_ptr(rax + 8), rdx)?;
        a.mov(cr3, rax)?;
        a.mov(rbx, HIGH_ALIAS + 0x2000)?;
        a.xor(ecx, ecx)
    }
    let head = ENTRY + assemble(64, ENTRY, prologue).len() as u64;
    let mut image = assemble(64, ENTRY, |a| {
        let mut top = a.create_label();
        prologue(a)?;
        a.set_label(&mut top)?;
        a.inc(ecx)?;
        a.mov(byte_ptr(rbx), cl)?;
        a.cmp(ecx, 3)?;
        a.jne(top)?;
        a.int3()?;
        a.mov(al, byte_ptr(0x2001))?;
        a.mov(dx, 0x501u32)?;
        a.out(dx, al)?;
        a.hlt()
    });
    // inc ecx (2), mov [rbx], cl (2), cmp ecx, 3 (3), jne (2).
    let (store, compare, branch) = (head + 2, head + 4, head + 7);
    assert_eq!(
        image[(head - ENTRY) as usize..][..2],
        [0xff, 0xc1],
        "inc ecx"
    );
    assert_eq!(image[(branch - ENTRY) as usize], 0x75, "jne rel8");
    assert_eq!(
        image[(branch + 2 - ENTRY) as usize],
        0xcc,
        "the guest's own int3"
    );
    assert!(image.len() <= (LM_HANDLER - ENTRY) as usize);
    image.resize((LM_HANDLER - ENTRY) as usize, 0x90);
    image.extend(assemble(64, LM_HANDLER, |a| {
        a.add(byte_ptr(0x2001), 1)?;
        a.iretq()
    }));
    image.resize((LM_IDT - ENTRY) as usize, 0);
    // Vectors 0-3; only #BP (3) is present: a 64-bit interrupt gate to the handler in the
    // boot code segment (0x10).
    let mut gate = [0u8; 16];
    gate[..2].copy_from_slice(&(LM_HANDLER as u16).to_le_bytes());
    gate[2..4].copy_from_slice(&0x10u16.to_le_bytes());
    gate[5] = 0x8e;
    gate[6..8].copy_from_slice(&((LM_HANDLER >> 16) as u16).to_le_bytes());
    gate[8..12].copy_from_slice(&((LM_HANDLER >> 32) as u32).to_le_bytes());
    image.extend_from_slice(&[0u8; 48]);
    image.extend_from_slice(&gate);
    image.resize((LM_IDTR - ENTRY) as usize, 0);
    image.extend_from_slice(&63u16.to_le_bytes());
    image.extend_from_slice(&LM_IDT.to_le_bytes());
    LongModeGuest {
        image,
        head,
        store,
        compare,
        branch,
    }
}

/// gdb's `break` plants int3s (five at once, more than the debug registers), stops at each,
/// reads the control registers, and the guest's own int3 still reaches its IDT handler.
#[test]
fn gdb_debugs_a_long_mode_guest_through_its_page_tables_with_int3_breakpoints() {
    require_kvm!();
    let guest = long_mode_guest();
    let (child, socket) = start_vmkit_in("long", &guest.image, "long", &["-S"]);
    let alias_2000 = HIGH_ALIAS + 0x2000;
    let out = gdb(
        &socket,
        &[
            "print/x $pc", // $1
            "info registers cr0 cr3 cr4 efer",
            "print/x $cr0",  // $2
            "print/x $cr4",  // $3
            "print/x $efer", // $4
            &format!("break *{:#x}", guest.head),
            &format!("break *{:#x}", guest.store),
            &format!("break *{:#x}", guest.compare),
            &format!("break *{:#x}", guest.branch),
            &format!("break *{LM_HANDLER:#x}"),
            "continue",
            "print/x $pc",  // $5: head
            "print/x $cr3", // $6: the guest's page-table base ...
            "print/x $rax", // $7: ... as its `mov rax, cr3` read it
            "print/x $rbx", // $8
            "continue",
            "print/x $pc", // $9: store
            "continue",
            "print/x $pc", // $10: compare
            "continue",
            "print/x $pc", // $11: branch
            // The code through the alias (only the guest's page tables map it).
            &format!("x/2xb {:#x}", HIGH_ALIAS + ENTRY),
            "delete 1-4",
            &format!("watch *(unsigned char*){alias_2000:#x}"),
            "continue",
            "print/x *(unsigned char*)0x2000", // $12: the physical byte behind the alias
            "delete 6",
            // A control register that is safe to write, and one value KVM refuses.
            // (gdb casts only 64-bit values to the flag types of cr0, cr4 and efer.)
            "set $cr2 = 0x5a5a000",
            "set $cr0 = (long)0x80000000",
            "maintenance flush register-cache",
            "print/x $cr2", // $13
            "print/x $cr0", // $14: unchanged
            &format!("set var *(unsigned char*){:#x} = 0x21", HIGH_ALIAS + 0x2001),
            "print/x *(unsigned char*)0x2001", // $15
            "continue",    // the guest's own int3 arrives at its handler (breakpoint 5)
            "print/x $pc", // $16
            "delete",
            "continue",
        ],
    );
    let value = |n: usize| printed_hex(&out, n);
    assert_eq!(printed(&out, 1), format!("{ENTRY:#x}"), "{out}");
    // Long mode: CR0.PE|PG, CR4.PAE, EFER.LME|LMA; gdb decodes the flags.
    assert_eq!(value(2) & 0x8000_0001, 0x8000_0001, "CR0.PE and PG");
    assert_ne!(value(3) & 0x20, 0, "CR4.PAE");
    assert_eq!(value(4) & 0x500, 0x500, "EFER.LME and LMA");
    let cr0_line = out
        .lines()
        .find(|l| l.starts_with("cr0"))
        .expect("cr0 line");
    assert!(cr0_line.contains("PG") && cr0_line.contains("PE"), "{out}");
    let efer_line = out.lines().find(|l| l.starts_with("efer")).expect("efer");
    assert!(
        efer_line.contains("LMA") && efer_line.contains("LME"),
        "{out}"
    );
    for (n, addr) in [
        guest.head,
        guest.store,
        guest.compare,
        guest.branch,
        LM_HANDLER,
    ]
    .into_iter()
    .enumerate()
    {
        let hit = format!("Breakpoint {}, {addr:#018x} in ?? ()", n + 1);
        assert!(out.contains(&hit), "{hit}: {out}");
    }
    assert_eq!(value(5), guest.head);
    assert_eq!(value(6), value(7), "CR3 is what the guest read from it");
    assert_eq!(value(6) & !0xfff, 0x9000, "vmkit's long-mode PML4");
    assert_eq!(value(8), alias_2000);
    assert_eq!(value(9), guest.store, "the second int3");
    assert_eq!(value(10), guest.compare, "the third");
    assert_eq!(value(11), guest.branch, "the fourth");
    // mov rsp, imm is 48 c7 c4 / 48 bc: the first byte is REX.W.
    assert!(
        out.contains(&format!("{:#x}:\t0x48\t0x", HIGH_ALIAS + ENTRY)),
        "{out}"
    );
    assert!(
        out.contains("Old value = 1") && out.contains("New value = 2"),
        "{out}"
    );
    assert_eq!(value(12), 2);
    assert_eq!(value(13), 0x5a5a000, "CR2 written");
    assert!(
        out.contains("Could not write registers; remote failure reply 'E16'"),
        "PG without PE refused: {out}"
    );
    assert_eq!(value(14), value(2), "CR0 without PE refused, unchanged");
    assert_eq!(value(15), 0x21);
    assert_eq!(
        value(16),
        LM_HANDLER,
        "the fifth int3, reached by the guest's own"
    );
    // The handler added 1: 0x22 -> status 0x45 = 0105 in gdb's octal.
    assert!(out.contains("exited with code 0105"), "{out}");
    let (code, err) = finish(child, Duration::from_secs(20));
    assert_eq!(code, Some((0x22 << 1) | 1), "{err}");
}

/// A client that continues from a planted int3 without taking it out first (as QMP `cont`
/// does under gdb): vmkit steps over it (original byte, one step, int3 again), so the guest
/// goes one round and stops there again. Reads show the original byte; `z0` puts it back.
#[test]
fn a_vcpu_resumed_at_a_planted_int3_steps_over_it() {
    require_kvm!();
    let guest = long_mode_guest();
    let (vmkit, socket) = start_vmkit_in("stepover", &guest.image, "long", &["-S"]);
    let mut g = UnixStream::connect(&socket).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ask = |body: &str| {
        g.write_all(&packet(body)).unwrap();
        reply(&mut g)
    };
    assert!(ask("?").starts_with('T'));
    let head = guest.head;
    assert_eq!(ask(&format!("Z0,{head:x},1")), "OK");
    assert_eq!(
        ask(&format!("m{head:x},2")),
        "ffc1",
        "inc ecx, not the int3"
    );
    let stop = ask("vCont;c");
    assert!(stop.contains("swbreak"), "{stop}");
    assert_eq!(rcx_of(&ask("g")), 0, "before the first round");
    let stop = ask("vCont;c");
    assert!(stop.contains("swbreak"), "{stop}");
    assert_eq!(rcx_of(&ask("g")), 1, "one round later, at the same int3");
    assert_eq!(ask(&format!("z0,{head:x},1")), "OK");
    assert_eq!(ask("D"), "OK");
    // The loop ran on from inc ecx (the byte is back); the guest's own int3 handler added 1
    // to the byte at 0x2001: status (1 << 1) | 1.
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(3), "{err}");
}

/// Where the 32-bit part of [`protected_mode_guest`] starts.
const PM_CODE: u64 = ENTRY + 0x100;
/// Its GDT (null, flat 32-bit code 0x08, flat data 0x10) and, after it, the GDTR.
const PM_GDT: u64 = ENTRY + 0x200;

/// Real mode at ENTRY switches to 32-bit protected mode itself (lgdt, CR0.PE, far jump to
/// [`PM_CODE`]), then counts EBX to 3 storing BL at 0x2000 and exits with the byte at 0x2001.
/// Returns the image and the loop head.
fn protected_mode_guest() -> (Vec<u8>, u64) {
    let gdtr = PM_GDT + 24;
    let mut image = real_mode_guest(|a| {
        a.cli()?;
        a.lgdt(ptr(gdtr as u32))?;
        a.mov(eax, cr0)?;
        a.or(eax, 1)?;
        a.mov(cr0, eax)?;
        // jmp dword 0x08:PM_CODE
        a.db(&[0x66, 0xea])?;
        a.db(&(PM_CODE as u32).to_le_bytes())?;
        a.db(&[0x08, 0x00])
    });
    fn setup(a: &mut CodeAssembler) -> Result<(), IcedError> {
        a.mov(ax, 0x10u32)?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.xor(ebx, ebx)
    }
    let head = PM_CODE + assemble(32, PM_CODE, setup).len() as u64;
    let code = assemble(32, PM_CODE, |a| {
        let mut top = a.create_label();
        setup(a)?;
        a.set_label(&mut top)?;
        a.inc(ebx)?;
        a.mov(byte_ptr(0x2000), bl)?;
        a.cmp(ebx, 3)?;
        a.jne(top)?;
        a.mov(al, byte_ptr(0x2001))?;
        a.mov(dx, 0x501u32)?;
        a.out(dx, al)?;
        a.hlt()
    });
    assert!(image.len() <= 0x100 && code.len() <= 0x100);
    image.resize(0x100, 0x90);
    image.extend_from_slice(&code);
    image.resize(0x200, 0x90);
    for descriptor in [0u64, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff] {
        image.extend_from_slice(&descriptor.to_le_bytes());
    }
    image.extend_from_slice(&23u16.to_le_bytes());
    image.extend_from_slice(&(PM_GDT as u32).to_le_bytes());
    (image, head)
}

#[test]
fn gdb_debugs_a_32_bit_protected_mode_guest_with_break_and_watch() {
    require_kvm!();
    let (guest, head) = protected_mode_guest();
    let (vmkit, socket) = start_vmkit("prot", &guest, &["-S"]);
    let out = gdb(
        &socket,
        &[
            // gdb's software breakpoint, inserted while the vCPU is still in real mode: a
            // debug register; once the guest is in protected mode (gdb inserts breakpoints
            // again at every resume) an int3.
            &format!("break *{head:#x}"),
            "print/x $cr0", // $1: real mode
            "continue",
            "print/x $pc", // $2
            "print/x $cs", // $3
            "print/x $ds", // $4
            "info registers cr0 cr3 cr4 efer",
            "print/x $cr0", // $5: protected mode, paging off
            "continue",
            "print $rbx", // $6
            "delete",
            "stepi",
            "print/x $pc", // $7: past inc ebx
            &format!("x/8xb {:#x}", PM_GDT + 8),
            "watch *(unsigned char*)0x2000",
            "continue",
            "delete",
            "set var *(unsigned char*)0x2001 = 0x11",
            "continue",
        ],
    );
    assert_eq!(printed_hex(&out, 1) & 1, 0, "real mode: CR0.PE clear");
    assert_eq!(
        printed_hex(&out, 5) & 0x8000_0001,
        1,
        "protected mode: CR0.PE set, PG clear"
    );
    let cr0_line = out
        .lines()
        .find(|l| l.starts_with("cr0"))
        .expect("cr0 line");
    assert!(cr0_line.contains("[ PE ET ]"), "{out}");
    assert!(out.contains(&format!("Breakpoint 1 at {head:#x}")), "{out}");
    assert_eq!(printed(&out, 2), format!("{head:#x}"));
    assert_eq!(printed(&out, 3), "0x8", "the 32-bit code segment");
    assert_eq!(
        printed(&out, 4),
        "0x10",
        "the data segment the guest loaded"
    );
    assert!(
        out.contains(&format!("Breakpoint 1, {head:#018x}")),
        "the int3 hit one round later: {out}"
    );
    assert_eq!(printed(&out, 6), "1");
    assert_eq!(printed(&out, 7), format!("{:#x}", head + 1));
    // The code descriptor as the CPU left it: loading CS set its accessed bit (0x9a -> 0x9b).
    assert!(
        out.contains(&format!(
            "{:#x}:\t0xff\t0xff\t0x00\t0x00\t0x00\t0x9b\t0xcf\t0x00",
            PM_GDT + 8
        )),
        "{out}"
    );
    assert!(
        out.contains("Old value = 1") && out.contains("New value = 2"),
        "{out}"
    );
    // 0x11 -> status 0x23 = 043 in gdb's octal.
    assert!(out.contains("exited with code 043"), "{out}");
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some((0x11 << 1) | 1), "{err}");
}

/// Real mode: points IVT vector 3 at a handler that stores 0x21 at 0x2001, executes its own
/// `int3`, then exits with the byte at 0x2001 (status 0x43 if the handler ran).
fn own_int3_guest() -> Vec<u8> {
    real_mode_guest(|a| {
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(word_ptr(0x0c), 0x1100u32)?; // IVT[3] = 0000:1100
        a.mov(word_ptr(0x0e), 0u32)?;
        a.int3()?;
        a.mov(al, byte_ptr(0x2001))?;
        emit_debug_exit(a)
    })
}

#[test]
fn the_guests_own_int3_goes_to_the_guest_while_gdb_is_attached() {
    require_kvm!();
    let mut guest = own_int3_guest();
    assert!(guest.len() <= 0x100);
    guest.resize(0x100, 0x90);
    // The handler at 0x1100: mov byte [0x2001], 0x21; iret.
    guest.extend_from_slice(&[0xc6, 0x06, 0x01, 0x20, 0x21, 0xcf]);
    let (vmkit, socket) = start_vmkit("int3", &guest, &["-S"]);
    // A breakpoint in the handler: gdb sees the guest's own int3 arrive there. In real mode
    // gdb's `break` is a debug register (an int3 there would go to the guest's IVT).
    let out = gdb(
        &socket,
        &[
            "break *0x1100",
            "continue",
            "print/x $pc",
            "delete",
            "continue",
        ],
    );
    assert!(out.contains("Breakpoint 1, 0x0000000000001100"), "{out}");
    assert_eq!(printed(&out, 1), "0x1100", "{out}");
    assert!(out.contains("exited with code 0103"), "{out}");
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(0x43), "{err}");
}

#[test]
fn gdb_lists_every_vcpu_as_a_thread() {
    require_kvm!();
    let (vmkit, socket) = start_vmkit("smp", &counting_guest(), &["-S", "-smp", "2"]);
    let out = gdb(
        &socket,
        &[
            "info threads",
            "thread 2",
            "print/x $pc",
            "thread 1",
            "print/x $pc",
            "kill",
        ],
    );
    assert!(
        out.contains("Thread 1.1") && out.contains("Thread 1.2"),
        "{out}"
    );
    assert!(out.contains("Switching to thread 2"), "{out}");
    assert_eq!(printed(&out, 2), format!("{ENTRY:#x}"), "{out}");
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(0), "kill ends vmkit: {err}");
}

#[test]
fn detach_lets_the_guest_run_on() {
    require_kvm!();
    let (vmkit, socket) = start_vmkit("detach", &counting_guest(), &["-S"]);
    let out = gdb(&socket, &["print/x $pc", "detach"]);
    assert!(out.contains("[Inferior 1 (process 1) detached]"), "{out}");
    // The guest ran from prelaunch to its end: 0x2001 is 0, status 1.
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
}

/// One remote-protocol packet.
fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

/// Expands the protocol's run-length encoding (`X*N`: N - 29 more copies of X).
fn rle_decode(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '*' {
            let count = chars.next().map_or(0, |n| n as usize - 29);
            let last = out.chars().last().unwrap_or('0');
            out.extend(std::iter::repeat_n(last, count));
        } else {
            out.push(c);
        }
    }
    out
}

/// RCX from a `g` reply (the third 64-bit register, little-endian hex).
fn rcx_of(regs: &str) -> u64 {
    let regs = rle_decode(regs);
    u64::from_str_radix(&regs[32..48], 16).unwrap().swap_bytes()
}

/// Reads until a whole `$...#xx` reply arrives; returns its body.
fn reply(stream: &mut UnixStream) -> String {
    let mut text = Vec::new();
    let mut byte = [0u8];
    loop {
        let n = stream.read(&mut byte).expect("read a reply");
        assert_eq!(
            n,
            1,
            "the stub closed the connection; got {:?}",
            String::from_utf8_lossy(&text)
        );
        text.push(byte[0]);
        if let Some(hash) = text.iter().position(|&b| b == b'#') {
            if text.len() == hash + 3 {
                let start = text.iter().position(|&b| b == b'$').unwrap_or(0);
                let _ = stream.write_all(b"+");
                return String::from_utf8_lossy(&text[start + 1..hash]).into_owned();
            }
        }
    }
}

#[test]
fn ctrl_c_stops_a_running_guest_and_kill_ends_vmkit() {
    require_kvm!();
    let (vmkit, socket) = start_vmkit("ctrlc", &spinning_guest(), &[]);
    let mut s = UnixStream::connect(&socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&packet("?")).unwrap();
    assert!(reply(&mut s).starts_with('T'), "attach stops the guest");
    s.write_all(&packet("vCont;c")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&[0x03]).unwrap();
    let stop = reply(&mut s);
    assert!(stop.starts_with("T02"), "SIGINT stop: {stop}");
    // RCX (the third register in `g`) moved while the guest ran.
    s.write_all(&packet("g")).unwrap();
    let regs = reply(&mut s);
    assert_ne!(rcx_of(&regs), 0, "the guest ran before Ctrl-C: {regs}");
    s.write_all(&packet("k")).unwrap();
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
}

/// Connects, stops the guest (`?`) and returns RCX.
fn attach_and_read_rcx(socket: &Path) -> (UnixStream, u64) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&packet("?")).unwrap();
    let stop = reply(&mut s);
    assert!(stop.starts_with('T'), "attach stops the guest: {stop}");
    s.write_all(&packet("g")).unwrap();
    let regs = reply(&mut s);
    (s, rcx_of(&regs))
}

#[test]
fn garbage_a_second_client_and_a_vanishing_client_leave_the_guest_running() {
    require_kvm!();
    let (vmkit, socket) = start_vmkit("bad", &spinning_guest(), &[]);
    // Garbage ends that client's session (gdbstub cannot parse it); the stub stays up.
    let mut garbage = UnixStream::connect(&socket).unwrap();
    garbage
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    garbage.write_all(b"hello$zz#00\x7f\xff").unwrap();
    let mut buf = [0u8; 64];
    while matches!(garbage.read(&mut buf), Ok(n) if n > 0) {}
    drop(garbage);
    // A client stops the guest; a second client meanwhile is refused.
    let (mut first, rcx_before) = attach_and_read_rcx(&socket);
    let mut second = UnixStream::connect(&socket).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        second.read(&mut buf).unwrap_or(0),
        0,
        "the second client is closed"
    );
    // The first still works: an unknown packet gets the empty reply.
    first.write_all(&packet("qNoSuchPacket")).unwrap();
    assert_eq!(reply(&mut first), "");
    // It vanishes without detaching: the guest runs on.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let (mut last, rcx_after) = attach_and_read_rcx(&socket);
    assert_ne!(rcx_before, rcx_after, "the guest ran between the clients");
    last.write_all(&packet("k")).unwrap();
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn gdb_connects_over_tcp_host_port() {
    // -gdb tcp:HOST:PORT on a free port (-s's 1234 may be taken on a shared machine; the
    // command-line tests check that -s means tcp::1234).
    require_kvm!();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let guest = guest_file("tcp", &counting_guest());
    let vmkit = vmkit()
        .arg("-flat")
        .arg(&guest)
        .args(["-device", "isa-debug-exit", "-serial", "none", "-S", "-gdb"])
        .arg(format!("tcp:127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    let start = Instant::now();
    // Wait for the listener without becoming its client: /proc/net/tcp lists it.
    let needle = format!(":{port:04X} 00000000:0000 0A");
    while !std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .contains(&needle)
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut command = Command::new(gdb_binary());
    let output = command
        .args(["-batch", "-nx", "-ex"])
        .arg(format!("target remote 127.0.0.1:{port}"))
        .args(["-ex", "print/x $pc", "-ex", "continue"])
        .stdin(Stdio::null())
        .output()
        .expect("run gdb");
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{out}{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(printed(&out, 1), format!("{ENTRY:#x}"));
    assert!(out.contains("exited with code 01"), "{out}");
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
}

/// A QMP client: greeting and capabilities done.
fn qmp_connect(path: &Path) -> (std::io::BufReader<UnixStream>, UnixStream) {
    use std::io::BufRead;
    let start = Instant::now();
    let stream = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(20), "QMP: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("QMP"), "{line}");
    let mut writer = stream;
    let _ = qmp(&mut reader, &mut writer, "qmp_capabilities");
    (reader, writer)
}

/// Runs a QMP command, skipping events; returns the reply line.
fn qmp(
    reader: &mut std::io::BufReader<UnixStream>,
    writer: &mut UnixStream,
    command: &str,
) -> String {
    use std::io::BufRead;
    writer
        .write_all(format!("{{\"execute\": \"{command}\"}}\n").as_bytes())
        .unwrap();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "QMP closed");
        if !line.contains("\"event\"") {
            return line;
        }
    }
}

#[test]
fn qmp_reports_debug_while_gdb_holds_the_guest_and_cont_resumes_it() {
    require_kvm!();
    let qmp_socket = socket_path("qmp-status");
    let (vmkit, socket) = start_vmkit(
        "qmp",
        &counting_guest(),
        &[
            "-S",
            "-qmp",
            &format!("unix:{},server=on,wait=off", qmp_socket.display()),
        ],
    );
    let (mut reader, mut writer) = qmp_connect(&qmp_socket);
    let status =
        |r: &mut std::io::BufReader<UnixStream>, w: &mut UnixStream| qmp(r, w, "query-status");
    assert!(status(&mut reader, &mut writer).contains("\"status\": \"prelaunch\""));
    let mut g = UnixStream::connect(&socket).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    g.write_all(&packet("?")).unwrap();
    assert!(reply(&mut g).starts_with('T'));
    g.write_all(&packet(&format!("Z1,{LOOP:x},1"))).unwrap();
    assert_eq!(reply(&mut g), "OK");
    g.write_all(&packet("vCont;c")).unwrap();
    let stop = reply(&mut g);
    assert!(stop.contains("hwbreak"), "{stop}");
    let held = status(&mut reader, &mut writer);
    assert!(
        held.contains("\"status\": \"debug\"") && held.contains("\"running\": false"),
        "{held}"
    );
    g.write_all(&packet("g")).unwrap();
    let bx_of = |regs: &str| {
        u64::from_str_radix(&rle_decode(regs)[16..32], 16)
            .unwrap()
            .swap_bytes()
    };
    assert_eq!(bx_of(&reply(&mut g)), 0);
    // QMP cont resumes the guest under gdb's nose (gdb still thinks it stopped, as with
    // QEMU); the armed breakpoint stops it again one round later.
    assert!(qmp(&mut reader, &mut writer, "cont").contains("return"));
    let start = Instant::now();
    while !status(&mut reader, &mut writer).contains("\"status\": \"debug\"") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the breakpoint did not stop it again"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    g.write_all(&packet("g")).unwrap();
    assert_eq!(bx_of(&reply(&mut g)), 1, "the guest ran one round");
    g.write_all(&packet(&format!("z1,{LOOP:x},1"))).unwrap();
    assert_eq!(reply(&mut g), "OK");
    g.write_all(&packet("D")).unwrap();
    assert_eq!(reply(&mut g), "OK");
    let (code, err) = finish(vmkit, Duration::from_secs(20));
    assert_eq!(code, Some(1), "{err}");
}

/// What the test needs from a vmlinux: its 64-bit entry (physical, as vmkit enters it) with
/// the bytes there, the virtual address of its "Linux version " banner, and that of
/// `x86_64_start_kernel`.
struct Vmlinux {
    entry_phys: u64,
    entry_bytes: Vec<u8>,
    banner_virt: u64,
    start_kernel_virt: u64,
    /// The first function `x86_64_start_kernel` calls.
    first_callee_virt: u64,
}

/// The target of the first near call in the code at `virt` (`code` holds its bytes).
fn first_call_target(code: &[u8], virt: u64) -> u64 {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    let mut decoder = Decoder::with_ip(64, code, virt, DecoderOptions::NONE);
    decoder
        .iter()
        .take(64)
        .find(|i| i.mnemonic() == Mnemonic::Call && i.near_branch_target() != 0)
        .map(|i| i.near_branch_target())
        .expect("a call in x86_64_start_kernel")
}

/// `x86_64_start_kernel`'s virtual address, without a symbol table (Debian's System.map is a
/// placeholder, its bzImage's vmlinux is stripped): `secondary_startup_64`, shortly after
/// the entry, leaves the identity map with `movq initial_code(%rip), %rax; pushq $__KERNEL_CS;
/// pushq %rax; lretq`, and `initial_code` holds `x86_64_start_kernel`. `virt_to_file` maps a
/// virtual address to its offset in the ELF.
fn start_kernel_from_initial_code(
    elf: &[u8],
    entry_off: usize,
    entry_virt: u64,
    virt_to_file: impl Fn(u64) -> Option<usize>,
) -> u64 {
    let code = &elf[entry_off..entry_off + 0x1000];
    let tail = [0x6a, 0x10, 0x50, 0x48, 0xcb];
    let at = (0..code.len() - 12)
        .find(|&i| code[i..i + 3] == [0x48, 0x8b, 0x05] && code[i + 7..i + 12] == tail)
        .expect("secondary_startup_64's lretq to initial_code");
    let rel = i32::from_le_bytes(code[at + 3..at + 7].try_into().unwrap());
    let next_insn = entry_virt + at as u64 + 7;
    let initial_code = next_insn.wrapping_add_signed(i64::from(rel));
    let off = virt_to_file(initial_code).expect("initial_code in a segment");
    u64_at(elf, off)
}

fn u64_at(elf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(elf[at..at + 8].try_into().unwrap())
}

fn inspect_vmlinux(bzimage: &Path) -> Vmlinux {
    let image = std::fs::read(bzimage).unwrap();
    let elf = vmkit_kernel::decompress_payload(&image, 512 << 20).expect("decompress the kernel");
    let entry = u64_at(&elf, 0x18);
    let phoff = u64_at(&elf, 0x20) as usize;
    let phnum = usize::from(u16::from_le_bytes([elf[0x38], elf[0x39]]));
    // PT_LOAD segments: (file offset, vaddr, paddr, size in file).
    let loads: Vec<(u64, u64, u64, u64)> = (0..phnum)
        .map(|i| phoff + i * 56)
        .filter(|&ph| u32::from_le_bytes(elf[ph..ph + 4].try_into().unwrap()) == 1)
        .map(|ph| {
            (
                u64_at(&elf, ph + 8),
                u64_at(&elf, ph + 16),
                u64_at(&elf, ph + 24),
                u64_at(&elf, ph + 32),
            )
        })
        .collect();
    // e_entry is physical or virtual depending on how the kernel was linked.
    let (off, vaddr, paddr, _) = *loads
        .iter()
        .find(|(_, v, p, size)| (*v..v + size).contains(&entry) || (*p..p + size).contains(&entry))
        .expect("a segment holds the entry");
    let base = if (paddr..).contains(&entry) && entry < vaddr {
        paddr
    } else {
        vaddr
    };
    let entry_off = entry - base + off;
    let entry_phys = paddr + (entry - base);
    let needle = b"Linux version ";
    let banner_off = elf
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("a banner in the kernel") as u64;
    let (off, vaddr, _, _) = *loads
        .iter()
        .find(|(o, _, _, size)| (*o..o + size).contains(&banner_off))
        .expect("a segment holds the banner");
    let virt_to_file = |virt: u64| {
        loads
            .iter()
            .find(|(_, v, _, size)| (*v..v + size).contains(&virt))
            .map(|(o, v, _, _)| (o + (virt - v)) as usize)
    };
    let entry_virt = loads[0].1 + (entry_off - loads[0].0);
    let start_kernel_virt =
        start_kernel_from_initial_code(&elf, entry_off as usize, entry_virt, virt_to_file);
    let start_kernel_off = virt_to_file(start_kernel_virt).expect("x86_64_start_kernel's code");
    let first_callee_virt = first_call_target(
        &elf[start_kernel_off..start_kernel_off + 0x200],
        start_kernel_virt,
    );
    Vmlinux {
        entry_phys,
        entry_bytes: elf[entry_off as usize..entry_off as usize + 8].to_vec(),
        banner_virt: vaddr + (banner_off - off),
        start_kernel_virt,
        first_callee_virt,
    }
}

/// Debian's kernel (`VMKIT_TEST_KERNEL`, as tests/linux.rs): gdb at its 64-bit entry (host
/// decompression enters there), a hardware breakpoint hit at `x86_64_start_kernel` (on the
/// kernel's page tables, RDI = the zero page), an int3 hit in the first function it calls,
/// then its banner read from the kernel's own virtual address once it has printed it.
#[test]
fn gdb_on_debians_kernel_entry_and_its_banner_at_a_kernel_virtual_address() {
    require_kvm!();
    let kernel = match std::env::var_os("VMKIT_TEST_KERNEL") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ if std::env::var("VMKIT_REQUIRE_KVM").as_deref() == Ok("1") => {
            panic!("VMKIT_TEST_KERNEL is not set (scripts/test-all.sh sets it)")
        }
        _ => {
            println!("SKIPPED gdb kernel test: VMKIT_TEST_KERNEL is not set");
            return;
        }
    };
    let vmlinux = inspect_vmlinux(&kernel);
    let socket = socket_path("kernel");
    let serial = guest_file("kernel-serial", b"");
    let _ = std::fs::remove_file(&socket);
    let mut child = vmkit()
        .arg("-kernel")
        .arg(&kernel)
        .args([
            "-kernel-decompress",
            "host",
            "-m",
            "256M",
            "-cpu",
            "host,-cx16",
        ])
        .args(["-append", "console=ttyS0 earlyprintk=serial,ttyS0 nokaslr"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args(["-S", "-gdb"])
        .arg(format!("unix:{},server", socket.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(120), "no gdb socket");
        assert!(child.try_wait().unwrap().is_none(), "vmkit ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (start_kernel, callee) = (vmlinux.start_kernel_virt, vmlinux.first_callee_virt);
    println!("x86_64_start_kernel at {start_kernel:#x}, its first callee at {callee:#x}");
    let out = gdb(
        &socket,
        &[
            "print/x $pc", // $1
            "print/x $cs", // $2
            "x/8xb $pc",
            "info registers cr0 cr3 cr4 efer",
            "print/x $cr3", // $3: vmkit's boot page tables
            // A kernel virtual address nothing maps yet: a debug register (linear).
            &format!("hbreak *{start_kernel:#x}"),
            "continue",
            "print/x $pc",  // $4
            "print/x $rdi", // $5: x86_64_start_kernel(real_mode_data)
            "print/x $cr3", // $6: the kernel's early_top_pgt
            "info registers cr0 cr3 cr4 efer",
            "x/3i $pc",
            "delete",
            // Kernel text is mapped now: `break` plants an int3 in it.
            &format!("break *{callee:#x}"),
            "continue",
            "print/x $pc", // $7
            "delete",
            "detach",
        ],
    );
    assert_eq!(
        printed(&out, 1),
        format!("{:#x}", vmlinux.entry_phys),
        "{out}"
    );
    assert_eq!(printed(&out, 2), "0x10", "64-bit code segment");
    let bytes: Vec<String> = vmlinux
        .entry_bytes
        .iter()
        .map(|b| format!("{b:#04x}"))
        .collect();
    assert!(
        out.contains(&bytes.join("\t")),
        "startup_64's bytes {bytes:?}:\n{out}"
    );
    // The breakpoint hit at x86_64_start_kernel, called with the zero page (vmkit's 0x7000)
    // on the kernel's own page tables (early_top_pgt, inside its image from 16 MiB), with
    // the kernel's own CR4 (PGE) and EFER (SCE, NXE).
    assert!(
        out.contains(&format!("Breakpoint 1, {start_kernel:#018x} in ?? ()")),
        "{out}"
    );
    assert_eq!(printed_hex(&out, 4), start_kernel);
    assert_eq!(printed_hex(&out, 5), 0x7000, "real_mode_data");
    let (boot_cr3, kernel_cr3) = (printed_hex(&out, 3), printed_hex(&out, 6));
    assert_ne!(boot_cr3, kernel_cr3, "{out}");
    assert!(
        (vmlinux.entry_phys..vmlinux.entry_phys + (256 << 20)).contains(&kernel_cr3),
        "{kernel_cr3:#x}"
    );
    let efer = out.lines().filter(|l| l.starts_with("efer")).nth(1);
    assert!(
        efer.is_some_and(|l| l.contains("NXE") && l.contains("LMA")),
        "{out}"
    );
    // The kernel runs; once it has printed its banner it runs on its own page tables.
    let start = Instant::now();
    while !std::fs::read_to_string(&serial)
        .unwrap_or_default()
        .contains("Linux version ")
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no banner on the serial port"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut g = UnixStream::connect(&socket).unwrap();
    g.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    g.write_all(&packet("?")).unwrap();
    assert!(reply(&mut g).starts_with('T'));
    g.write_all(&packet(&format!("m{:x},20", vmlinux.banner_virt)))
        .unwrap();
    let hex = reply(&mut g);
    let text: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(b'?'))
        .collect();
    let text = String::from_utf8_lossy(&text).into_owned();
    println!("banner at {:#x}: {text:?}", vmlinux.banner_virt);
    assert!(text.starts_with("Linux version "), "{hex}");
    g.write_all(&packet("k")).unwrap();
    let (code, err) = finish(child, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{err}");
}
