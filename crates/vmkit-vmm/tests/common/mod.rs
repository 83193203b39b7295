//! Shared pieces of the `vmkit` binary's end-to-end tests: tiny guests written here with an
//! assembler, run through the real binary on real KVM.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use vmkit_testutil::iced_x86::code_asm::*;
pub use vmkit_testutil::{assemble, require_kvm};

/// The legacy virtio driver kit (multi-descriptor chains, several requests).
pub mod migrate;
pub mod virtio_legacy;

/// Load address and entry of every real-mode test guest.
pub const ENTRY: u64 = 0x1000;

/// Writes `bytes` to a fresh file under the target directory and returns its path.
pub fn guest_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmkit-guests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{}.bin", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Assembles a 16-bit guest at [`ENTRY`].
pub fn real_mode_guest(build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    assemble(16, ENTRY, build)
}

/// Emits: print the byte in AL on COM1 (polling LSR.THRE); clobbers DX and AH.
pub fn emit_putc(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut wait = a.create_label();
    a.mov(ah, al)?;
    a.mov(dx, 0x3fdu32)?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.mov(al, ah)?;
    a.mov(dx, 0x3f8u32)?;
    a.out(dx, al)
}

/// Emits: the 8259A initialisation a BIOS performs (ICW1-ICW4 on both chips, vector bases
/// 0x08 and 0x70), then the master mask `master_mask` and the slave fully masked.
pub fn emit_pic_init(a: &mut CodeAssembler, master_mask: u8) -> Result<(), IcedError> {
    for (port, value) in [
        (0x20u32, 0x11u32),
        (0x21, 0x08),
        (0x21, 0x04),
        (0x21, 0x01),
        (0xa0, 0x11),
        (0xa1, 0x70),
        (0xa1, 0x02),
        (0xa1, 0x01),
        (0x21, u32::from(master_mask)),
        (0xa1, 0xff),
    ] {
        a.mov(al, value)?;
        a.out(port, al)?;
    }
    Ok(())
}

/// Emits: exit through isa-debug-exit at 0x501 with the byte in AL (status (AL << 1) | 1).
pub fn emit_debug_exit(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut halt = a.create_label();
    a.mov(dx, 0x501u32)?;
    a.out(dx, al)?;
    a.set_label(&mut halt)?;
    a.hlt()?;
    a.jmp(halt)
}

/// The `vmkit` binary, with its seccomp sandbox (on by default) in trap mode: a forbidden
/// syscall is reported by name (and exit status 159) instead of killing vmkit silently.
pub fn vmkit() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vmkit"));
    command.env("VMKIT_SANDBOX_ACTION", "trap");
    command.stdin(Stdio::null());
    command
}

/// Runs `command` with `input` on stdin, failing the test if it takes longer than `limit`.
pub fn run_with_input(mut command: Command, input: &[u8], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Keep stdin open until vmkit exits: EOF is not an instruction to stop.
        std::thread::sleep(Duration::from_secs(60));
    });
    drop(writer);
    let output = wait_with_limit(child, limit);
    (output, start.elapsed())
}

/// Runs `command` (stdin closed), failing the test if it takes longer than `limit`.
pub fn run(mut command: Command, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vmkit");
    let output = wait_with_limit(child, limit);
    (output, start.elapsed())
}

fn wait_with_limit(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for vmkit"),
        Err(_) => {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("vmkit did not finish within {limit:?}");
        }
    }
}

/// stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The legacy virtio driver pieces the virtio-rng, virtio-console and virtio-net tests use.
pub mod legacy_driver;

/// CONFIG_ADDRESS (0xCF8) for `reg` of PCI function `slot`.0 on bus 0.
pub fn config_address(slot: u32, reg: u32) -> u32 {
    0x8000_0000 | (slot << 11) | reg
}

/// Emits, for a transitional virtio function at `slot`.0 with its legacy I/O BAR to go at
/// `io_base`: print 'V' if it is 1af4:`device`, place the BAR, turn on I/O and bus
/// mastering, and set the status to ACKNOWLEDGE | DRIVER.
pub fn emit_legacy_virtio_probe(
    a: &mut CodeAssembler,
    slot: u32,
    device: u32,
    io_base: u32,
) -> Result<(), IcedError> {
    let mut skip_v = a.create_label();
    a.mov(eax, config_address(slot, 0))?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(dx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.cmp(eax, (device << 16) | 0x1af4)?;
    a.jne(skip_v)?;
    a.mov(al, b'V' as u32)?;
    emit_putc(a)?;
    a.set_label(&mut skip_v)?;
    emit_config_write32(a, config_address(slot, 0x10), io_base)?;
    emit_config_write32(a, config_address(slot, 0x04), 0x5)?;
    a.mov(dx, io_base + 0x12)?;
    a.mov(al, 3u32)?;
    a.out(dx, al)
}

/// Emits: a 32-bit PCI configuration write through mechanism #1 (CONFIG_ADDRESS =
/// `address`, then `value` to CONFIG_DATA).
pub fn emit_config_write32(
    a: &mut CodeAssembler,
    address: u32,
    value: u32,
) -> Result<(), IcedError> {
    a.mov(eax, address)?;
    a.mov(dx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(eax, value)?;
    a.mov(dx, 0xcfcu32)?;
    a.out(dx, eax)
}

/// Waits for a spawned `child`, failing the test (and killing it) after `limit`.
pub fn wait_child(child: std::process::Child, limit: Duration) -> Output {
    wait_with_limit(child, limit)
}
