//! The fw_cfg device model: items, file directory, I/O registers and DMA.
//!
//! Register layout relative to the base port (0x510 on x86):
//!
//! | offset | width | access | register |
//! |---|---|---|---|
//! | 0 | 2 | write | selector, little-endian; a 16-bit write selects an item and rewinds it |
//! | 0, 1 | 1 | read | data: the next byte of the selected item, 0 past its end |
//! | 0, 1 | 1 | write | data writes: ignored (QEMU ≥ 2.4) |
//! | 4..12 | 4 or 8 | write | DMA address, big-endian: high half at 4, low half at 8 (triggers), or all 8 bytes at 4 (triggers) |
//! | 4..12 | any | read | the DMA signature `"QEMU CFG"` |
//!
//! As in QEMU's x86 "combined" control/data region, any 1-byte read of offset 0 or 1 returns a
//! data byte and any 1-byte write there is a (discarded) data write. Reads wider than a byte
//! stream that many data bytes. Offsets 2, 3 and beyond 12 are not decoded: reads return 0xFF,
//! writes are ignored.
//!
//! # DMA
//!
//! Writing the DMA address makes the device read a `FWCfgDmaAccess` descriptor (big-endian
//! `u32 control`, `u32 length`, `u64 address`) from guest memory at that address and execute
//! it: `SELECT` (selector in bits 31..16) first, then one of `READ` (copy item bytes, zero-fill
//! past the end), `WRITE` (refused: no item is writable, the result is `ERROR`) or `SKIP`
//! (advance the offset only). The control word is then written back as 0, or `ERROR`.
//!
//! Every guest access is checked before it is made: a descriptor that is not entirely inside
//! guest RAM, a buffer whose `address + length` wraps the 64-bit space or leaves RAM, or a
//! length above [`FwCfg::max_dma_len`] make the transfer fail with `ERROR` *without writing
//! any byte of the buffer* (QEMU copies the part that fits first; failing early is stricter
//! and never observable by a correct guest). The work a transfer does is bounded by its
//! length, which the descriptor format caps at `u32::MAX`.
use std::collections::BTreeMap;

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemory, Permissions};

use crate::{
    Error, FW_CFG_ARCH_LOCAL, FW_CFG_BOOT_MENU, FW_CFG_CMDLINE_ADDR, FW_CFG_CMDLINE_DATA,
    FW_CFG_CMDLINE_SIZE, FW_CFG_DMA_CTL_ERROR, FW_CFG_DMA_CTL_READ, FW_CFG_DMA_CTL_SELECT,
    FW_CFG_DMA_CTL_SKIP, FW_CFG_DMA_CTL_WRITE, FW_CFG_DMA_SIGNATURE, FW_CFG_FILE_DIR,
    FW_CFG_FILE_FIRST, FW_CFG_ID, FW_CFG_INITRD_ADDR, FW_CFG_INITRD_DATA, FW_CFG_INITRD_SIZE,
    FW_CFG_IO_BASE, FW_CFG_KERNEL_ADDR, FW_CFG_KERNEL_DATA, FW_CFG_KERNEL_ENTRY,
    FW_CFG_KERNEL_SIZE, FW_CFG_MAX_CPUS, FW_CFG_MAX_FILES, FW_CFG_NB_CPUS, FW_CFG_NOGRAPHIC,
    FW_CFG_RAM_SIZE, FW_CFG_SETUP_ADDR, FW_CFG_SETUP_DATA, FW_CFG_SETUP_SIZE, FW_CFG_SIGNATURE,
    FW_CFG_UUID, FW_CFG_VERSION, FW_CFG_VERSION_DMA, FW_CFG_WRITE_CHANNEL,
};

/// Offset of the DMA address register from the base port.
const DMA_OFFSET: u64 = 4;
/// Size of a `FWCfgDmaAccess` descriptor.
const DMA_DESCRIPTOR_LEN: usize = 16;
/// Size of one file directory entry.
const DIR_ENTRY_LEN: usize = 64;

/// One `etc/e820` entry: `{ u64 address; u64 length; u32 type }`, packed little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Start of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub len: u64,
    /// E820 type: 1 RAM, 2 reserved, 3 ACPI, 4 NVS, 5 unusable.
    pub kind: u32,
}

impl From<(u64, u64, u32)> for E820Entry {
    fn from((addr, len, kind): (u64, u64, u32)) -> Self {
        Self { addr, len, kind }
    }
}

