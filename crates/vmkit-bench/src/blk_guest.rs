//! The virtio-blk benchmark guest: a multiboot ELF32 kernel (`-kernel`, loaded the same way
//! by vmkit and by QEMU) holding a small legacy virtio-blk driver whose hot loop runs at
//! CPL3.
//!
//! At CPL0 (code this host's KVM interprets, so it is kept to a few instructions) the
//! guest loads its own GDT (flat 4 GiB code and data at DPL0 and at DPL3), sets EFLAGS to
//! IOPL 3 with interrupts off and leaves for CPL3 with `sysexit` (KVM's instruction
//! emulator, which runs CPL0 code on this host, implements neither a protected-mode `iret`
//! nor an outer-privilege `retf`). Paging stays off: the DPL3 segments give CPL3 all of
//! RAM (on this host setting CR0.PG with 32-bit paging shut the guest down at once), so
//! the ring and buffers are user-accessible without page tables. Everything else runs at
//! CPL3, natively: it scans PCI bus 0 through 0xcf8/0xcfc for 1af4:1001 (the
//! transitional virtio-blk function), uses its legacy I/O BAR 0 (assigning [`IO_BASE`] when
//! no firmware did, as with vmkit's direct multiboot boot), enables I/O and bus mastering,
//! resets the device, negotiates no features, places queue 0 by page frame and sets
//! `VRING_AVAIL_F_NO_INTERRUPT` (the driver polls the used ring; no interrupt is taken).
//!
//! Then it writes the start marker `S\n` to COM1, runs the workload and writes `E\n`; the
//! host times the run between the two markers. Finally `out 0x501, 0x10` (isa-debug-exit:
//! process status 33). A failed check writes `F` and a digit ([`Failure`]) and exits with
//! `0x20 + code` (status `((0x20 + code) << 1) | 1`).
//!
//! Workloads ([`BlkWorkload`]), one request in flight (queue depth 1):
//! - sequential read: request `i` reads 4 KiB block `i mod blocks`;
//! - random read: the block is `(x >> 8) mod blocks` for an LCG `x = x * 1103515245 +
//!   12345`;
//! - doorbell: `out dx, ax` to `QUEUE_NOTIFY` with an empty available ring, N times (the
//!   device wakes and finds nothing): the notify's cost alone.
//!
//! Each read is three descriptors (16-byte header, 4 KiB device-writable data, 1-byte
//! status); after each completion the guest checks that the status is 0 and that the
//! block's first 32-bit word is the block number (the host writes every block that way,
//! [`disk_image`]), so a figure is only reported for reads that returned the right data.

use iced_x86::code_asm::*;

use crate::{Error, Result};

/// Guest-physical load address of the kernel (its one `PT_LOAD`).
pub const LOAD: u32 = 0x10_0000;
/// Where the CPL3 part starts (`LOAD` + this is its linear address).
pub const USER_OFFSET: u32 = 0x800;
/// Multiboot v1 header magic.
pub const MULTIBOOT_MAGIC: u32 = 0x1bad_b002;
/// The legacy I/O BAR the guest assigns when BAR 0 reads back unassigned.
pub const IO_BASE: u32 = 0xc000;
/// Block size of every request.
pub const BLOCK: u32 = 4096;
/// The isa-debug-exit port.
pub const DEBUG_EXIT_PORT: u16 = 0x501;
/// The value the guest writes there after its last marker (status 33).
pub const EXIT_VALUE: u8 = 0x10;
/// Process status after a successful run.
pub const EXIT_STATUS: i32 = ((EXIT_VALUE as i32) << 1) | 1;

const GDT: u32 = 0x18_0000;
const GDTR: u32 = 0x18_0100;
const RING: u32 = 0x20_0000;
const RING_BYTES: u32 = 0x1_0000;
const HEADER: u32 = 0x21_0000;
const STATUS: u32 = 0x21_0010;
const VARS: u32 = 0x21_0100;
const VAR_IO: u32 = VARS;
const VAR_AVAIL: u32 = VARS + 4;
const VAR_USED: u32 = VARS + 8;
const VAR_QMASK: u32 = VARS + 12;
const DATA: u32 = 0x21_1000;
const USER_STACK: u32 = 0x22_0000;
const USER_DS: u32 = 0x23;
/// EFLAGS at CPL3: IOPL 3, bit 1, IF clear.
const USER_EFLAGS: u32 = 0x3002;

