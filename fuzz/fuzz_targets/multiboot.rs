//! The multiboot (v1) loader: header search, ELF32 / a.out-kludge parsing, the load plan
//! against a pc-like memory map with modules, and the writes the plan makes, which must all
//! land in usable RAM and never outside it. Also QEMU's `-initrd` module-list splitting.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vmkit_kernel::multiboot::{
    module_path, split_modules, MemoryRegion, Module, MultibootKernel, PlanConfig,
};

const RAM: u64 = 32 << 20;

const MEMORY_MAP: [MemoryRegion; 3] = [
    MemoryRegion {
        addr: 0,
        size: 0x9_fc00,
        kind: 1,
    },
    MemoryRegion {
        addr: 0x9_fc00,
        size: 0x400,
        kind: 2,
    },
    MemoryRegion {
        addr: 0x10_0000,
        size: RAM - 0x10_0000,
        kind: 1,
    },
];

// Byte 0: the number of modules (bits 0-1) and the command line (bit 2); byte 1: each
// module's size in 64-byte units; then the modules' bytes, taken from the end, and the image.
fuzz_target!(|data: &[u8]| {
    let [flags, unit, rest @ ..] = data else {
        return;
    };
    let count = usize::from(flags & 3);
    let module_len = usize::from(*unit) * 64;
    let split = rest.len().saturating_sub(count * module_len);
    let (image, module_bytes) = rest.split_at(split);
    if let Ok(text) = std::str::from_utf8(module_bytes) {
        for item in split_modules(text) {
            assert!(item.starts_with(module_path(&item)));
        }
    }
    let Ok(Some(kernel)) = MultibootKernel::parse(image) else {
        return;
    };
    let (low, high) = kernel.span();
    assert!(low <= high);
    let modules: Vec<Module<'_>> = if module_len == 0 {
        vec![
            Module {
                cmdline: "empty",
                data: &[]
            };
            count
        ]
    } else {
        module_bytes
            .chunks(module_len)
            .map(|data| Module {
                cmdline: "mod.bin arg=1",
                data,
            })
            .collect()
    };
    let cmdline = if flags & 4 == 0 {
        "kernel.elf".to_string()
    } else {
        format!("kernel.elf {}", "x".repeat(5000))
    };
    let reserved = [(0u64, 0x1000u64)];
    let Ok(plan) = kernel.plan(&PlanConfig {
        cmdline: &cmdline,
        modules: &modules,
        memory_map: &MEMORY_MAP,
        reserved: &reserved,
    }) else {
        return;
    };
    assert_eq!(plan.modules.len(), modules.len());
    let result = plan.write(image, &modules, |what, addr, bytes| {
        let end = addr.checked_add(bytes.len() as u64).ok_or(what)?;
        let usable = MEMORY_MAP
            .iter()
            .any(|r| r.kind == 1 && addr >= r.addr && end <= r.addr + r.size);
        if bytes.is_empty() || usable {
            Ok(())
        } else {
            Err(what)
        }
    });
    if let Err(what) = result {
        panic!("the plan writes the {what} outside usable RAM");
    }
});
