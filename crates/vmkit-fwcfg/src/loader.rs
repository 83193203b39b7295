//! A builder for QEMU's `etc/table-loader` file (the BIOS linker/loader interface).
//!
//! The file is a sequence of 128-byte little-endian commands that firmware (SeaBIOS'
//! `romfile_loader.c`, OVMF's `QemuFwCfgAcpi`) executes in order:
//!
//! | command | value | fields after the `u32` command |
//! |---|---|---|
//! | ALLOCATE | 1 | `file[56]`, `u32 align`, `u8 zone` (1 HIGH, 2 FSEG) |
//! | ADD_POINTER | 2 | `dest_file[56]`, `src_file[56]`, `u32 offset`, `u8 size` |
//! | ADD_CHECKSUM | 3 | `file[56]`, `u32 offset`, `u32 start`, `u32 length` |
//!
//! The rest of each entry is zero. File names are NUL-padded in their 56-byte fields.
//!
//! ADD_POINTER makes the firmware add the address it allocated `src_file` at to the
//! `size`-byte little-endian value at `offset` in `dest_file`; that value must already hold
//! the offset into `src_file` (QEMU's `bios_linker_loader_add_pointer` patches it into the
//! blob; here the caller builds the blob that way). ADD_CHECKSUM makes the firmware set the
//! byte at `offset` so that bytes `start..start + length` sum to 0.
//!
//! As in QEMU, a file must be allocated before a command names it, and offsets must lie
//! inside the file when its size was given to [`TableLoader::allocate`]. WRITE_POINTER
//! (command 4, used by vmgenid and the TPM log) is not provided.
use crate::{check_file_name, Error, FW_CFG_MAX_FILE_NAME};

/// Size of one loader command.
pub const LOADER_ENTRY_LEN: usize = 128;
/// `BIOS_LINKER_LOADER_COMMAND_ALLOCATE`.
pub const LOADER_CMD_ALLOCATE: u32 = 1;
/// `BIOS_LINKER_LOADER_COMMAND_ADD_POINTER`.
pub const LOADER_CMD_ADD_POINTER: u32 = 2;
/// `BIOS_LINKER_LOADER_COMMAND_ADD_CHECKSUM`.
pub const LOADER_CMD_ADD_CHECKSUM: u32 = 3;

/// Where the firmware allocates a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocZone {
    /// Anywhere in high memory (`BIOS_LINKER_LOADER_ALLOC_ZONE_HIGH` = 1).
    High = 1,
    /// The F segment, 0xF0000..0x100000, e.g. for the RSDP
    /// (`BIOS_LINKER_LOADER_ALLOC_ZONE_FSEG` = 2).
    Fseg = 2,
}

#[derive(Debug, Clone)]
struct Allocated {
    name: String,
    size: u32,
}

/// Builder of `etc/table-loader` contents (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct TableLoader {
    bytes: Vec<u8>,
    files: Vec<Allocated>,
}

fn put_name(entry: &mut [u8], at: usize, name: &str) {
    entry[at..at + name.len()].copy_from_slice(name.as_bytes());
}

impl TableLoader {
    /// An empty command list.
    pub fn new() -> Self {
        Self::default()
    }

