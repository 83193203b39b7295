//! The bzImage setup header: reading it and checking it against the x86 boot protocol.

use linux_loader::loader::bootparam::setup_header;
use vm_memory::ByteValued;
use vmkit_kernel::header::PAYLOAD_VERSION;
use vmkit_kernel::{Error as KernelError, SetupHeader};

/// Offset of the setup header in the image (and in the zero page).
pub const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// "HdrS", the setup header's magic number (at offset 0x202).
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// The boot sector signature at offset 0x1fe.
pub const BOOT_FLAG: u16 = 0xaa55;
/// The oldest boot protocol vmkit loads: 2.06 (`cmdline_size` exists).
pub const MIN_PROTOCOL: u16 = 0x0206;
/// `loadflags` bit 0: the protected-mode code is loaded at 1 MiB (a bzImage, not a zImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags` bit 0: the kernel has the 64-bit entry point at its load address + 0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// The loader id vmkit writes to `type_of_loader`: 0xff, "undefined/other".
pub const TYPE_OF_LOADER: u8 = 0xff;
/// The 64-bit entry point's offset from the load address (`startup_64`).
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// Where a kernel without `pref_address` (protocol before 2.10) is loaded: 1 MiB.
pub const DEFAULT_LOAD_ADDRESS: u64 = 0x10_0000;
/// `initrd_addr_max` of kernels that do not give one (boot protocol: before 2.03).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// What vmkit needs from a bzImage's setup header, checked.
#[derive(Debug, Clone, Copy)]
pub struct BzImageHeader {
    /// The setup header as found in the file (only the bytes up to its end; the rest zero).
    pub raw: setup_header,
    /// Boot protocol version (e.g. 0x020f for 2.15).
    pub version: u16,
    /// Bytes of real-mode setup code before the protected-mode kernel (boot sector included).
    pub setup_size: usize,
    /// Bytes of the protected-mode kernel (`syssize` × 16).
    pub kernel_size: usize,
    /// Guest-physical address the protected-mode kernel is loaded at.
    pub load_address: u64,
    /// Bytes of memory the kernel needs from its load address to run its decompressor
    /// (`init_size`, at least the protected-mode kernel's size).
    pub init_size: u64,
    /// Whether the 64-bit entry point exists.
    pub has_64bit_entry: bool,
    /// The longest command line accepted (bytes, without the NUL).
    pub cmdline_limit: u64,
    /// The highest address (inclusive) the initrd may occupy.
    pub initrd_addr_max: u64,
}

/// Reads and checks the setup header of `image` (fields through vmkit-kernel's
/// [`SetupHeader`], which checks `boot_flag`, "HdrS" and the protocol version); `Err` holds a
/// reason naming the field and the values involved.
pub fn parse(image: &[u8]) -> Result<BzImageHeader, String> {
    let header = SetupHeader::parse(image).map_err(|e| match e {
        KernelError::Truncated { .. }
        | KernelError::BadBootFlag { .. }
        | KernelError::BadHeaderMagic { .. } => {
            format!("{e}; nor is it an ELF vmlinux (no ELF magic at offset 0)")
        }
        other => other.to_string(),
    })?;
    let version = header.version;
    if !header.loaded_high() {
        return Err(
            "a zImage (loadflags LOADED_HIGH is clear): only bzImage kernels, loaded \
                    at 1 MiB and above, are supported"
                .into(),
        );
    }
    let setup_size = usize::try_from(header.kernel_offset()).unwrap_or(usize::MAX);
    let kernel_size = usize::try_from(u64::from(header.syssize) * 16).unwrap_or(usize::MAX);
    let needed = setup_size.saturating_add(kernel_size);
    if image.len() < needed {
        return Err(format!(
            "truncated bzImage: the header gives {setup_size:#x} bytes of setup and \
             {kernel_size:#x} bytes of kernel (syssize), {needed:#x} in all, but the file is \
             {:#x} bytes",
            image.len()
        ));
    }
    if kernel_size == 0 {
        return Err("corrupt bzImage: syssize is 0 (no protected-mode kernel)".into());
    }
    if version >= PAYLOAD_VERSION {
        let payload = header
            .payload_range(image.len())
            .map_err(|e| format!("corrupt bzImage: {e}"))?;
        if payload.end > needed {
            return Err(format!(
                "corrupt bzImage: the compressed payload ends at file offset {:#x}, past the \
                 protected-mode kernel's end at {needed:#x}",
                payload.end
            ));
        }
    }

    // The raw header for the zero page: it ends at 0x202 + the byte at 0x201 (the operand
    // of the short jump at 0x200); bytes after it are setup code, not header fields.
    let header_end = 0x202 + usize::from(image.get(0x201).copied().unwrap_or(0));
    let struct_end = SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>();
    let bytes = image
        .get(SETUP_HEADER_OFFSET..header_end.min(struct_end))
        .unwrap_or_default();
    let mut raw = setup_header::default();
    if let Some(prefix) = raw.as_mut_slice().get_mut(..bytes.len()) {
        prefix.copy_from_slice(bytes);
    }

    let relocatable = version >= 0x0205 && header.relocatable_kernel;
    let alignment = u64::from(header.kernel_alignment);
    if relocatable && !alignment.is_power_of_two() {
        return Err(format!(
            "corrupt bzImage: kernel_alignment {alignment:#x} is not a power of two"
        ));
    }
    // Protocol 2.10+ gives pref_address; a relocatable kernel may go anywhere aligned, and
    // vmkit keeps its preferred address (aligned up), where its decompressor would move it
    // anyway. Older kernels go to 1 MiB, the classic code32_start.
    let load_address = match header.pref_address {
        preferred if version >= 0x020a && preferred != 0 && relocatable => preferred
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| format!("pref_address {preferred:#x} cannot be aligned"))?,
        preferred if version >= 0x020a && preferred != 0 => preferred,
        _ => DEFAULT_LOAD_ADDRESS,
    };
    if !(DEFAULT_LOAD_ADDRESS..1 << 32).contains(&load_address) {
        return Err(format!(
            "load address {load_address:#x} (pref_address) is not between 1 MiB and 4 GiB"
        ));
    }
    let init_size = if version >= 0x020a {
        u64::from(header.init_size).max(kernel_size as u64)
    } else {
        kernel_size as u64
    };
    let initrd_addr_max = if header.initrd_addr_max != 0 {
        u64::from(header.initrd_addr_max)
    } else {
        DEFAULT_INITRD_ADDR_MAX
    };
    Ok(BzImageHeader {
        raw,
        version,
        setup_size,
        kernel_size,
        load_address,
        init_size,
        has_64bit_entry: header.has_64bit_entry(),
        cmdline_limit: u64::from(header.cmdline_size),
        initrd_addr_max,
    })
}