/// What QEMU's x86 Linux loader (`x86_load_linux`) puts in fw_cfg for the `linuxboot_dma`
/// option ROM (or, with `entry`, the PVH one).
///
/// The machine splits the bzImage itself: `setup` is the real-mode part (boot sector and
/// setup sectors, header already patched: `cmd_line_ptr`, `ramdisk_image`, ...), `kernel`
/// the protected-mode part; the addresses are where the option ROM copies each blob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinuxBoot {
    /// Load address of the real-mode setup code (`FW_CFG_SETUP_ADDR`).
    pub setup_addr: u32,
    /// Real-mode setup code (`FW_CFG_SETUP_DATA`, its length is `FW_CFG_SETUP_SIZE`).
    pub setup: Vec<u8>,
    /// Load address of the protected-mode kernel (`FW_CFG_KERNEL_ADDR`).
    pub kernel_addr: u32,
    /// Protected-mode kernel (`FW_CFG_KERNEL_DATA` / `FW_CFG_KERNEL_SIZE`).
    pub kernel: Vec<u8>,
    /// Load address of the initrd (`FW_CFG_INITRD_ADDR`).
    pub initrd_addr: u32,
    /// The initrd; when empty no initrd item is added (QEMU adds them only with `-initrd`).
    pub initrd: Vec<u8>,
    /// Load address of the command line (`FW_CFG_CMDLINE_ADDR`).
    pub cmdline_addr: u32,
    /// The command line without its NUL: `FW_CFG_CMDLINE_DATA` gets it NUL-terminated and
    /// `FW_CFG_CMDLINE_SIZE` counts the NUL, as QEMU's `fw_cfg_add_string`.
    pub cmdline: String,
    /// Entry point (`FW_CFG_KERNEL_ENTRY`), set by QEMU for PVH and multiboot kernels.
    pub entry: Option<u32>,
}

#[derive(Debug, Clone)]
struct FileEntry {
    name: String,
    data: Vec<u8>,
}

/// QEMU's fw_cfg device (see the [module docs](self) for the registers).
///
/// `M` is the guest address space the DMA interface reads descriptors from and copies data
/// to: any [`GuestAddressSpace`], so `&GuestMemoryMmap`, `Arc<GuestMemoryMmap>` or a
/// `GuestMemoryAtomic` (whose snapshot is taken once per transfer, so hot-plugged memory is
/// seen from the next DMA on).
#[derive(Debug)]
pub struct FwCfg<M: GuestAddressSpace> {
    mem: M,
    io_base: u16,
    items: BTreeMap<u16, Vec<u8>>,
    /// Sorted by name; file `i` has selector `FW_CFG_FILE_FIRST + i`, as QEMU does.
    files: Vec<FileEntry>,
    directory: Vec<u8>,
    selector: u16,
    offset: u32,
    dma_addr: u64,
    max_dma_len: u32,
}

impl<M: GuestAddressSpace> FwCfg<M> {
    /// Creates the device with the items QEMU's `fw_cfg_common_realize` always provides:
    /// the signature `"QEMU"`, ID 3 (traditional interface + DMA), a zero UUID, NOGRAPHIC 1
    /// and BOOT_MENU 0, plus an empty file directory. Base port [`FW_CFG_IO_BASE`].
    pub fn new(mem: M) -> Self {
        let mut items = BTreeMap::new();
        items.insert(FW_CFG_SIGNATURE, b"QEMU".to_vec());
        items.insert(
            FW_CFG_ID,
            (FW_CFG_VERSION | FW_CFG_VERSION_DMA).to_le_bytes().to_vec(),
        );
        items.insert(FW_CFG_UUID, vec![0; 16]);
        items.insert(FW_CFG_NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        items.insert(FW_CFG_BOOT_MENU, 0u16.to_le_bytes().to_vec());
        let mut dev = Self {
            mem,
            io_base: FW_CFG_IO_BASE,
            items,
            files: Vec::new(),
            directory: Vec::new(),
            selector: FW_CFG_SIGNATURE,
            offset: 0,
            dma_addr: 0,
            max_dma_len: u32::MAX,
        };
        dev.rebuild_directory();
        dev
    }

    /// Sets the base port the [`MutDevicePio`] implementation subtracts (default 0x510).
    pub fn set_io_base(&mut self, base: u16) {
        self.io_base = base;
    }

    /// The base port used by the [`MutDevicePio`] implementation.
    pub fn io_base(&self) -> u16 {
        self.io_base
    }

    /// Largest DMA length accepted; longer READ/WRITE/SKIP transfers fail with `ERROR`
    /// before touching memory. Defaults to `u32::MAX` (no limit beyond the format's).
    pub fn max_dma_len(&self) -> u32 {
        self.max_dma_len
    }

    /// Sets [`max_dma_len`](Self::max_dma_len).
    pub fn set_max_dma_len(&mut self, limit: u32) {
        self.max_dma_len = limit;
    }

    /// The guest address space used for DMA.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    fn check_key(key: u16) -> Result<(), Error> {
        let index = key & !FW_CFG_ARCH_LOCAL;
        if key & FW_CFG_WRITE_CHANNEL != 0
            || (key & FW_CFG_ARCH_LOCAL == 0 && index >= FW_CFG_FILE_DIR)
        {
            return Err(Error::ReservedKey { key });
        }
        Ok(())
    }

