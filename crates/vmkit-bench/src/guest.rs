//! The benchmark guests: 64 KiB firmware images for `-bios`, assembled here with iced-x86.
//!
//! The image is mapped, as on a PC, so that it ends at 4 GiB and again so that it ends at
//! 1 MiB: image offset `o` is guest-physical `0xf0000 + o` = real-mode `f000:o`.
//!
//! Workload images ([`workload_firmware`]):
//!
//! | offset | contents |
//! |---|---|
//! | `0x0000` | real mode: `cli`, `lgdt`, set CR0.PE, far jump to the 32-bit code |
//! | `0x0040` | 32-bit flat protected mode ([`PM_ENTRY_OFFSET`]): the loop, then the debug exit |
//! | `0xff00` | GDT: null, flat 32-bit code (0x08), flat data (0x10) ([`GDT_OFFSET`]) |
//! | `0xff20` | the GDT pseudo-descriptor for `lgdt` ([`GDTR_OFFSET`]) |
//! | `0xfff0` | reset vector: `jmp far f000:0000` ([`RESET_VECTOR_OFFSET`]) |
//!
//! Protected mode lets the MMIO workload write [`MMIO_ADDR`], in the PCI hole, which is
//! unassigned in every VMM here (below 1 MiB, QEMU backs 0xa0000-0xbffff with RAM and
//! 0xc0000-0xdffff with ROM when no VGA card is present, while vmkit leaves them empty).
//!
//! Scaling images ([`scaling_firmware`]) stay in real mode: the boot processor's code at
//! offset 0, the second vCPU's at [`AP_ENTRY_OFFSET`] (a VMM starts it there directly).
//!
//! The code runs with interrupts off, touches no RAM (no stack, no data) except the scaling
//! guest's one-byte "done" flag, and ends by writing [`EXIT_VALUE`] to the isa-debug-exit
//! port [`DEBUG_EXIT_PORT`]: vmkit and QEMU then exit with status `(EXIT_VALUE << 1) | 1` =
//! [`EXIT_STATUS`]. Workload guests first write [`EXIT_MARKER`] to COM1 ([`SERIAL_PORT`]),
//! which marks the guest's exit on the VMM's stdout.

use iced_x86::code_asm::*;
use iced_x86::{Code, Instruction};

use crate::{Error, Result};

/// Size of every image: 64 KiB, what QEMU accepts for `-bios` (a multiple of 64 KiB).
pub const FIRMWARE_SIZE: usize = 0x1_0000;
/// Where the reset vector lives in the image: 16 bytes before its end (address 0xffff_fff0).
pub const RESET_VECTOR_OFFSET: usize = FIRMWARE_SIZE - 16;
/// Real-mode segment the code runs in after the reset vector's far jump.
pub const FIRMWARE_SEGMENT: u16 = 0xf000;
/// Guest-physical address of image offset 0 in the copy below 1 MiB.
pub const FIRMWARE_LOW_BASE: u64 = 0xf_0000;
/// Guest-physical address of image offset 0 in the copy ending at 4 GiB.
pub const FIRMWARE_HIGH_BASE: u64 = 0x1_0000_0000 - FIRMWARE_SIZE as u64;
/// Image offset (= IP in segment 0xf000) of the boot processor's code.
pub const BSP_ENTRY_OFFSET: u16 = 0;
/// Image offset (= IP in segment 0xf000) of the second vCPU's code in scaling guests.
pub const AP_ENTRY_OFFSET: u16 = 0x100;
/// Image offset of a workload's 32-bit code (linear address `0xf0000 + offset`).
pub const PM_ENTRY_OFFSET: u16 = 0x40;
/// Image offset of the GDT.
pub const GDT_OFFSET: u16 = 0xff00;
/// Image offset of the 6-byte GDT pseudo-descriptor (limit, base) that `lgdt` loads.
pub const GDTR_OFFSET: u16 = 0xff20;
/// The GDT: null, flat 4 GiB 32-bit code (selector 0x08), flat 4 GiB data (selector 0x10).
pub const GDT: [u64; 3] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff];
/// Code segment selector in protected mode.
pub const CODE32_SELECTOR: u16 = 0x08;
/// Data segment selector in protected mode.
pub const DATA32_SELECTOR: u16 = 0x10;