/// What the guest's loop does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlkWorkload {
    /// 4 KiB reads of consecutive blocks.
    SequentialRead,
    /// 4 KiB reads of pseudo-random blocks.
    RandomRead,
    /// Notifies of an empty queue.
    Doorbell,
}

impl BlkWorkload {
    /// Every workload, in report order.
    pub const ALL: [BlkWorkload; 3] = [
        BlkWorkload::SequentialRead,
        BlkWorkload::RandomRead,
        BlkWorkload::Doorbell,
    ];

    /// Short name (file names).
    pub fn slug(self) -> &'static str {
        match self {
            BlkWorkload::SequentialRead => "seq-read",
            BlkWorkload::RandomRead => "rand-read",
            BlkWorkload::Doorbell => "doorbell",
        }
    }
}

/// Why a guest stopped early: the digit after `F` on COM1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No 1af4:1001 function on PCI bus 0.
    NoDevice = 1,
    /// Queue 0 has size 0.
    NoQueue = 2,
    /// The disk is smaller than the guest expects.
    DiskTooSmall = 3,
    /// The device set NEEDS_RESET (or refused DRIVER_OK).
    NotRunning = 4,
    /// A request completed with a non-zero status.
    BadStatus = 5,
    /// A read returned the wrong block.
    WrongData = 6,
}

impl Failure {
    /// The failure for the digit the guest printed.
    pub fn from_digit(digit: u8) -> Option<Self> {
        Some(match digit {
            b'1' => Failure::NoDevice,
            b'2' => Failure::NoQueue,
            b'3' => Failure::DiskTooSmall,
            b'4' => Failure::NotRunning,
            b'5' => Failure::BadStatus,
            b'6' => Failure::WrongData,
            _ => return None,
        })
    }

    /// What it means.
    pub fn describe(self) -> &'static str {
        match self {
            Failure::NoDevice => "no virtio-blk (1af4:1001) function on PCI bus 0",
            Failure::NoQueue => "queue 0 has size 0",
            Failure::DiskTooSmall => "the disk's capacity is below what the guest reads",
            Failure::NotRunning => "the device set NEEDS_RESET or did not take DRIVER_OK",
            Failure::BadStatus => "a request completed with a non-zero status byte",
            Failure::WrongData => "a read returned the wrong block's data",
        }
    }
}

fn asm_error(e: IcedError) -> Error {
    Error::Assemble(e.to_string())
}

/// The CPL0 part at `LOAD + 12`: GDT, then `sysexit` to the CPL3 part.
fn kernel_part() -> std::result::Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(32)?;
    a.cli()?;
    // null, code DPL0 (0x08), data DPL0 (0x10), code DPL3 (0x1b), data DPL3 (0x23).
    for (i, (low, high)) in [
        (0u32, 0u32),
        (0x0000_ffff, 0x00cf_9a00),
        (0x0000_ffff, 0x00cf_9200),
        (0x0000_ffff, 0x00cf_fa00),
        (0x0000_ffff, 0x00cf_f200),
    ]
    .into_iter()
    .enumerate()
    {
        let at = GDT + 8 * i as u32;
        a.mov(dword_ptr(at), low)?;
        a.mov(dword_ptr(at + 4), high)?;
    }
    a.mov(word_ptr(GDTR), 5 * 8 - 1)?;
    a.mov(dword_ptr(GDTR + 2), GDT)?;
    a.lgdt(ptr(GDTR))?;
    a.mov(ax, 0x10)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    a.mov(ss, ax)?;
    // To CPL3 by sysexit (KVM's emulator, which runs this CPL0 code here, has no
    // protected-mode iret or outer-privilege retf): CS = SYSENTER_CS + 16 | 3 (0x1b),
    // SS = SYSENTER_CS + 24 | 3 (0x23), EIP = EDX, ESP = ECX; EFLAGS (IOPL 3) set first.
    a.mov(ecx, 0x174u32)?; // IA32_SYSENTER_CS
    a.xor(edx, edx)?;
    a.mov(eax, 0x08u32)?;
    a.wrmsr()?;
    a.push(USER_EFLAGS)?;
    a.popfd()?;
    a.mov(edx, LOAD + USER_OFFSET)?;
    a.mov(ecx, USER_STACK)?;
    a.sysexit()?;
    a.assemble(u64::from(LOAD + 12))
}