    fn check_len(what: &str, len: usize) -> Result<(), Error> {
        if u32::try_from(len).is_err() {
            return Err(Error::ItemTooLarge {
                item: what.to_string(),
                len,
                max: u32::MAX,
            });
        }
        Ok(())
    }

    /// Adds item `key` (below [`FW_CFG_FILE_DIR`], or arch-local `0x8000 | n`).
    ///
    /// Refuses keys already present (use [`modify_item`](Self::modify_item)), the write
    /// channel bit, the directory and file selectors, and data longer than `u32::MAX`.
    pub fn add_item(&mut self, key: u16, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        Self::check_key(key)?;
        if self.items.contains_key(&key) {
            return Err(Error::DuplicateItem { key });
        }
        self.modify_item(key, data)
    }

    /// Adds or replaces item `key` (QEMU's `fw_cfg_modify_*`), same key rules as
    /// [`add_item`](Self::add_item). A guest reading it keeps its offset.
    pub fn modify_item(&mut self, key: u16, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        Self::check_key(key)?;
        let data = data.into();
        Self::check_len(&format!("item {key:#06x}"), data.len())?;
        self.items.insert(key, data);
        self.clamp_offset();
        Ok(())
    }

    /// The data of item `key` (items, directory and files; the write-channel bit is ignored
    /// as in QEMU), or `None` when nothing is there.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        let key = key & !FW_CFG_WRITE_CHANNEL;
        if key == FW_CFG_FILE_DIR {
            return Some(&self.directory);
        }
        if key >= FW_CFG_FILE_FIRST && key & FW_CFG_ARCH_LOCAL == 0 {
            let index = usize::from(key - FW_CFG_FILE_FIRST);
            return self.files.get(index).map(|f| f.data.as_slice());
        }
        self.items.get(&key).map(Vec::as_slice)
    }

    /// Adds file `name` to the directory and returns its selector.
    ///
    /// Names are at most [`FW_CFG_MAX_FILE_NAME`] bytes (55 plus the NUL of the 56-byte
    /// field), non-empty and without NUL; duplicates are refused. Files are kept sorted by
    /// name and numbered from [`FW_CFG_FILE_FIRST`] in that order, as QEMU does for current
    /// machine types: adding a name that sorts earlier shifts the selectors of the files
    /// after it, so look selectors up with [`file_selector`](Self::file_selector) once all
    /// files are in (the guest always goes through the directory).
    pub fn add_file(&mut self, name: &str, data: impl Into<Vec<u8>>) -> Result<u16, Error> {
        crate::check_file_name(name)?;
        let data = data.into();
        Self::check_len(&format!("file {name:?}"), data.len())?;
        let index = match self
            .files
            .binary_search_by(|f| f.name.as_bytes().cmp(name.as_bytes()))
        {
            Ok(_) => {
                return Err(Error::DuplicateFile {
                    name: name.to_string(),
                })
            }
            Err(index) => index,
        };
        if self.files.len() >= usize::from(FW_CFG_MAX_FILES) {
            return Err(Error::TooManyFiles {
                name: name.to_string(),
                max: FW_CFG_MAX_FILES,
            });
        }
        self.files.insert(
            index,
            FileEntry {
                name: name.to_string(),
                data,
            },
        );
        self.rebuild_directory();
        self.clamp_offset();
        // index < FW_CFG_MAX_FILES, so this fits.
        Ok(FW_CFG_FILE_FIRST + index as u16)
    }

    /// Replaces the contents of existing file `name`, keeping its selector.
    pub fn modify_file(&mut self, name: &str, data: impl Into<Vec<u8>>) -> Result<(), Error> {
        let data = data.into();
        Self::check_len(&format!("file {name:?}"), data.len())?;
        let file = self
            .files
            .iter_mut()
            .find(|f| f.name == name)
            .ok_or_else(|| Error::NoSuchFile {
                name: name.to_string(),
            })?;
        file.data = data;
        self.rebuild_directory();
        self.clamp_offset();
        Ok(())
    }

    /// The current selector of file `name`.
    pub fn file_selector(&self, name: &str) -> Option<u16> {
        self.files
            .iter()
            .position(|f| f.name == name)
            .map(|i| FW_CFG_FILE_FIRST + i as u16)
    }

    /// File names in directory (selector) order.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.name.as_str())
    }

    /// Sets NB_CPUS (CPUs present at boot) and MAX_CPUS, both `u16` LE. QEMU x86 puts the
    /// APIC ID limit (highest possible APIC ID + 1) in MAX_CPUS.
    pub fn set_cpus(&mut self, nb_cpus: u16, max_cpus: u16) {
        self.items
            .insert(FW_CFG_NB_CPUS, nb_cpus.to_le_bytes().to_vec());
        self.items
            .insert(FW_CFG_MAX_CPUS, max_cpus.to_le_bytes().to_vec());
    }

    /// Sets RAM_SIZE (`u64` LE, the machine's RAM size in bytes).
    pub fn set_ram_size(&mut self, bytes: u64) {
        self.items
            .insert(FW_CFG_RAM_SIZE, bytes.to_le_bytes().to_vec());
    }

    /// Sets NOGRAPHIC (`u16` LE; 1 when the machine has no display).
    pub fn set_nographic(&mut self, nographic: bool) {
        self.items.insert(
            FW_CFG_NOGRAPHIC,
            u16::from(nographic).to_le_bytes().to_vec(),
        );
    }

    /// Sets BOOT_MENU (`u16` LE; 1 asks the firmware to offer its boot menu).
    pub fn set_boot_menu(&mut self, menu: bool) {
        self.items
            .insert(FW_CFG_BOOT_MENU, u16::from(menu).to_le_bytes().to_vec());
    }

    /// Sets the UUID item (16 bytes, SMBIOS byte order as given).
    pub fn set_uuid(&mut self, uuid: [u8; 16]) {
        self.items.insert(FW_CFG_UUID, uuid.to_vec());
    }

    /// Adds the `etc/e820` file: the entries packed as 20-byte little-endian records.
    pub fn add_e820<E: Into<E820Entry> + Copy>(&mut self, entries: &[E]) -> Result<u16, Error> {
        let mut data = Vec::with_capacity(entries.len() * 20);
        for e in entries {
            let e: E820Entry = (*e).into();
            data.extend_from_slice(&e.addr.to_le_bytes());
            data.extend_from_slice(&e.len.to_le_bytes());
            data.extend_from_slice(&e.kind.to_le_bytes());
        }
        self.add_file("etc/e820", data)
    }

    /// Adds the `bootorder` file: OpenFirmware device paths, one per line, NUL-terminated
    /// (QEMU's `get_boot_devices_list` format, read by SeaBIOS and OVMF).
    pub fn add_bootorder<S: AsRef<str>>(&mut self, paths: &[S]) -> Result<u16, Error> {
        let mut data = paths
            .iter()
            .map(|p| p.as_ref())
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes();
        data.push(0);
        self.add_file("bootorder", data)
    }

    /// Adds the direct Linux boot items (see [`LinuxBoot`]). All addresses and sizes are
    /// `u32` LE. Fails without changing anything if a blob is longer than `u32::MAX`.
    pub fn add_linux_boot(&mut self, boot: &LinuxBoot) -> Result<(), Error> {
        let mut cmdline = boot.cmdline.clone().into_bytes();
        cmdline.push(0);
        let len32 = |what: &str, len: usize| {
            u32::try_from(len).map_err(|_| Error::ItemTooLarge {
                item: what.to_string(),
                len,
                max: u32::MAX,
            })
        };
        let setup_size = len32("setup data", boot.setup.len())?;
        let kernel_size = len32("kernel data", boot.kernel.len())?;
        let initrd_size = len32("initrd data", boot.initrd.len())?;
        let cmdline_size = len32("command line", cmdline.len())?;
        let mut put = |key: u16, data: Vec<u8>| {
            self.items.insert(key, data);
        };
        put(FW_CFG_SETUP_ADDR, boot.setup_addr.to_le_bytes().to_vec());
        put(FW_CFG_SETUP_SIZE, setup_size.to_le_bytes().to_vec());
        put(FW_CFG_SETUP_DATA, boot.setup.clone());
        put(FW_CFG_KERNEL_ADDR, boot.kernel_addr.to_le_bytes().to_vec());
        put(FW_CFG_KERNEL_SIZE, kernel_size.to_le_bytes().to_vec());
        put(FW_CFG_KERNEL_DATA, boot.kernel.clone());
        if !boot.initrd.is_empty() {
            put(FW_CFG_INITRD_ADDR, boot.initrd_addr.to_le_bytes().to_vec());
            put(FW_CFG_INITRD_SIZE, initrd_size.to_le_bytes().to_vec());
            put(FW_CFG_INITRD_DATA, boot.initrd.clone());
        }
        put(
            FW_CFG_CMDLINE_ADDR,
            boot.cmdline_addr.to_le_bytes().to_vec(),
        );
        put(FW_CFG_CMDLINE_SIZE, cmdline_size.to_le_bytes().to_vec());
        put(FW_CFG_CMDLINE_DATA, cmdline);
        if let Some(entry) = boot.entry {
            put(FW_CFG_KERNEL_ENTRY, entry.to_le_bytes().to_vec());
        }
        self.clamp_offset();
        Ok(())
    }

    fn rebuild_directory(&mut self) {
        let mut dir = Vec::with_capacity(4 + self.files.len() * DIR_ENTRY_LEN);
        dir.extend_from_slice(&(self.files.len() as u32).to_be_bytes());
        for (i, f) in self.files.iter().enumerate() {
            dir.extend_from_slice(&(f.data.len() as u32).to_be_bytes());
            dir.extend_from_slice(&(FW_CFG_FILE_FIRST + i as u16).to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut name = [0u8; 56];
            name[..f.name.len()].copy_from_slice(f.name.as_bytes());
            dir.extend_from_slice(&name);
        }
        self.directory = dir;
    }

    /// Keeps the offset within the selected item after its data changed.
    fn clamp_offset(&mut self) {
        let len = self.selected_len();
        if self.offset > len {
            self.offset = len;
        }
    }

    fn selected_len(&self) -> u32 {
        self.item(self.selector).map_or(0, |d| d.len() as u32)
    }

    /// The selector last written (by the port or a DMA `SELECT`).
    pub fn selector(&self) -> u16 {
        self.selector
    }

    /// The read offset within the selected item.
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// Selects `key` and rewinds to its first byte, as a selector write does. An unknown key
    /// selects nothing: data reads return 0 (QEMU's `FW_CFG_INVALID`).
    pub fn select(&mut self, key: u16) {
        self.selector = key;
        self.offset = 0;
    }

    /// System reset: selects the signature (QEMU's `fw_cfg_reset` selects
    /// `FW_CFG_SIGNATURE`), rewinds it and clears a half-written DMA address.
    pub fn reset(&mut self) {
        self.select(FW_CFG_SIGNATURE);
        self.dma_addr = 0;
    }

    fn next_data_byte(&mut self) -> u8 {
        let offset = self.offset as usize;
        match self.item(self.selector).and_then(|d| d.get(offset)) {
            Some(&b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// A guest read of `data.len()` bytes at `offset` from the base port.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0 | 1 => {
                for b in data.iter_mut() {
                    *b = self.next_data_byte();
                }
            }
            _ => {
                for (i, b) in data.iter_mut().enumerate() {
                    let sig_index = offset
                        .checked_sub(DMA_OFFSET)
                        .and_then(|o| o.checked_add(i as u64))
                        .and_then(|o| usize::try_from(o).ok());
                    *b = sig_index
                        .and_then(|o| FW_CFG_DMA_SIGNATURE.get(o))
                        .copied()
                        .unwrap_or(0xFF);
                }
            }
        }
    }

    /// A guest write of `data` at `offset` from the base port (may run a DMA transfer).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            (4, 4) => {
                let high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                self.dma_addr = u64::from(high) << 32;
            }
            (8, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                self.dma_addr |= u64::from(low);
                self.dma_transfer();
            }
            (4, 8) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(data);
                self.dma_addr = u64::from_be_bytes(b);
                self.dma_transfer();
            }
            // Data port writes (ignored since QEMU 2.4) and undecoded accesses.
            _ => {}
        }
    }

    /// Runs the DMA transfer whose descriptor is at the DMA address register.
    fn dma_transfer(&mut self) {
        let desc_addr = self.dma_addr;
        self.dma_addr = 0;
        let mem = self.mem.memory();
        let mut raw = [0u8; DMA_DESCRIPTOR_LEN];
        let desc_ok = mem.check_range(
            GuestAddress(desc_addr),
            DMA_DESCRIPTOR_LEN,
            Permissions::Read,
        ) && mem.read_slice(&mut raw, GuestAddress(desc_addr)).is_ok();
        if !desc_ok {
            write_control(&*mem, desc_addr, FW_CFG_DMA_CTL_ERROR);
            return;
        }
        let control = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let length = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let mut addr = [0u8; 8];
        addr.copy_from_slice(&raw[8..16]);
        let address = u64::from_be_bytes(addr);

        if control & FW_CFG_DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let status = if control & FW_CFG_DMA_CTL_READ != 0 {
            self.dma_read(&*mem, address, length)
        } else if control & FW_CFG_DMA_CTL_WRITE != 0 {
            // No item accepts writes: QEMU fails a write to a read-only item.
            if length == 0 {
                0
            } else {
                FW_CFG_DMA_CTL_ERROR
            }
        } else if control & FW_CFG_DMA_CTL_SKIP != 0 {
            if length > self.max_dma_len {
                FW_CFG_DMA_CTL_ERROR
            } else {
                let len = self.selected_len();
                self.offset = self.offset.saturating_add(length).min(len.max(self.offset));
                0
            }
        } else {
            0
        };
        write_control(&*mem, desc_addr, status);
    }

    fn dma_read<G: GuestMemory>(&mut self, mem: &G, address: u64, length: u32) -> u32 {
        if length == 0 {
            return 0;
        }
        if length > self.max_dma_len
            || address.checked_add(u64::from(length)).is_none()
            || !mem.check_range(GuestAddress(address), length as usize, Permissions::Write)
        {
            return FW_CFG_DMA_CTL_ERROR;
        }
        let offset = self.offset as usize;
        let data = self.item(self.selector).unwrap_or(&[]);
        let avail = data.len().saturating_sub(offset);
        let copy = avail.min(length as usize);
        if copy > 0
            && mem
                .write_slice(&data[offset..offset + copy], GuestAddress(address))
                .is_err()
        {
            return FW_CFG_DMA_CTL_ERROR;
        }
        self.offset += copy as u32;
        // Past the end of the item (or with nothing selected) the buffer is zero-filled.
        const ZEROS: [u8; 4096] = [0; 4096];
        let mut at = address + copy as u64;
        let mut left = length as usize - copy;
        while left > 0 {
            let n = left.min(ZEROS.len());
            if mem.write_slice(&ZEROS[..n], GuestAddress(at)).is_err() {
                return FW_CFG_DMA_CTL_ERROR;
            }
            at += n as u64;
            left -= n;
        }
        0
    }
}

/// Writes the DMA status back to the descriptor's control word when it is in RAM.
fn write_control<G: GuestMemory>(mem: &G, desc_addr: u64, status: u32) {
    if mem.check_range(GuestAddress(desc_addr), 4, Permissions::Write) {
        // Cannot fail after the range check; nothing else to do if it did.
        let _ = mem.write_slice(&status.to_be_bytes(), GuestAddress(desc_addr));
    }
}

impl<M: GuestAddressSpace> MutDevicePio for FwCfg<M> {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        let port = u64::from(base.0) + u64::from(offset);
        let rel = port
            .checked_sub(u64::from(self.io_base))
            .unwrap_or(u64::MAX);
        self.read(rel, data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        let port = u64::from(base.0) + u64::from(offset);
        let rel = port
            .checked_sub(u64::from(self.io_base))
            .unwrap_or(u64::MAX);
        self.write(rel, data);
    }
}