/// The port the PIO workloads write and read: the POST port, a sink in vmkit (its `post`
/// device) and in QEMU (`ioport80`).
pub const PIO_PORT: u16 = 0x80;
/// The address the MMIO workload writes: in the PCI hole, unassigned in every VMM here (no
/// RAM, no device, no KVM memory slot). vmkit's MMIO bus drops the write and counts it as
/// unassigned; QEMU's flat view has nothing there (`info mtree -f`), so the write ends in
/// its unassigned-access handler; the raw loop counts it.
pub const MMIO_ADDR: u32 = 0xd000_0000;
/// COM1's data port: just before its debug exit, a workload guest writes [`EXIT_MARKER`]
/// here, which each VMM passes to its stdout at once; the benchmark times the guest's exit
/// by that byte's arrival (the process's end comes later: KVM's VM teardown is slow on some
/// hosts).
pub const SERIAL_PORT: u16 = 0x3f8;
/// The byte written to [`SERIAL_PORT`] before the debug exit (a newline, so that
/// line-buffered consoles pass it on at once).
pub const EXIT_MARKER: u8 = b'\n';
/// The isa-debug-exit port (QEMU's `iobase=0x501`).
pub const DEBUG_EXIT_PORT: u16 = 0x501;
/// The value written to [`DEBUG_EXIT_PORT`].
pub const EXIT_VALUE: u8 = 0x10;
/// The exit status of a VMM process after the guest's debug exit: `(EXIT_VALUE << 1) | 1`.
pub const EXIT_STATUS: i32 = ((EXIT_VALUE as i32) << 1) | 1;

/// The ports the two vCPUs of a scaling guest write (one device each).
pub const SCALING_PORTS: [u16; 2] = [0x530, 0x538];
/// The second vCPU writes this port once it is done (unassigned in vmkit; the raw loop ends
/// that vCPU's thread on it).
pub const AP_DONE_PORT: u16 = 0x5f0;
/// Guest-physical address (in low RAM) of the byte the second vCPU sets when it is done.
pub const AP_DONE_FLAG: u16 = 0x7000;

/// What the guest's loop does, once per iteration (one exit each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// `out dx, al` to [`PIO_PORT`].
    PioWrite,
    /// `mov [MMIO_ADDR], al`: a one-byte write to [`MMIO_ADDR`].
    MmioWrite,
    /// `in al, dx` from [`PIO_PORT`].
    PioRead,
    /// Reference, not an exit: `mov [GUEST_LOOP_RAM], al`, a RAM write. Its cost per
    /// iteration is the guest code's share of every per-exit figure.
    RamWrite,
}

/// The RAM byte the [`Workload::RamWrite`] reference loop writes.
pub const GUEST_LOOP_RAM: u32 = 0x7000;

impl Workload {
    /// Every workload that exits, in report order.
    pub const ALL: [Workload; 3] = [Workload::PioWrite, Workload::MmioWrite, Workload::PioRead];

    /// Short name for tables and file names.
    pub fn name(self) -> &'static str {
        match self {
            Workload::PioWrite => "PIO write",
            Workload::MmioWrite => "MMIO write",
            Workload::PioRead => "PIO read",
            Workload::RamWrite => "RAM write (no exit)",
        }
    }

    /// Name without spaces (file names).
    pub fn slug(self) -> &'static str {
        match self {
            Workload::PioWrite => "pio-write",
            Workload::MmioWrite => "mmio-write",
            Workload::PioRead => "pio-read",
            Workload::RamWrite => "ram-write",
        }
    }
}

fn asm_error(e: IcedError) -> Error {
    Error::Assemble(e.to_string())
}

/// Emits `mov ecx, count` and a loop running `body` `count` times (none for 0).
fn emit_counted_loop(
    a: &mut CodeAssembler,
    count: u32,
    body: impl Fn(&mut CodeAssembler) -> std::result::Result<(), IcedError>,
) -> std::result::Result<(), IcedError> {
    let mut top = a.create_label();
    let mut done = a.create_label();
    a.mov(ecx, count)?;
    a.test(ecx, ecx)?;
    a.jz(done)?;
    a.set_label(&mut top)?;
    body(a)?;
    a.dec(ecx)?;
    a.jnz(top)?;
    a.set_label(&mut done)?;
    a.nop()
}