    fn file_size(&self, name: &str) -> Result<u32, Error> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.size)
            .ok_or_else(|| Error::LoaderUnknownFile {
                name: name.to_string(),
            })
    }

    fn check_inside(
        name: &str,
        size: u32,
        field: &'static str,
        start: u64,
        len: u64,
    ) -> Result<(), Error> {
        if start.saturating_add(len) > u64::from(size) {
            return Err(Error::LoaderOutOfFile {
                name: name.to_string(),
                field,
                start,
                len,
                size,
            });
        }
        Ok(())
    }

    /// ALLOCATE: the firmware loads fw_cfg file `file` (which holds `size` bytes) into memory
    /// aligned to `align` (a power of two) in `zone`.
    pub fn allocate(
        &mut self,
        file: &str,
        size: u32,
        align: u32,
        zone: AllocZone,
    ) -> Result<(), Error> {
        check_file_name(file)?;
        if !align.is_power_of_two() {
            return Err(Error::LoaderAlignment {
                name: file.to_string(),
                align,
            });
        }
        if self.files.iter().any(|f| f.name == file) {
            return Err(Error::LoaderDuplicateAllocation {
                name: file.to_string(),
            });
        }
        let mut entry = [0u8; LOADER_ENTRY_LEN];
        entry[0..4].copy_from_slice(&LOADER_CMD_ALLOCATE.to_le_bytes());
        put_name(&mut entry, 4, file);
        entry[60..64].copy_from_slice(&align.to_le_bytes());
        entry[64] = zone as u8;
        self.bytes.extend_from_slice(&entry);
        self.files.push(Allocated {
            name: file.to_string(),
            size,
        });
        Ok(())
    }

    /// ADD_POINTER: add `src_file`'s address to the `size`-byte (1, 2, 4 or 8) field at
    /// `offset` in `dest_file`.
    pub fn add_pointer(
        &mut self,
        dest_file: &str,
        src_file: &str,
        offset: u32,
        size: u8,
    ) -> Result<(), Error> {
        check_file_name(dest_file)?;
        check_file_name(src_file)?;
        if !matches!(size, 1 | 2 | 4 | 8) {
            return Err(Error::LoaderPointerSize {
                name: dest_file.to_string(),
                size,
            });
        }
        let dest_size = self.file_size(dest_file)?;
        self.file_size(src_file)?;
        Self::check_inside(dest_file, dest_size, "pointer", offset.into(), size.into())?;
        let mut entry = [0u8; LOADER_ENTRY_LEN];
        entry[0..4].copy_from_slice(&LOADER_CMD_ADD_POINTER.to_le_bytes());
        put_name(&mut entry, 4, dest_file);
        put_name(&mut entry, 60, src_file);
        entry[116..120].copy_from_slice(&offset.to_le_bytes());
        entry[120] = size;
        self.bytes.extend_from_slice(&entry);
        Ok(())
    }

    /// ADD_CHECKSUM: set the byte at `offset` in `file` so `start..start + len` sums to 0.
    pub fn add_checksum(
        &mut self,
        file: &str,
        offset: u32,
        start: u32,
        len: u32,
    ) -> Result<(), Error> {
        check_file_name(file)?;
        let size = self.file_size(file)?;
        Self::check_inside(file, size, "checksum byte", offset.into(), 1)?;
        Self::check_inside(file, size, "checksummed range", start.into(), len.into())?;
        let mut entry = [0u8; LOADER_ENTRY_LEN];
        entry[0..4].copy_from_slice(&LOADER_CMD_ADD_CHECKSUM.to_le_bytes());
        put_name(&mut entry, 4, file);
        entry[60..64].copy_from_slice(&offset.to_le_bytes());
        entry[64..68].copy_from_slice(&start.to_le_bytes());
        entry[68..72].copy_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(&entry);
        Ok(())
    }

    /// Number of commands so far.
    pub fn len(&self) -> usize {
        self.bytes.len() / LOADER_ENTRY_LEN
    }

    /// Whether no command was added.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The file contents: all commands, in order.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }
}

const _: () = assert!(FW_CFG_MAX_FILE_NAME + 1 == 56);

#[cfg(test)]
mod tests {
    use super::*;

    fn name_field(name: &str) -> [u8; 56] {
        let mut f = [0u8; 56];
        f[..name.len()].copy_from_slice(name.as_bytes());
        f
    }

