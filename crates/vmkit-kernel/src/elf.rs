//! The little of the ELF header a loader needs to sanity-check a decompressed vmlinux.

use crate::payload::ELF_MAGIC;
use crate::{Error, Result};

/// `e_machine` of x86-64.
const EM_X86_64: u16 = 62;

/// What the ELF header of a vmlinux says.
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
        if !elf.starts_with(&ELF_MAGIC) {
            return Err(Error::BadElf("missing the \\x7fELF magic"));
        }
        if elf.get(4) != Some(&2) {
            return Err(Error::BadElf("not a 64-bit ELF (EI_CLASS != ELFCLASS64)"));
        }
        if elf.get(5) != Some(&1) {
            return Err(Error::BadElf("not little-endian (EI_DATA != ELFDATA2LSB)"));
        }
        let machine = u16::from_le_bytes(bytes_at(elf, 0x12)?);
        if machine != EM_X86_64 {
            return Err(Error::BadElf("e_machine is not x86-64"));
        }
        Ok(VmlinuxInfo {
            entry: u64::from_le_bytes(bytes_at(elf, 0x18)?),
            program_headers: u16::from_le_bytes(bytes_at(elf, 0x38)?),
        })
    }
}

fn bytes_at<const N: usize>(elf: &[u8], offset: usize) -> Result<[u8; N]> {
    elf.get(offset..offset.saturating_add(N))
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(Error::BadElf("truncated ELF header"))
}