/// Emits the debug exit and a `hlt` loop behind it (never reached when a VMM honours it).
/// Emits the write of [`EXIT_MARKER`] to COM1.
fn emit_exit_marker(a: &mut CodeAssembler) -> std::result::Result<(), IcedError> {
    a.mov(dx, u32::from(SERIAL_PORT))?;
    a.mov(al, u32::from(EXIT_MARKER))?;
    a.out(dx, al)
}

fn emit_debug_exit(a: &mut CodeAssembler) -> std::result::Result<(), IcedError> {
    let mut halt = a.create_label();
    a.mov(dx, u32::from(DEBUG_EXIT_PORT))?;
    a.mov(al, u32::from(EXIT_VALUE))?;
    a.out(dx, al)?;
    a.set_label(&mut halt)?;
    a.hlt()?;
    a.jmp(halt)
}

fn assemble_at(
    offset: u16,
    build: impl FnOnce(&mut CodeAssembler) -> std::result::Result<(), IcedError>,
) -> Result<Vec<u8>> {
    let mut a = CodeAssembler::new(16).map_err(asm_error)?;
    build(&mut a).map_err(asm_error)?;
    a.assemble(u64::from(offset)).map_err(asm_error)
}

/// The real-mode start of a workload image: load the GDT, enter protected mode, far jump
/// to [`PM_ENTRY_OFFSET`] with the flat code segment.
pub fn protected_mode_entry_code() -> Result<Vec<u8>> {
    assemble_at(BSP_ENTRY_OFFSET, |a| {
        a.cli()?;
        a.mov(ax, u32::from(FIRMWARE_SEGMENT))?;
        a.mov(ds, ax)?;
        a.lgdt(ptr(u32::from(GDTR_OFFSET)))?;
        a.mov(eax, cr0)?;
        a.or(eax, 1)?;
        a.mov(cr0, eax)?;
        // jmp far 0x08:(0xf0000 + PM_ENTRY_OFFSET): a 32-bit offset needs the o32 form.
        a.add_instruction(Instruction::with_far_branch(
            Code::Jmp_ptr1632,
            CODE32_SELECTOR,
            FIRMWARE_LOW_BASE as u32 + u32::from(PM_ENTRY_OFFSET),
        )?)
    })
}

/// The 32-bit code of `workload` with `exits` loop iterations, then the debug exit.
pub fn workload_code(workload: Workload, exits: u32) -> Result<Vec<u8>> {
    let mut a = CodeAssembler::new(32).map_err(asm_error)?;
    let build = |a: &mut CodeAssembler| -> std::result::Result<(), IcedError> {
        a.mov(ax, u32::from(DATA32_SELECTOR))?;
        a.mov(ds, ax)?;
        a.mov(es, ax)?;
        a.mov(ss, ax)?;
        a.xor(eax, eax)?;
        a.mov(dx, u32::from(PIO_PORT))?;
        match workload {
            Workload::PioWrite => emit_counted_loop(a, exits, |a| a.out(dx, al))?,
            Workload::PioRead => emit_counted_loop(a, exits, |a| a.in_(al, dx))?,
            Workload::MmioWrite => emit_counted_loop(a, exits, |a| a.mov(byte_ptr(MMIO_ADDR), al))?,
            Workload::RamWrite => {
                emit_counted_loop(a, exits, |a| a.mov(byte_ptr(GUEST_LOOP_RAM), al))?
            }
        }
        emit_exit_marker(a)?;
        emit_debug_exit(a)
    };
    build(&mut a).map_err(asm_error)?;
    a.assemble(FIRMWARE_LOW_BASE + u64::from(PM_ENTRY_OFFSET))
        .map_err(asm_error)
}

/// The GDT as bytes followed by nothing; see [`GDT`].
pub fn gdt_bytes() -> Vec<u8> {
    GDT.iter().flat_map(|entry| entry.to_le_bytes()).collect()
}

/// The pseudo-descriptor `lgdt` reads: limit (size - 1) and the GDT's linear address.
pub fn gdtr_bytes() -> Vec<u8> {
    let limit = (GDT.len() * 8 - 1) as u16;
    let base = FIRMWARE_LOW_BASE as u32 + u32::from(GDT_OFFSET);
    let mut bytes = limit.to_le_bytes().to_vec();
    bytes.extend_from_slice(&base.to_le_bytes());
    bytes
}

