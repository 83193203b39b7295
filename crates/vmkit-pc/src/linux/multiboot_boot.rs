//! The real-mode stub a multiboot kernel starts in (the interrupt controllers left as
//! SeaBIOS leaves them, then QEMU's multiboot option ROM's entry) and the multiboot load.

use super::*;

/// Loader areas a multiboot image must not overlap: the real-mode IVT and BDA, the boot
/// GDT/IDT/TSS and the entry stub with its interrupt handlers ([`MULTIBOOT_STUB_ADDR`]).
pub(super) const MULTIBOOT_RESERVED: [(u64, u64); 1] = [(0, MULTIBOOT_STUB_END)];

/// Where the boot vCPU of a multiboot kernel starts, in real mode: a stub that leaves the
/// interrupt controllers as SeaBIOS does before QEMU's multiboot option ROM runs, then enters
/// the kernel as that ROM does.
pub const MULTIBOOT_STUB_ADDR: u64 = 0x600;
const MULTIBOOT_STUB_END: u64 = 0x700;
const STUB_IRQ_MASTER: u64 = 0x6c0;
const STUB_IRQ_SLAVE: u64 = 0x6c8;
const STUB_IRET: u64 = 0x6d8;
const STUB_GDT_DESC: u64 = 0x6f0;
/// The PIC masks SeaBIOS leaves for the devices this machine has: timer, keyboard and the
/// cascade on the master; RTC and mouse on the slave.
const STUB_PIC_MASKS: (u8, u8) = (0xf8, 0xee);

/// The multiboot entry stub (16-bit code at [`MULTIBOOT_STUB_ADDR`], then 32-bit code): the
/// 8259A pair initialised as SeaBIOS does (vectors 0x08 and 0x70, [`STUB_PIC_MASKS`]), PIT
/// channel 0 in mode 3 with count 0 (18.2 Hz), then as QEMU's multiboot.bin: the flat GDT,
/// CR0.PE, far jump to 32-bit code, data segments flat, EAX = 0x2BADB002, EBX = the
/// information, ESP = `esp`, jump to `eip`.
fn multiboot_stub(eip: u32, esp: u32, info: u32) -> Vec<u8> {
    let mut code = vec![0xfa, 0xfc]; // cli; cld
    let (master_mask, slave_mask) = STUB_PIC_MASKS;
    for (port, value) in [
        (0x20u8, 0x11u8),
        (0xa0, 0x11),
        (0x21, 0x08),
        (0xa1, 0x70),
        (0x21, 0x04),
        (0xa1, 0x02),
        (0x21, 0x01),
        (0xa1, 0x01),
        (0x21, master_mask),
        (0xa1, slave_mask),
        (0x43, 0x36),
        (0x40, 0x00),
        (0x40, 0x00),
    ] {
        code.extend_from_slice(&[0xb0, value, 0xe6, port]); // mov al, value; out port, al
    }
    code.extend_from_slice(&[0x66, 0x0f, 0x01, 0x16]); // o32 lgdt [disp16]
    code.extend_from_slice(&(STUB_GDT_DESC as u16).to_le_bytes());
    code.extend_from_slice(&[0x0f, 0x20, 0xc0]); // mov eax, cr0
    code.extend_from_slice(&[0x66, 0x83, 0xc8, 0x01]); // or eax, 1
    code.extend_from_slice(&[0x0f, 0x22, 0xc0]); // mov cr0, eax
    let far_jump_at = code.len();
    code.extend_from_slice(&[0x66, 0xea, 0, 0, 0, 0]); // o32 jmp far ptr16:32
    code.extend_from_slice(&boot::BOOT_CS.to_le_bytes());
    let pm32 = MULTIBOOT_STUB_ADDR as u32 + code.len() as u32;
    code[far_jump_at + 2..far_jump_at + 6].copy_from_slice(&pm32.to_le_bytes());
    code.push(0xb8); // mov eax, BOOT_DS
    code.extend_from_slice(&u32::from(boot::BOOT_DS).to_le_bytes());
    for modrm in [0xd8, 0xc0, 0xd0, 0xe0, 0xe8] {
        code.extend_from_slice(&[0x8e, modrm]); // mov ds/es/ss/fs/gs, ax
    }
    code.push(0xbc); // mov esp, imm32
    code.extend_from_slice(&esp.to_le_bytes());
    code.push(0xbb); // mov ebx, imm32
    code.extend_from_slice(&info.to_le_bytes());
    code.push(0xb8); // mov eax, imm32
    code.extend_from_slice(&multiboot::BOOTLOADER_MAGIC.to_le_bytes());
    code.push(0x68); // push imm32
    code.extend_from_slice(&eip.to_le_bytes());
    code.push(0xc3); // ret
    code
}