/// Emits: DX = the legacy register at `offset` (clobbers EDX).
fn emit_reg(a: &mut CodeAssembler, offset: u32) -> std::result::Result<(), IcedError> {
    a.mov(edx, dword_ptr(VAR_IO))?;
    if offset != 0 {
        a.add(edx, offset)?;
    }
    Ok(())
}

/// Emits: write the byte in AL to COM1, waiting for THRE (clobbers EDX, AH).
fn emit_putc(a: &mut CodeAssembler) -> std::result::Result<(), IcedError> {
    let mut wait = a.create_label();
    a.mov(ah, al)?;
    a.mov(edx, 0x3fdu32)?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.mov(al, ah)?;
    a.mov(edx, 0x3f8u32)?;
    a.out(dx, al)
}

fn emit_text(a: &mut CodeAssembler, text: &[u8]) -> std::result::Result<(), IcedError> {
    for &b in text {
        a.mov(al, u32::from(b))?;
        emit_putc(a)?;
    }
    Ok(())
}

/// Emits the failure handlers' targets: one label per [`Failure`].
struct Fails {
    labels: Vec<(Failure, CodeLabel)>,
}

impl Fails {
    fn new(a: &mut CodeAssembler) -> Self {
        let labels = [
            Failure::NoDevice,
            Failure::NoQueue,
            Failure::DiskTooSmall,
            Failure::NotRunning,
            Failure::BadStatus,
            Failure::WrongData,
        ]
        .into_iter()
        .map(|f| (f, a.create_label()))
        .collect();
        Fails { labels }
    }

    fn label(&self, failure: Failure) -> CodeLabel {
        self.labels
            .iter()
            .find(|(f, _)| *f == failure)
            .map(|(_, l)| *l)
            .unwrap_or_else(|| self.labels[0].1)
    }

    fn emit(mut self, a: &mut CodeAssembler) -> std::result::Result<(), IcedError> {
        for (failure, label) in &mut self.labels {
            let code = *failure as u32;
            a.set_label(label)?;
            emit_text(a, &[b'F', b'0' + code as u8, b'\n'])?;
            a.mov(al, 0x20 + code)?;
            a.mov(edx, u32::from(DEBUG_EXIT_PORT))?;
            a.out(dx, al)?;
            let mut spin = a.create_label();
            a.set_label(&mut spin)?;
            a.jmp(spin)?;
        }
        Ok(())
    }
}

