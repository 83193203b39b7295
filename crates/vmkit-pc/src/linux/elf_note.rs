//! The PVH entry note of an ELF vmlinux (`XEN_ELFNOTE_PHYS32_ENTRY`).

const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PHDR_SIZE: usize = 56;

fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    let b = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], offset: usize) -> Option<u64> {
    let b = bytes.get(offset..offset.checked_add(8)?)?;
    let mut word = [0u8; 8];
    word.copy_from_slice(b);
    Some(u64::from_le_bytes(word))
}

/// The 32-bit PVH entry point of an ELF64 image, if one of its `PT_NOTE` segments carries a
/// "Xen" note of type 18. The image's header and program headers must already be checked.
/// `Err` if a note runs past its segment.
pub fn pvh_entry(image: &[u8]) -> Result<Option<u32>, String> {
    let phoff = u64_at(image, 32).and_then(|v| usize::try_from(v).ok());
    let phnum = image
        .get(56..58)
        .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])));
    let (Some(phoff), Some(phnum)) = (phoff, phnum) else {
        return Ok(None);
    };
    for index in 0..phnum {
        let base = phoff.saturating_add(index.saturating_mul(PHDR_SIZE));
        if u32_at(image, base) != Some(PT_NOTE) {
            continue;
        }
        let offset = u64_at(image, base + 8).and_then(|v| usize::try_from(v).ok());
        let size = u64_at(image, base + 32).and_then(|v| usize::try_from(v).ok());
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

fn find_pvh_note(mut notes: &[u8]) -> Result<Option<u32>, String> {
    let align4 = |n: usize| n.checked_next_multiple_of(4);
    while notes.len() >= 12 {
        let namesz = u32_at(notes, 0).unwrap_or(0) as usize;
        let descsz = u32_at(notes, 4).unwrap_or(0) as usize;
        let kind = u32_at(notes, 8).unwrap_or(0);
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
                4 => u64::from(u32_at(desc, 0).unwrap_or(0)),
                8 => u64_at(desc, 0).unwrap_or(0),
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