/// Boot processor code of a scaling guest: `exits` writes to its own port, then (with a
/// second vCPU) waits for that vCPU's done flag, then the debug exit.
pub fn scaling_bsp_code(exits: u32, wait_for_ap: bool) -> Result<Vec<u8>> {
    assemble_at(BSP_ENTRY_OFFSET, |a| {
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(dx, u32::from(SCALING_PORTS[0]))?;
        emit_counted_loop(a, exits, |a| a.out(dx, al))?;
        if wait_for_ap {
            let mut wait = a.create_label();
            a.set_label(&mut wait)?;
            a.pause()?;
            a.cmp(byte_ptr(u32::from(AP_DONE_FLAG)), 0)?;
            a.je(wait)?;
        }
        emit_debug_exit(a)
    })
}

/// Second vCPU's code of a scaling guest: `exits` writes to its own port, sets the done
/// flag, writes [`AP_DONE_PORT`] and halts.
pub fn scaling_ap_code(exits: u32) -> Result<Vec<u8>> {
    assemble_at(AP_ENTRY_OFFSET, |a| {
        let mut halt = a.create_label();
        a.cli()?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        a.mov(dx, u32::from(SCALING_PORTS[1]))?;
        emit_counted_loop(a, exits, |a| a.out(dx, al))?;
        a.mov(byte_ptr(u32::from(AP_DONE_FLAG)), 1)?;
        a.mov(dx, u32::from(AP_DONE_PORT))?;
        a.out(dx, al)?;
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)
    })
}

/// The reset-vector stub: `jmp far f000:BSP_ENTRY_OFFSET`.
pub fn reset_stub() -> Result<Vec<u8>> {
    let offset = u16::try_from(RESET_VECTOR_OFFSET).map_err(|_| Error::ImageLayout {
        what: "reset vector",
        offset: RESET_VECTOR_OFFSET,
        len: 0,
    })?;
    assemble_at(offset, |a| {
        a.jmp_far(FIRMWARE_SEGMENT, u32::from(BSP_ENTRY_OFFSET))
    })
}