/// The CPL3 part at `LOAD + USER_OFFSET`.
fn user_part(
    workload: BlkWorkload,
    requests: u32,
    blocks: u32,
) -> std::result::Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(32)?;
    let fails = Fails::new(&mut a);
    let mut scan = a.create_label();
    let mut found = a.create_label();
    let mut have_bar = a.create_label();
    let mut top = a.create_label();
    let mut wait = a.create_label();
    let mut spin = a.create_label();
    let mask = blocks - 1;

    // Data segments: DS and ES still hold DPL0 selectors.
    a.mov(eax, USER_DS)?;
    a.mov(ds, ax)?;
    a.mov(es, ax)?;
    // PCI bus 0: find 1af4:1001; ESI = its configuration address.
    a.mov(esi, 0x8000_0000u32)?;
    a.set_label(&mut scan)?;
    a.mov(eax, esi)?;
    a.mov(edx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(edx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.cmp(eax, 0x1001_1af4)?;
    a.je(found)?;
    a.add(esi, 0x800)?;
    a.cmp(esi, 0x8001_0000u32 as i32)?;
    a.jb(scan)?;
    a.jmp(fails.label(Failure::NoDevice))?;
    a.set_label(&mut found)?;
    // BAR 0 (I/O): keep the firmware's, or assign IO_BASE.
    a.lea(eax, dword_ptr(esi + 0x10))?;
    a.mov(edx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(edx, 0xcfcu32)?;
    a.in_(eax, dx)?;
    a.and(eax, 0xfffc)?;
    a.jnz(have_bar)?;
    a.mov(eax, IO_BASE)?;
    a.out(dx, eax)?;
    a.set_label(&mut have_bar)?;
    a.mov(dword_ptr(VAR_IO), eax)?;
    // Command: I/O space and bus master on.
    a.lea(eax, dword_ptr(esi + 0x04))?;
    a.mov(edx, 0xcf8u32)?;
    a.out(dx, eax)?;
    a.mov(edx, 0xcfcu32)?;
    a.in_(ax, dx)?;
    a.or(ax, 5)?;
    a.out(dx, ax)?;
    // Reset, ACKNOWLEDGE, DRIVER; no features.
    for status in [0u32, 1, 3] {
        emit_reg(&mut a, 0x12)?;
        a.mov(al, status)?;
        a.out(dx, al)?;
    }
    emit_reg(&mut a, 0x04)?;
    a.xor(eax, eax)?;
    a.out(dx, eax)?;
    // Queue 0: its size gives the ring layout.
    emit_reg(&mut a, 0x0e)?;
    a.xor(eax, eax)?;
    a.out(dx, ax)?;
    emit_reg(&mut a, 0x0c)?;
    a.in_(ax, dx)?;
    a.movzx(ecx, ax)?;
    a.test(ecx, ecx)?;
    a.jz(fails.label(Failure::NoQueue))?;
    a.lea(eax, dword_ptr(ecx - 1))?;
    a.mov(dword_ptr(VAR_QMASK), eax)?;
    a.mov(eax, ecx)?;
    a.shl(eax, 4)?;
    a.add(eax, RING)?;
    a.mov(dword_ptr(VAR_AVAIL), eax)?;
    a.lea(eax, dword_ptr(eax + ecx * 2 + (6 + 4095)))?;
    a.and(eax, !4095u32 as i32)?;
    a.mov(dword_ptr(VAR_USED), eax)?;
    // Capacity (512-byte sectors, config at 0x14 without MSI-X), low word.
    emit_reg(&mut a, 0x14)?;
    a.in_(eax, dx)?;
    a.shr(eax, 3)?;
    a.cmp(eax, blocks)?;
    a.jb(fails.label(Failure::DiskTooSmall))?;
    // Zero the ring, place it, write the three descriptors.
    a.mov(edi, RING)?;
    a.mov(ecx, RING_BYTES / 4)?;
    a.xor(eax, eax)?;
    a.rep().stosd()?;
    emit_reg(&mut a, 0x08)?;
    a.mov(eax, RING >> 12)?;
    a.out(dx, eax)?;
    for (i, (addr, len, flags, next)) in [
        (HEADER, 16u32, 1u32, 1u32),
        (DATA, BLOCK, 1 | 2, 2),
        (STATUS, 1, 2, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let at = RING + 16 * i as u32;
        a.mov(dword_ptr(at), addr)?;
        a.mov(dword_ptr(at + 4), 0u32)?;
        a.mov(dword_ptr(at + 8), len)?;
        a.mov(word_ptr(at + 12), flags)?;
        a.mov(word_ptr(at + 14), next)?;
    }
    // Header: VIRTIO_BLK_T_IN, sector set per request.
    for off in [0u32, 4, 8, 12] {
        a.mov(dword_ptr(HEADER + off), 0u32)?;
    }
    a.mov(ebp, dword_ptr(VAR_AVAIL))?;
    a.mov(word_ptr(ebp), 1u32)?; // VRING_AVAIL_F_NO_INTERRUPT
    emit_reg(&mut a, 0x12)?;
    a.mov(al, 7u32)?;
    a.out(dx, al)?;
    a.in_(al, dx)?;
    a.cmp(al, 7u32)?;
    a.jne(fails.label(Failure::NotRunning))?;

    emit_text(&mut a, b"S\n")?;
    // The loop: ESI = i, EBX = LCG state, EBP = avail, EDI = used, EDX = QUEUE_NOTIFY.
    a.xor(esi, esi)?;
    a.mov(ebx, 1u32)?;
    a.mov(ebp, dword_ptr(VAR_AVAIL))?;
    a.mov(edi, dword_ptr(VAR_USED))?;
    emit_reg(&mut a, 0x10)?;
    a.set_label(&mut top)?;
    match workload {
        BlkWorkload::Doorbell => {
            a.xor(eax, eax)?;
            a.out(dx, ax)?;
        }
        BlkWorkload::SequentialRead | BlkWorkload::RandomRead => {
            if workload == BlkWorkload::SequentialRead {
                a.mov(ecx, esi)?;
            } else {
                a.imul_3(ebx, ebx, 1_103_515_245)?;
                a.add(ebx, 12345)?;
                a.mov(ecx, ebx)?;
                a.shr(ecx, 8)?;
            }
            a.and(ecx, mask)?;
            a.lea(eax, dword_ptr(ecx * 8))?;
            a.mov(dword_ptr(HEADER + 8), eax)?;
            a.mov(byte_ptr(STATUS), 0xffu32)?;
            a.mov(dword_ptr(DATA), 0xffff_ffffu32)?;
            a.mov(eax, esi)?;
            a.and(eax, dword_ptr(VAR_QMASK))?;
            a.mov(word_ptr(ebp + eax * 2 + 4), 0u32)?;
            a.lea(eax, dword_ptr(esi + 1))?;
            a.mov(word_ptr(ebp + 2), ax)?;
            a.xor(eax, eax)?;
            a.out(dx, ax)?;
            a.lea(eax, dword_ptr(esi + 1))?;
            a.set_label(&mut wait)?;
            a.pause()?;
            a.cmp(word_ptr(edi + 2), ax)?;
            a.jne(wait)?;
            a.cmp(byte_ptr(STATUS), 0)?;
            a.jne(fails.label(Failure::BadStatus))?;
            a.cmp(dword_ptr(DATA), ecx)?;
            a.jne(fails.label(Failure::WrongData))?;
        }
    }
    a.inc(esi)?;
    a.cmp(esi, requests)?;
    a.jb(top)?;
    emit_text(&mut a, b"E\n")?;
    a.mov(al, u32::from(EXIT_VALUE))?;
    a.mov(edx, u32::from(DEBUG_EXIT_PORT))?;
    a.out(dx, al)?;
    a.set_label(&mut spin)?;
    a.jmp(spin)?;
    fails.emit(&mut a)?;
    a.assemble(u64::from(LOAD + USER_OFFSET))
}

/// The multiboot header (flags 0): magic, flags, checksum.
pub fn multiboot_header() -> [u8; 12] {
    let mut out = [0u8; 12];
    let checksum = 0u32.wrapping_sub(MULTIBOOT_MAGIC);
    for (i, w) in [MULTIBOOT_MAGIC, 0, checksum].into_iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// File offset of the segment in the ELF (page-aligned, congruent with [`LOAD`]).
pub const SEGMENT_OFFSET: usize = 0x1000;

/// The guest kernel: an ELF32 i386 executable with one `PT_LOAD` at [`LOAD`] (multiboot
/// header, CPL0 part, the CPL3 part at [`USER_OFFSET`]), entry `LOAD + 12`. `blocks`
/// (a power of two) is how many 4 KiB blocks the workload spreads over; `requests` how
/// many requests (or doorbells) it makes.
pub fn blk_kernel(workload: BlkWorkload, requests: u32, blocks: u32) -> Result<Vec<u8>> {
    if !blocks.is_power_of_two() || blocks > 1 << 20 {
        return Err(Error::Usage(format!(
            "virtio-blk guest: {blocks} blocks: expected a power of two up to 2^20"
        )));
    }
    let kernel = kernel_part().map_err(asm_error)?;
    let user = user_part(workload, requests, blocks).map_err(asm_error)?;
    let user_at = USER_OFFSET as usize;
    if 12 + kernel.len() > user_at {
        return Err(Error::ImageLayout {
            what: "CPL0 part",
            offset: 12,
            len: kernel.len(),
        });
    }
    let mut segment = multiboot_header().to_vec();
    segment.extend(kernel);
    segment.resize(user_at, 0x90);
    segment.extend(user);

    let mut elf = vec![0u8; SEGMENT_OFFSET];
    elf[..7].copy_from_slice(b"\x7fELF\x01\x01\x01");
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..28].copy_from_slice(&(LOAD + 12).to_le_bytes()); // e_entry
    elf[28..32].copy_from_slice(&52u32.to_le_bytes()); // e_phoff
    elf[40..42].copy_from_slice(&52u16.to_le_bytes()); // e_ehsize
    elf[42..44].copy_from_slice(&32u16.to_le_bytes()); // e_phentsize
    elf[44..46].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let size = segment.len() as u32;
    let phdr = [1, SEGMENT_OFFSET as u32, LOAD, LOAD, size, size, 7, 0x1000];
    for (i, w) in phdr.iter().enumerate() {
        elf[52 + 4 * i..56 + 4 * i].copy_from_slice(&w.to_le_bytes());
    }
    elf.extend(segment);
    Ok(elf)
}

/// The disk the guest reads: `blocks` 4 KiB blocks, block `b` starting with `b` as a
/// little-endian u32, the rest a byte pattern.
pub fn disk_image(blocks: u32) -> Vec<u8> {
    let mut disk = vec![0u8; blocks as usize * BLOCK as usize];
    for (b, block) in disk.chunks_exact_mut(BLOCK as usize).enumerate() {
        block[..4].copy_from_slice(&(b as u32).to_le_bytes());
        for (i, byte) in block.iter_mut().enumerate().skip(4) {
            *byte = (i as u8) ^ (b as u8);
        }
    }
    disk
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    fn decode(bytes: &[u8], ip: u64) -> Vec<iced_x86::Instruction> {
        Decoder::with_ip(32, bytes, ip, DecoderOptions::NONE)
            .into_iter()
            .collect()
    }

    #[test]
    fn the_elf_holds_the_multiboot_header_and_both_parts_where_the_entry_points() {
        let elf = blk_kernel(BlkWorkload::RandomRead, 100, 16384).unwrap();
        assert_eq!(&elf[..4], b"\x7fELF");
        let entry = u32::from_le_bytes(elf[24..28].try_into().unwrap());
        assert_eq!(entry, LOAD + 12);
        let segment = &elf[SEGMENT_OFFSET..];
        assert_eq!(&segment[..12], &multiboot_header());
        let sum = (0..3).fold(0u32, |s, i| {
            s.wrapping_add(u32::from_le_bytes(
                segment[4 * i..4 * i + 4].try_into().unwrap(),
            ))
        });
        assert_eq!(sum, 0, "multiboot checksum");
        // The CPL0 part ends in sysexit; the CPL3 part starts at USER_OFFSET.
        let kernel = decode(&segment[12..USER_OFFSET as usize], u64::from(entry));
        assert!(kernel.iter().any(|i| i.mnemonic() == Mnemonic::Sysexit));
        let user = decode(
            &segment[USER_OFFSET as usize..],
            u64::from(LOAD + USER_OFFSET),
        );
        assert_eq!(user[0].mnemonic(), Mnemonic::Mov);
        assert!(user.iter().any(|i| i.mnemonic() == Mnemonic::Pause));
        // One PT_LOAD covering the segment.
        let filesz = u32::from_le_bytes(elf[52 + 16..52 + 20].try_into().unwrap());
        assert_eq!(filesz as usize, segment.len());
    }

    #[test]
    fn the_doorbell_loop_only_rings_and_bad_sizes_are_refused() {
        let elf = blk_kernel(BlkWorkload::Doorbell, 10, 1024).unwrap();
        let user = decode(
            &elf[SEGMENT_OFFSET + USER_OFFSET as usize..],
            u64::from(LOAD + USER_OFFSET),
        );
        assert!(!user.iter().any(|i| i.mnemonic() == Mnemonic::Pause));
        assert!(blk_kernel(BlkWorkload::Doorbell, 10, 1000).is_err());
    }

    #[test]
    fn every_block_starts_with_its_number() {
        let disk = disk_image(8);
        assert_eq!(disk.len(), 8 * 4096);
        for b in 0..8u32 {
            let at = b as usize * 4096;
            assert_eq!(disk[at..at + 4], b.to_le_bytes());
        }
        assert_eq!(Failure::from_digit(b'6'), Some(Failure::WrongData));
        assert_eq!(Failure::from_digit(b'9'), None);
    }
}
