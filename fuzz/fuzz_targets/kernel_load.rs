//! The pc machine's kernel loading: bzImage / ELF (with its PVH note) checks, the load plan
//! for a 32 MiB machine, and the load itself into guest memory (linux-loader underneath).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmkit_pc::linux::{load_linux, KernelDecompress, LinuxBoot};
use vmkit_pc::MemoryLayout;

const RAM: u64 = 32 << 20;

// The first byte picks host decompression (bit 0) and a command line (bits 1-2); the rest
// is the image.
fuzz_target!(|data: &[u8]| {
    let Some((&flags, image)) = data.split_first() else {
        return;
    };
    let decompress = if flags & 1 == 1 {
        KernelDecompress::Host
    } else {
        KernelDecompress::Guest
    };
    let cmdline = match (flags >> 1) & 3 {
        0 => String::new(),
        1 => "console=ttyS0 panic=-1".to_owned(),
        2 => "x".repeat(4096),
        _ => "x".repeat(300_000),
    };
    let Ok(boot) = LinuxBoot::new("fuzz.img", image.to_vec(), cmdline, decompress) else {
        return;
    };
    let _ = (boot.format(), boot.boot_protocol(), boot.cmdline_limit());
    let layout = MemoryLayout::new(RAM).unwrap();
    if boot.plan(&layout).is_err() {
        return;
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let _ = load_linux(&mem, &layout, &boot);
});