    #[test]
    fn allocate_entry_bytes() {
        let mut l = TableLoader::new();
        l.allocate("etc/acpi/rsdp", 36, 16, AllocZone::Fseg)
            .unwrap();
        l.allocate("etc/acpi/tables", 0x1000, 64, AllocZone::High)
            .unwrap();
        let b = l.to_bytes();
        assert_eq!(b.len(), 256);
        let mut want = vec![1, 0, 0, 0];
        want.extend_from_slice(&name_field("etc/acpi/rsdp"));
        want.extend_from_slice(&[16, 0, 0, 0, 2]);
        want.resize(128, 0);
        assert_eq!(&b[..128], &want[..]);
        assert_eq!(&b[128..132], &[1, 0, 0, 0]);
        assert_eq!(&b[132..188], &name_field("etc/acpi/tables"));
        assert_eq!(&b[188..192], &[64, 0, 0, 0]);
        assert_eq!(b[192], 1);
        assert!(b[193..].iter().all(|&x| x == 0));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn add_pointer_entry_bytes() {
        let mut l = TableLoader::new();
        l.allocate("etc/acpi/rsdp", 36, 16, AllocZone::Fseg)
            .unwrap();
        l.allocate("etc/acpi/tables", 0x100, 64, AllocZone::High)
            .unwrap();
        l.add_pointer("etc/acpi/rsdp", "etc/acpi/tables", 0x18, 8)
            .unwrap();
        let b = &l.to_bytes()[256..];
        let mut want = vec![2, 0, 0, 0];
        want.extend_from_slice(&name_field("etc/acpi/rsdp"));
        want.extend_from_slice(&name_field("etc/acpi/tables"));
        want.extend_from_slice(&[0x18, 0, 0, 0, 8]);
        want.resize(128, 0);
        assert_eq!(b, &want[..]);
    }

    #[test]
    fn add_checksum_entry_bytes() {
        let mut l = TableLoader::new();
        l.allocate("etc/acpi/tables", 0x100, 64, AllocZone::High)
            .unwrap();
        l.add_checksum("etc/acpi/tables", 0x49, 0x40, 0x24).unwrap();
        let b = &l.to_bytes()[128..];
        let mut want = vec![3, 0, 0, 0];
        want.extend_from_slice(&name_field("etc/acpi/tables"));
        want.extend_from_slice(&[0x49, 0, 0, 0, 0x40, 0, 0, 0, 0x24, 0, 0, 0]);
        want.resize(128, 0);
        assert_eq!(b, &want[..]);
    }

    #[test]
    fn errors_name_the_problem() {
        let mut l = TableLoader::new();
        let long = "x".repeat(56);
        let e = l.allocate(&long, 1, 1, AllocZone::High).unwrap_err();
        assert!(
            matches!(
                e,
                Error::FileNameTooLong {
                    len: 56,
                    max: 55,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("55"));
        let e = l.allocate("a", 1, 3, AllocZone::High).unwrap_err();
        assert!(matches!(e, Error::LoaderAlignment { align: 3, .. }), "{e}");
        l.allocate("a", 16, 4, AllocZone::High).unwrap();
        let e = l.allocate("a", 16, 4, AllocZone::High).unwrap_err();
        assert!(matches!(e, Error::LoaderDuplicateAllocation { .. }), "{e}");
        let e = l.add_pointer("a", "b", 0, 4).unwrap_err();
        assert!(e.to_string().contains("\"b\""), "{e}");
        let e = l.add_pointer("a", "a", 0, 3).unwrap_err();
        assert!(matches!(e, Error::LoaderPointerSize { size: 3, .. }), "{e}");
        let e = l.add_pointer("a", "a", 12, 8).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LoaderOutOfFile {
                    start: 12,
                    len: 8,
                    size: 16,
                    ..
                }
            ),
            "{e}"
        );
        l.add_pointer("a", "a", 8, 8).unwrap();
        let e = l.add_checksum("a", 16, 0, 16).unwrap_err();
        assert!(matches!(e, Error::LoaderOutOfFile { .. }), "{e}");
        let e = l.add_checksum("a", 0, 8, 9).unwrap_err();
        assert!(matches!(e, Error::LoaderOutOfFile { .. }), "{e}");
        l.add_checksum("a", 15, 0, 16).unwrap();
        assert_eq!(l.len(), 3, "failed commands add nothing");
    }
}
