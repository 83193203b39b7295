//! ELF64 x86-64 images (a vmlinux, or a kernel with a PVH note): the header, the loadable
//! segments and the PVH entry note, checked before a loader (linux-loader's `Elf`) copies
//! the segments. One parser for the workspace: vmkit-pc's `-kernel` uses it too.

use crate::payload::ELF_MAGIC;
use crate::{Error, Result};

const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

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
    /// Parses and checks an ELF vmlinux: see [`parse`].
    pub fn parse(image: &[u8]) -> Result<Self> {
        parse(image)
    }

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
pub fn parse(image: &[u8]) -> Result<ElfImage> {
    parse_segments(image).map_err(Error::Elf)
}

fn parse_segments(image: &[u8]) -> std::result::Result<ElfImage, String> {
    let header = parse_header(image)?;
    let u32_at = |offset| field::<4>(image, offset).map(u32::from_le_bytes);
    let u64_at = |offset| field::<8>(image, offset).map(u64::from_le_bytes);
    let ElfHeader {
        entry,
        phoff,
        phentsize,
        phnum,
    } = header;
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

/// The fields of an ELF64 header a loader uses.
#[derive(Debug, Clone, Copy)]
struct ElfHeader {
    entry: u64,
    phoff: u64,
    phentsize: usize,
    phnum: usize,
}

/// Checks the ELF identification and machine (64-bit, little-endian, x86-64) and reads the
/// entry point and program header table location.
fn parse_header(image: &[u8]) -> std::result::Result<ElfHeader, String> {
    if !is_elf(image) {
        return Err("not an ELF file: missing the \\x7fELF magic".into());
    }
    if image.len() < EHDR_SIZE {
        return Err(format!(
            "truncated ELF file: {} bytes, shorter than the 64-byte ELF64 header",
            image.len()
        ));
    }
    let u16_at = |offset| field::<2>(image, offset).map(u16::from_le_bytes);
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
    Ok(ElfHeader {
        entry,
        phoff,
        phentsize,
        phnum,
    })
}

/// What the ELF header of a vmlinux says (the header alone; [`ElfImage::parse`] also
/// checks the program headers and segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmlinuxInfo {
    /// `e_entry`: the (virtual or physical, as linked) 64-bit entry point.
    pub entry: u64,
    /// `e_phnum`: number of program headers (the loadable segments).
    pub program_headers: u16,
}

impl VmlinuxInfo {
    /// Reads the ELF header of a 64-bit little-endian x86-64 vmlinux.
    pub fn parse(elf: &[u8]) -> Result<Self> {
        let header = parse_header(elf).map_err(Error::Elf)?;
        Ok(VmlinuxInfo {
            entry: header.entry,
            program_headers: u16::try_from(header.phnum).unwrap_or(u16::MAX),
        })
    }
}

fn note_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    field::<4>(bytes, offset).map(u32::from_le_bytes)
}

fn note_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    field::<8>(bytes, offset).map(u64::from_le_bytes)
}

/// The 32-bit PVH entry point of an ELF64 image, if one of its `PT_NOTE` segments carries a
/// "Xen" note of type 18. The image's header and program headers must already be checked.
/// `Err` if a note runs past its segment.
pub fn pvh_entry(image: &[u8]) -> Result<Option<u32>> {
    find_pvh_entry(image).map_err(Error::Elf)
}

fn find_pvh_entry(image: &[u8]) -> std::result::Result<Option<u32>, String> {
    let phoff = note_u64(image, 32).and_then(|v| usize::try_from(v).ok());
    let phnum = image
        .get(56..58)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let (Some(phoff), Some(phnum)) = (phoff, phnum) else {
        return Ok(None);
    };
    for index in 0..phnum {
        let base = phoff.saturating_add(index.saturating_mul(PHDR_SIZE));
        if note_u32(image, base) != Some(PT_NOTE) {
            continue;
        }
        let offset = note_u64(image, base + 8).and_then(|v| usize::try_from(v).ok());
        let size = note_u64(image, base + 32).and_then(|v| usize::try_from(v).ok());
        let notes = offset
            .zip(size)
            .and_then(|(offset, size)| image.get(offset..offset.checked_add(size)?))
            .ok_or_else(|| format!("truncated ELF file: note segment {index} lies past the end"))?;
        if let Some(entry) = find_pvh_note(notes)
            .map_err(|why| format!("corrupt ELF note in segment {index}: {why}"))?
        {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

fn find_pvh_note(mut notes: &[u8]) -> std::result::Result<Option<u32>, String> {
    let align4 = |n: usize| n.checked_next_multiple_of(4);
    while notes.len() >= 12 {
        let namesz = note_u32(notes, 0).unwrap_or(0) as usize;
        let descsz = note_u32(notes, 4).unwrap_or(0) as usize;
        let kind = note_u32(notes, 8).unwrap_or(0);
        let name_end = align4(namesz).and_then(|n| n.checked_add(12));
        let desc_end = name_end.and_then(|end| end.checked_add(align4(descsz)?));
        let (Some(name_end), Some(desc_end)) = (name_end, desc_end) else {
            return Err("note sizes overflow".into());
        };
        let name = notes.get(12..12 + namesz);
        let desc = notes.get(name_end..name_end + descsz);
        let (Some(name), Some(desc)) = (name, desc) else {
            return Err(format!(
                "a note with a {namesz}-byte name and a {descsz}-byte descriptor runs past the \
                 note segment"
            ));
        };
        if name == b"Xen\0" && kind == XEN_ELFNOTE_PHYS32_ENTRY {
            // The descriptor is the entry address, 4 or 8 bytes wide; the entry runs in
            // 32-bit mode, so it must lie below 4 GiB.
            let entry = match descsz {
                4 => u64::from(note_u32(desc, 0).unwrap_or(0)),
                8 => note_u64(desc, 0).unwrap_or(0),
                _ => return Err(format!("PVH entry note has a {descsz}-byte descriptor")),
            };
            return u32::try_from(entry)
                .map(Some)
                .map_err(|_| format!("PVH entry {entry:#x} is not below 4 GiB"));
        }
        notes = notes.get(desc_end..).unwrap_or(&[]);
    }
    Ok(None)
}
