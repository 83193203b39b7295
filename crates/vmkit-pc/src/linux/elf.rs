//! ELF vmlinux images: the checks done before linux-loader copies the segments.

/// The four bytes every ELF file starts with.
pub const ELF_MAGIC: [u8; 4] = *b"\x7fELF";
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// A loadable segment of an ELF image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElfSegment {
    /// Guest-physical address (`p_paddr`).
    pub paddr: u64,
    /// Bytes in memory (`p_memsz`; the part past `p_filesz` is zero-filled).
    pub memsz: u64,
    /// Bytes in the file (`p_filesz`).
    pub filesz: u64,
    /// Where they are in the file.
    pub offset: u64,
}

/// An ELF64 x86-64 image's entry point and loadable segments, checked.
#[derive(Debug, Clone)]
pub struct ElfImage {
    /// `e_entry`.
    pub entry: u64,
    /// The `PT_LOAD` segments with file or memory bytes.
    pub segments: Vec<ElfSegment>,
}

impl ElfImage {
    /// The lowest and one-past-highest guest-physical addresses the segments occupy.
    pub fn span(&self) -> (u64, u64) {
        let start = self.segments.iter().map(|s| s.paddr).min().unwrap_or(0);
        let end = self
            .segments
            .iter()
            .map(|s| s.paddr.saturating_add(s.memsz))
            .max()
            .unwrap_or(0);
        (start, end)
    }
}

/// Whether `image` starts with the ELF magic.
pub fn is_elf(image: &[u8]) -> bool {
    image.starts_with(&ELF_MAGIC)
}

fn field<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    bytes.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// Parses and checks an ELF vmlinux: 64-bit, little-endian, x86-64, program headers and
/// segments inside the file, at least one loadable segment. `Err` holds the reason.
pub fn parse(image: &[u8]) -> Result<ElfImage, String> {
    if image.len() < EHDR_SIZE {
        return Err(format!(
            "truncated ELF file: {} bytes, shorter than the 64-byte ELF64 header",
            image.len()
        ));
    }
    let u16_at = |offset| field::<2>(image, offset).map(u16::from_le_bytes);
    let u32_at = |offset| field::<4>(image, offset).map(u32::from_le_bytes);
    let u64_at = |offset| field::<8>(image, offset).map(u64::from_le_bytes);
    if image.get(4) != Some(&ELFCLASS64) {
        return Err("ELF file is not 64-bit (ELFCLASS64): vmkit boots x86-64 kernels".into());
    }
    if image.get(5) != Some(&ELFDATA2LSB) {
        return Err("ELF file is not little-endian".into());
    }
    let machine = u16_at(18).unwrap_or(0);
    if machine != EM_X86_64 {
        return Err(format!(
            "ELF file is for machine {machine} (e_machine), not x86-64 (62)"
        ));
    }
    let entry = u64_at(24).unwrap_or(0);
    let phoff = u64_at(32).unwrap_or(0);
    let phentsize = usize::from(u16_at(54).unwrap_or(0));
    let phnum = usize::from(u16_at(56).unwrap_or(0));
    if phentsize != PHDR_SIZE {
        return Err(format!(
            "corrupt ELF file: program header entries are {phentsize} bytes (e_phentsize), \
             expected {PHDR_SIZE}"
        ));
    }
    let table_end = usize::try_from(phoff)
        .ok()
        .and_then(|start| start.checked_add(phnum.checked_mul(PHDR_SIZE)?));
    let table_start = usize::try_from(phoff).unwrap_or(usize::MAX);
    match table_end {
        Some(end) if table_start >= EHDR_SIZE && end <= image.len() => {}
        _ => {
            return Err(format!(
                "truncated or corrupt ELF file: {phnum} program headers at offset {phoff:#x} \
                 do not lie within the {:#x}-byte file",
                image.len()
            ))
        }
    }
    let mut segments = Vec::new();
    for index in 0..phnum {
        let base = table_start + index * PHDR_SIZE;
        if u32_at(base) != Some(PT_LOAD) {
            continue;
        }
        let segment = ElfSegment {
            offset: u64_at(base + 8).unwrap_or(0),
            paddr: u64_at(base + 24).unwrap_or(0),
            filesz: u64_at(base + 32).unwrap_or(0),
            memsz: u64_at(base + 40).unwrap_or(0),
        };
        let file_end = segment.offset.checked_add(segment.filesz);
        if file_end.is_none_or(|end| end > image.len() as u64) {
            return Err(format!(
                "truncated ELF file: segment {index} needs file bytes [{:#x}, +{:#x}) but the \
                 file is {:#x} bytes",
                segment.offset,
                segment.filesz,
                image.len()
            ));
        }
        if segment.filesz > segment.memsz || segment.paddr.checked_add(segment.memsz).is_none() {
            return Err(format!(
                "corrupt ELF file: segment {index} at {:#x} has p_filesz {:#x} above p_memsz \
                 {:#x} or wraps the address space",
                segment.paddr, segment.filesz, segment.memsz
            ));
        }
        if segment.memsz > 0 {
            segments.push(segment);
        }
    }
    if segments.is_empty() {
        return Err("ELF file has no loadable (PT_LOAD) segment".into());
    }
    Ok(ElfImage { entry, segments })
}
