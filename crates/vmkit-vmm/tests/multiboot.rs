//! Multiboot kernels through `-kernel`, as QEMU loads kvm-unit-tests: tiny 32-bit guests
//! written here (an ELF32 with one PT_LOAD, and an a.out-kludge image) check EAX, read the
//! multiboot information (command line, module 0 with its command line, the memory map,
//! mem_upper), talk to `pc-testdev` and exit through isa-debug-exit with a code the test
//! checks. Malformed kernels give errors naming the file and the field.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const LOAD: u32 = 0x10_0000;
const HEADER_MAGIC: u32 = 0x1bad_b002;
const AOUT_KLUDGE: u32 = 1 << 16;
/// isa-debug-exit value when a check fails: status (0x7e << 1) | 1 = 253.
const FAIL: u32 = 0x7e;

fn header(flags: u32, fields: &[u32]) -> Vec<u8> {
    let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
    [HEADER_MAGIC, flags, checksum]
        .iter()
        .chain(fields)
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// Emits: print the NUL-terminated string at EDI on COM1 (clobbers EAX, EDX, EDI).
fn emit_puts(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut lp = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut lp)?;
    a.mov(al, byte_ptr(edi))?;
    a.test(al, al)?;
    a.jz(done)?;
    emit_putc(a)?;
    a.inc(edi)?;
    a.jmp(lp)?;
    a.set_label(&mut done)?;
    a.nop()
}

fn emit_newline(a: &mut CodeAssembler) -> Result<(), IcedError> {
    a.mov(al, b'\n' as u32)?;
    emit_putc(a)
}

/// The guest, assembled at `base`: checks EAX = 0x2BADB002; prints the command line, module
/// 0's command line and bytes, and one digit per memory map entry (its type), each followed
/// by a newline; writes mem_upper to pc-testdev's 0xE0 and reads it back through 0xE8; writes
/// and reads the window at 0xFF000000; exits with mem_upper >> 10 (MiB above 1 MiB).
fn guest_code(base: u32) -> Vec<u8> {
    assemble(32, u64::from(base), |a| {
        let mut fail = a.create_label();
        let mut module_loop = a.create_label();
        let mut module_done = a.create_label();
        let mut mmap_loop = a.create_label();
        let mut mmap_done = a.create_label();
        let mut halt = a.create_label();
        a.cmp(eax, 0x2bad_b002)?;
        a.jne(fail)?;
        a.mov(esi, ebx)?;
        // flags: cmdline (2), mods (3), mmap (6) must be set.
        a.mov(eax, dword_ptr(esi))?;
        a.and(eax, 0x4c)?;
        a.cmp(eax, 0x4c)?;
        a.jne(fail)?;
        a.mov(edi, dword_ptr(esi + 16))?;
        emit_puts(a)?;
        emit_newline(a)?;
        // Module 0: its command line, then its bytes.
        a.cmp(dword_ptr(esi + 20), 1)?;
        a.jb(fail)?;
        a.mov(ebp, dword_ptr(esi + 24))?;
        a.mov(edi, dword_ptr(ebp + 8))?;
        emit_puts(a)?;
        emit_newline(a)?;
        a.mov(edi, dword_ptr(ebp))?;
        a.mov(ecx, dword_ptr(ebp + 4))?;
        a.set_label(&mut module_loop)?;
        a.cmp(edi, ecx)?;
        a.jae(module_done)?;
        a.mov(al, byte_ptr(edi))?;
        emit_putc(a)?;
        a.inc(edi)?;
        a.jmp(module_loop)?;
        a.set_label(&mut module_done)?;
        emit_newline(a)?;
        // The memory map: one digit per entry, its type.
        a.mov(edi, dword_ptr(esi + 48))?;
        a.mov(ecx, dword_ptr(esi + 44))?;
        a.add(ecx, edi)?;
        a.set_label(&mut mmap_loop)?;
        a.cmp(edi, ecx)?;
        a.jae(mmap_done)?;
        a.mov(al, byte_ptr(edi + 20))?;
        a.add(al, b'0' as u32)?;
        emit_putc(a)?;
        a.add(edi, dword_ptr(edi))?;
        a.add(edi, 4)?;
        a.jmp(mmap_loop)?;
        a.set_label(&mut mmap_done)?;
        emit_newline(a)?;
        // pc-testdev: the scratch register through both views, and the memory window.
        a.mov(eax, dword_ptr(esi + 8))?;
        a.out(0xe0, eax)?;
        a.xor(eax, eax)?;
        a.in_(eax, 0xe8)?;
        a.cmp(eax, dword_ptr(esi + 8))?;
        a.jne(fail)?;
        a.mov(ebp, 0xff00_0000u32)?;
        a.mov(dword_ptr(ebp + 0x100), 0x1234_5678)?;
        a.cmp(word_ptr(ebp + 0x102), 0x1234)?;
        a.jne(fail)?;
        // Exit with mem_upper >> 10.
        a.mov(eax, dword_ptr(esi + 8))?;
        a.shr(eax, 10)?;
        a.out(0xf4, eax)?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)?;
        a.set_label(&mut fail)?;
        a.mov(eax, FAIL)?;
        a.out(0xf4, eax)?;
        a.hlt()
    })
}

