//! Copying a planned kernel, initrd, command line and boot parameters into guest memory.

use super::pvh::write_pvh_start_info;
use super::*;

pub(super) fn write_bytes<M: GuestMemoryBackend>(
    memory: &M,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<()> {
    memory
        .write_slice(bytes, GuestAddress(addr))
        .map_err(|source| Error::GuestMemory { what, addr, source })
}

/// Loads `boot` into `memory` as [`LinuxBoot::plan`] places it for `layout`: the kernel
/// (through linux-loader's `BzImage`/`Elf` loaders), the initrd, the command line, the zero
/// page or PVH start info, and the boot GDT/IDT/TSS and page tables the entry needs. Returns
/// the plan, whose [`regs`](LoadedLinux::regs)/[`sregs`](LoadedLinux::sregs) start the
/// kernel.
pub fn load_linux<M: GuestMemoryBackend>(
    memory: &M,
    layout: &MemoryLayout,
    boot: &LinuxBoot,
) -> Result<LoadedLinux> {
    if let Image::Multiboot(kernel) = &boot.image {
        return load_multiboot(memory, layout, boot, kernel);
    }
    let plan = boot.plan(layout)?;
    let loader_error = |e: linux_loader::loader::Error| Error::KernelImage {
        path: boot.kernel_path.clone(),
        reason: format!("linux-loader refused it: {e}"),
    };
    let high_memory = Some(GuestAddress(HIGH_MEMORY_START));
    match &boot.image {
        Image::BzImage(header) => {
            // Only the setup and protected-mode parts: anything after them (e.g. a signature)
            // is not the kernel's.
            let image = boot
                .kernel
                .get(..header.setup_size + header.kernel_size)
                .unwrap_or(&boot.kernel);
            BzImage::load(
                memory,
                Some(GuestAddress(plan.kernel_start)),
                &mut Cursor::new(image),
                high_memory,
            )
            .map_err(loader_error)?;
        }
        Image::Multiboot(_) => {}
        Image::Elf { elf, .. } => {
            Elf::load(memory, None, &mut Cursor::new(&*boot.kernel), high_memory)
                .map_err(loader_error)?;
            // linux-loader copies p_filesz bytes; the rest of each segment is zero (again,
            // after a reset).
            for segment in &elf.segments {
                let tail = segment.memsz - segment.filesz;
                if tail > 0 {
                    let zeros = vec![0u8; usize::try_from(tail).unwrap_or(0)];
                    write_bytes(memory, "kernel BSS", segment.paddr + segment.filesz, &zeros)?;
                }
            }
        }
    }
    if let (Some((addr, _)), Some((_, bytes))) = (plan.initrd, &boot.initrd) {
        write_bytes(memory, "initrd", addr, bytes)?;
    }
    let mut cmdline = boot.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    write_bytes(memory, "kernel command line", plan.cmdline_addr, &cmdline)?;

    let e820 = layout.e820();
    match plan.entry {
        LinuxEntry::Long64 { .. } | LinuxEntry::Protected32 { .. } => {
            let params = boot.zero_page(&plan, &e820)?;
            write_bytes(
                memory,
                "zero page",
                ZERO_PAGE_ADDR,
                &[0; ZERO_PAGE_SIZE as usize],
            )?;
            LinuxBootConfigurator::write_bootparams(
                &BootParams::new(&params, GuestAddress(ZERO_PAGE_ADDR)),
                memory,
            )
            .map_err(|e| Error::Config(format!("cannot write the zero page: {e}")))?;
        }
        LinuxEntry::Pvh { .. } => write_pvh_start_info(memory, &plan, &e820)?,
        LinuxEntry::Multiboot { .. } => {}
    }
    match plan.entry {
        LinuxEntry::Long64 { .. } => {
            boot::write_long_mode_tables(memory, &IdentityMap::default())?;
        }
        LinuxEntry::Protected32 { .. } | LinuxEntry::Pvh { .. } | LinuxEntry::Multiboot { .. } => {
            boot::write_protected_mode_tables(memory)?;
        }
    }
    Ok(plan)
}