/// Writes the real-mode IVT (every vector to an IRET; IRQ vectors to handlers that send the
/// 8259A an EOI, as a BIOS's do), the handlers, the entry stub and its GDT pointer.
fn write_multiboot_stub<M: GuestMemoryBackend>(memory: &M, loaded: &LoadedLinux) -> Result<()> {
    let LinuxEntry::Multiboot { eip, esp } = loaded.entry else {
        return Ok(());
    };
    let info = u32::try_from(loaded.boot_info_addr).unwrap_or(u32::MAX);
    let mut ivt = Vec::with_capacity(1024);
    for vector in 0..256u64 {
        let handler = match vector {
            0x08..=0x0f => STUB_IRQ_MASTER,
            0x70..=0x77 => STUB_IRQ_SLAVE,
            _ => STUB_IRET,
        };
        ivt.extend_from_slice(&(handler as u16).to_le_bytes());
        ivt.extend_from_slice(&0u16.to_le_bytes());
    }
    write_bytes(memory, "multiboot real-mode IVT", 0, &ivt)?;
    // push ax; mov al, 0x20; out 0x20, al; pop ax; iret — and the slave's, EOI to both.
    let master = [0x50, 0xb0, 0x20, 0xe6, 0x20, 0x58, 0xcf];
    let slave = [0x50, 0xb0, 0x20, 0xe6, 0xa0, 0xe6, 0x20, 0x58, 0xcf];
    write_bytes(memory, "multiboot IRQ handler", STUB_IRQ_MASTER, &master)?;
    write_bytes(memory, "multiboot IRQ handler", STUB_IRQ_SLAVE, &slave)?;
    write_bytes(memory, "multiboot IRQ handler", STUB_IRET, &[0xcf])?;
    let gdt_limit = (boot::protected_mode_gdt(0).len() * 8 - 1) as u16;
    let mut descriptor = gdt_limit.to_le_bytes().to_vec();
    descriptor.extend_from_slice(&(boot::BOOT_GDT_ADDR as u32).to_le_bytes());
    write_bytes(memory, "multiboot GDT pointer", STUB_GDT_DESC, &descriptor)?;
    let stub = multiboot_stub(eip, esp, info);
    write_bytes(memory, "multiboot entry stub", MULTIBOOT_STUB_ADDR, &stub)
}

/// Loads a multiboot kernel as QEMU's multiboot loader and option ROM do: the segments (bss
/// zeroed), the memory map, module list, command lines and modules, the information, and the
/// flat 32-bit GDT for the protected-mode entry.
pub(super) fn load_multiboot<M: GuestMemoryBackend>(
    memory: &M,
    layout: &MemoryLayout,
    boot: &LinuxBoot,
    kernel: &MultibootKernel,
) -> Result<LoadedLinux> {
    let loaded = boot.plan(layout)?;
    let plan = boot.multiboot_plan(kernel, layout)?;
    let modules = boot.multiboot_modules();
    plan.write(&boot.kernel, &modules, |what, addr, bytes| {
        write_bytes(memory, what, addr, bytes)
    })?;
    boot::write_protected_mode_tables(memory)?;
    write_multiboot_stub(memory, &loaded)?;
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_multiboot_stub_fits_below_its_handlers_and_ends_in_the_jump_to_the_kernel() {
        let stub = multiboot_stub(0x40_00bc, 0x107_0000, 0x9500);
        assert!(MULTIBOOT_STUB_ADDR + stub.len() as u64 <= STUB_IRQ_MASTER);
        let tail = &stub[stub.len() - 16..];
        // mov ebx, info; mov eax, 0x2BADB002; push eip; ret
        assert_eq!(tail[0], 0xbb);
        assert_eq!(&tail[1..5], &0x9500u32.to_le_bytes());
        assert_eq!(tail[5], 0xb8);
        assert_eq!(&tail[6..10], &0x2bad_b002u32.to_le_bytes());
        assert_eq!(tail[10], 0x68);
        assert_eq!(&tail[11..15], &0x40_00bcu32.to_le_bytes());
        assert_eq!(tail[15], 0xc3);
    }
}