/// An ELF32 i386 executable with one PT_LOAD at `paddr`: the multiboot header (flags 0),
/// then the guest code at its entry; `bss` zero bytes after it.
fn elf32_kernel(paddr: u32, bss: u32) -> Vec<u8> {
    let mut segment = header(0, &[]);
    segment.extend(guest_code(paddr + 12));
    let offset = 0x60u32;
    let mut elf = vec![0u8; offset as usize];
    elf[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..28].copy_from_slice(&(paddr + 12).to_le_bytes()); // e_entry
    elf[28..32].copy_from_slice(&52u32.to_le_bytes()); // e_phoff
    elf[40..42].copy_from_slice(&52u16.to_le_bytes()); // e_ehsize
    elf[42..44].copy_from_slice(&32u16.to_le_bytes()); // e_phentsize
    elf[44..46].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = 52;
    let words = [
        1, // PT_LOAD
        offset,
        paddr,
        paddr,
        segment.len() as u32,
        segment.len() as u32 + bss,
        7,
        0x1000,
    ];
    for (i, word) in words.iter().enumerate() {
        elf[ph + 4 * i..ph + 4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    elf.extend(segment);
    elf
}

/// A raw a.out-kludge image loaded at [`LOAD`]: header with the address fields, code after.
fn aout_kernel() -> Vec<u8> {
    let code = guest_code(LOAD + 32);
    let end = LOAD + 32 + code.len() as u32;
    let mut image = header(AOUT_KLUDGE, &[LOAD, LOAD, 0, end + 0x1000, LOAD + 32]);
    image.extend(code);
    image
}

fn run_kernel(kernel: &Path, module: &Path, memory_mib: u32) -> std::process::Output {
    let mut command = vmkit();
    command
        .arg("-kernel")
        .arg(kernel)
        .arg("-append")
        .arg("hello=1 x")
        .arg("-initrd")
        .arg(format!(
            "{} NR_CPUS=1,{}",
            module.display(),
            module.display()
        ))
        .args(["-device", "pc-testdev"])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x4"])
        .args(["-m", &memory_mib.to_string()]);
    run(command, Duration::from_secs(30)).0
}

fn check_boot(name: &str, image: &[u8]) {
    let kernel = guest_file(name, image);
    let module = guest_file(&format!("{name}-env"), b"NR_CPUS=1");
    let output = run_kernel(&kernel, &module, 64);
    // mem_upper for -m 64 is 63 MiB: exit status (63 << 1) | 1.
    assert_eq!(
        output.status.code(),
        Some(127),
        "stdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    // The kernel's command line is "PATH APPEND" and a module's is its whole -initrd item, as
    // QEMU passes them; vmkit's e820 for 64 MiB: RAM, EBDA, BIOS, RAM, KVM's pages.
    assert_eq!(
        stdout(&output),
        format!(
            "{} hello=1 x\n{} NR_CPUS=1\nNR_CPUS=1\n12212\n",
            kernel.display(),
            module.display()
        )
    );
}

#[test]
fn an_elf32_multiboot_kernel_reads_its_info_modules_and_memory_map() {
    require_kvm!();
    check_boot("mb-elf", &elf32_kernel(LOAD, 0x2000));
}

#[test]
fn an_aout_kludge_multiboot_kernel_boots_the_same() {
    require_kvm!();
    check_boot("mb-aout", &aout_kernel());
}

#[test]
fn a_bad_checksum_names_the_file_and_the_field() {
    let mut image = elf32_kernel(LOAD, 0);
    image[0x60 + 8] ^= 0x10;
    let kernel = guest_file("mb-checksum", &image);
    let module = guest_file("mb-checksum-env", b"x");
    let output = run_kernel(&kernel, &module, 64);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains(&kernel.display().to_string()), "{err}");
    assert!(
        err.contains("checksum") && err.contains("offset 0x60"),
        "{err}"
    );
}

#[test]
fn a_segment_beyond_guest_ram_names_the_segment_and_the_limit() {
    require_kvm!();
    // 16 MiB of bss from 1 MiB does not fit in 16 MiB of RAM.
    let kernel = guest_file("mb-big", &elf32_kernel(LOAD, 16 << 20));
    let module = guest_file("mb-big-env", b"x");
    let output = run_kernel(&kernel, &module, 16);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains(&kernel.display().to_string()), "{err}");
    assert!(
        err.contains("ELF segment 0")
            && err.contains("beyond guest RAM")
            && err.contains("0x1000000"),
        "{err}"
    );
}

#[test]
fn a_segment_over_the_bios_area_is_refused() {
    require_kvm!();
    let kernel = guest_file("mb-bios", &elf32_kernel(0xf_0000, 0));
    let module = guest_file("mb-bios-env", b"x");
    let output = run_kernel(&kernel, &module, 64);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("BIOS area"), "{err}");
}