/// One piece of an image: what it is, where it goes, its bytes.
#[derive(Debug, Clone)]
pub struct Piece {
    /// What it is (for errors).
    pub what: &'static str,
    /// Image offset.
    pub offset: usize,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A zero-filled 64 KiB image holding `pieces` and the reset stub at
/// [`RESET_VECTOR_OFFSET`]. Fails if a piece overlaps another or the reset stub.
pub fn firmware_image(pieces: &[Piece]) -> Result<Vec<u8>> {
    let mut all: Vec<Piece> = pieces.to_vec();
    all.push(Piece {
        what: "reset vector",
        offset: RESET_VECTOR_OFFSET,
        bytes: reset_stub()?,
    });
    all.sort_by_key(|p| p.offset);
    let mut image = vec![0u8; FIRMWARE_SIZE];
    let mut free_from = 0usize;
    for piece in &all {
        let error = || Error::ImageLayout {
            what: piece.what,
            offset: piece.offset,
            len: piece.bytes.len(),
        };
        if piece.offset < free_from {
            return Err(error());
        }
        let end = piece
            .offset
            .checked_add(piece.bytes.len())
            .filter(|&end| end <= FIRMWARE_SIZE)
            .ok_or_else(error)?;
        image
            .get_mut(piece.offset..end)
            .ok_or_else(error)?
            .copy_from_slice(&piece.bytes);
        free_from = end;
    }
    Ok(image)
}

/// The firmware image for `workload` with `exits` iterations (one exit each) plus the debug
/// exit.
pub fn workload_firmware(workload: Workload, exits: u32) -> Result<Vec<u8>> {
    firmware_image(&[
        Piece {
            what: "real-mode entry",
            offset: usize::from(BSP_ENTRY_OFFSET),
            bytes: protected_mode_entry_code()?,
        },
        Piece {
            what: "32-bit loop",
            offset: usize::from(PM_ENTRY_OFFSET),
            bytes: workload_code(workload, exits)?,
        },
        Piece {
            what: "GDT",
            offset: usize::from(GDT_OFFSET),
            bytes: gdt_bytes(),
        },
        Piece {
            what: "GDT pseudo-descriptor",
            offset: usize::from(GDTR_OFFSET),
            bytes: gdtr_bytes(),
        },
    ])
}

/// The firmware image for the scaling runs: with `vcpus` = 1 the boot processor alone, with
/// 2 also the second vCPU's code (which a VMM starts directly at [`AP_ENTRY_OFFSET`]).
pub fn scaling_firmware(exits: u32, vcpus: usize) -> Result<Vec<u8>> {
    let bsp = |wait| -> Result<Piece> {
        Ok(Piece {
            what: "boot processor code",
            offset: usize::from(BSP_ENTRY_OFFSET),
            bytes: scaling_bsp_code(exits, wait)?,
        })
    };
    match vcpus {
        1 => firmware_image(&[bsp(false)?]),
        2 => firmware_image(&[
            bsp(true)?,
            Piece {
                what: "second vCPU code",
                offset: usize::from(AP_ENTRY_OFFSET),
                bytes: scaling_ap_code(exits)?,
            },
        ]),
        other => Err(Error::Usage(format!(
            "scaling guests have 1 or 2 vCPUs, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};

    fn decode(bitness: u32, ip: u64, bytes: &[u8]) -> Vec<iced_x86::Instruction> {
        let mut decoder = Decoder::with_ip(bitness, bytes, ip, DecoderOptions::NONE);
        let mut out = Vec::new();
        while decoder.can_decode() {
            out.push(decoder.decode());
        }
        out
    }

    #[test]
    fn reset_vector_is_16_bytes_before_the_end_and_jumps_to_f000_0000() {
        let image = workload_firmware(Workload::PioWrite, 10).unwrap();
        assert_eq!(image.len(), 0x1_0000);
        assert_eq!(RESET_VECTOR_OFFSET, 0xfff0);
        // The first instruction at 0xffff_fff0 (CS base 0xffff_0000, IP 0xfff0).
        let code = decode(16, 0xfff0, &image[RESET_VECTOR_OFFSET..]);
        let jump = code[0];
        assert_eq!(jump.code(), Code::Jmp_ptr1616);
        assert_eq!(jump.far_branch_selector(), 0xf000);
        assert_eq!(jump.far_branch16(), BSP_ENTRY_OFFSET);
    }

    #[test]
    fn gdt_and_its_pseudo_descriptor_are_where_lgdt_finds_them() {
        let image = workload_firmware(Workload::MmioWrite, 10).unwrap();
        let gdt = &image[usize::from(GDT_OFFSET)..usize::from(GDT_OFFSET) + 24];
        assert_eq!(gdt, gdt_bytes().as_slice());
        let gdtr = &image[usize::from(GDTR_OFFSET)..usize::from(GDTR_OFFSET) + 6];
        assert_eq!(u16::from_le_bytes([gdtr[0], gdtr[1]]), 23);
        assert_eq!(
            u32::from_le_bytes([gdtr[2], gdtr[3], gdtr[4], gdtr[5]]),
            0xf_ff00
        );
        // Flat 4 GiB: base 0, limit 0xfffff in 4 KiB units, present, DPL 0, 32-bit.
        assert_eq!(GDT[1] & 0xffff, 0xffff);
        assert_eq!((GDT[1] >> 40) & 0xff, 0x9b);
        assert_eq!((GDT[2] >> 40) & 0xff, 0x93);
    }

    #[test]
    fn real_mode_entry_loads_the_gdt_and_far_jumps_to_the_32_bit_code() {
        let image = workload_firmware(Workload::PioRead, 10).unwrap();
        let code = decode(16, 0, &image[..usize::from(PM_ENTRY_OFFSET)]);
        let lgdt = code
            .iter()
            .find(|i| i.mnemonic() == Mnemonic::Lgdt)
            .unwrap();
        assert_eq!(lgdt.memory_displacement64(), u64::from(GDTR_OFFSET));
        let jump = code
            .iter()
            .find(|i| i.code() == Code::Jmp_ptr1632)
            .expect("o32 far jump");
        assert_eq!(jump.far_branch_selector(), CODE32_SELECTOR);
        assert_eq!(jump.far_branch32(), 0xf_0040);
    }

    fn loop_body(workload: Workload, exits: u32) -> Vec<iced_x86::Instruction> {
        let image = workload_firmware(workload, exits).unwrap();
        let start = usize::from(PM_ENTRY_OFFSET);
        let code = decode(
            32,
            FIRMWARE_LOW_BASE + start as u64,
            &image[start..usize::from(GDT_OFFSET)],
        );
        let count = code
            .iter()
            .find(|i| i.mnemonic() == Mnemonic::Mov && i.op0_register() == Register::ECX)
            .expect("mov ecx, N");
        assert_eq!(count.immediate32(), exits);
        code
    }

    #[test]
    fn each_workload_loops_on_its_own_access_then_writes_the_debug_exit() {
        let pio = loop_body(Workload::PioWrite, 1234);
        assert!(pio.iter().any(|i| i.mnemonic() == Mnemonic::Out
            && i.op0_register() == Register::DX
            && i.op1_register() == Register::AL));
        let read = loop_body(Workload::PioRead, 77);
        assert!(read.iter().any(|i| i.mnemonic() == Mnemonic::In
            && i.op0_register() == Register::AL
            && i.op1_register() == Register::DX));
        let mmio = loop_body(Workload::MmioWrite, 5);
        assert!(mmio.iter().any(|i| i.mnemonic() == Mnemonic::Mov
            && i.op0_kind() == OpKind::Memory
            && i.memory_displacement64() == u64::from(MMIO_ADDR)));
        let ram = loop_body(Workload::RamWrite, 5);
        assert!(ram.iter().any(|i| i.mnemonic() == Mnemonic::Mov
            && i.op0_kind() == OpKind::Memory
            && i.memory_displacement64() == u64::from(GUEST_LOOP_RAM)));
        for code in [&pio, &read, &mmio, &ram] {
            let port = code
                .iter()
                .position(|i| {
                    i.mnemonic() == Mnemonic::Mov
                        && i.op0_register() == Register::DX
                        && i.immediate16() == DEBUG_EXIT_PORT
                })
                .expect("mov dx, 0x501");
            let value = &code[port + 1];
            assert_eq!(value.op0_register(), Register::AL);
            assert_eq!(value.immediate8(), EXIT_VALUE);
            assert_eq!(code[port + 2].mnemonic(), Mnemonic::Out);
            // The exit marker on COM1 comes just before.
            assert_eq!(code[port - 3].immediate16(), SERIAL_PORT);
            assert_eq!(code[port - 2].immediate8(), EXIT_MARKER);
            assert_eq!(code[port - 1].mnemonic(), Mnemonic::Out);
        }
        assert_eq!(EXIT_STATUS, 33);
    }

    #[test]
    fn scaling_images_put_the_second_vcpu_at_its_entry() {
        let one = scaling_firmware(100, 1).unwrap();
        assert!(
            one[usize::from(AP_ENTRY_OFFSET)..usize::from(AP_ENTRY_OFFSET) + 16]
                .iter()
                .all(|&b| b == 0)
        );
        let two = scaling_firmware(100, 2).unwrap();
        let ap = scaling_ap_code(100).unwrap();
        let at = usize::from(AP_ENTRY_OFFSET);
        assert_eq!(&two[at..at + ap.len()], ap.as_slice());
        let code = decode(16, u64::from(AP_ENTRY_OFFSET), &ap);
        assert!(code
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Mov && i.immediate16() == SCALING_PORTS[1]));
        assert!(matches!(scaling_firmware(1, 3), Err(Error::Usage(_))));
    }

    #[test]
    fn overlapping_or_oversized_pieces_are_refused() {
        let piece = |offset, len| Piece {
            what: "test",
            offset,
            bytes: vec![0x90; len],
        };
        assert!(firmware_image(&[piece(0, 0x10), piece(0x10, 0x10)]).is_ok());
        assert!(matches!(
            firmware_image(&[piece(0, 0x11), piece(0x10, 0x10)]),
            Err(Error::ImageLayout { .. })
        ));
        // Running into the reset vector.
        assert!(matches!(
            firmware_image(&[piece(0xffe0, 0x11)]),
            Err(Error::ImageLayout { .. })
        ));
        // A loop too large for the space before the GDT.
        assert!(matches!(
            firmware_image(&[piece(usize::MAX, 1)]),
            Err(Error::ImageLayout { .. })
        ));
    }

    #[test]
    fn zero_exits_skip_the_loop() {
        let code = loop_body(Workload::PioWrite, 0);
        assert!(code.iter().any(|i| i.mnemonic() == Mnemonic::Je));
    }
}
