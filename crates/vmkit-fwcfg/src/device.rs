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
//! data byte and any 1-byte write there is a (discarded) data write. QEMU's region accepts no
//! wider reads there, so a 2- or 4-byte read of offset 0 or 1 returns zeros and consumes no
//! data (the firmware and Linux read the data port with `inb` / `rep insb`). Offsets 2, 3 and
//! beyond 12 are not decoded: reads return 0xFF, writes are ignored.
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
/// Longest item QEMU accepts (`len < UINT32_MAX`).
const MAX_ITEM_LEN: u32 = u32::MAX - 1;

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
        if len > MAX_ITEM_LEN as usize {
            return Err(Error::ItemTooLarge {
                item: what.to_string(),
                len,
                max: MAX_ITEM_LEN,
            });
        }
        Ok(())
    }

    /// Adds item `key` (below [`FW_CFG_FILE_DIR`], or arch-local `0x8000 | n`).
    ///
    /// Refuses keys already present (use [`modify_item`](Self::modify_item)), the write
    /// channel bit, the directory and file selectors, and data of `u32::MAX` bytes or more (as QEMU).
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
    /// Names are at most [`FW_CFG_MAX_FILE_NAME`](crate::FW_CFG_MAX_FILE_NAME) bytes (55 plus the NUL of the 56-byte
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
    /// `u32` LE. Fails without changing anything if a blob has `u32::MAX` bytes or more.
    pub fn add_linux_boot(&mut self, boot: &LinuxBoot) -> Result<(), Error> {
        let mut cmdline = boot.cmdline.clone().into_bytes();
        cmdline.push(0);
        let len32 = |what: &str, len: usize| {
            Self::check_len(what, len)?;
            Ok::<u32, Error>(len as u32)
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
            0 | 1 if data.len() == 1 => data[0] = self.next_data_byte(),
            0 | 1 => data.fill(0),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FW_CFG_KERNEL_CMDLINE, FW_CFG_MACHINE_ID, FW_CFG_NUMA};
    use std::sync::Arc;
    use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

    type Mem = GuestMemoryMmap<()>;
    const RAM_SIZE: usize = 0x10000;
    const DATA: u64 = 1;
    const DMA: u64 = 4;

    fn ram() -> Mem {
        Mem::from_ranges(&[(GuestAddress(0), RAM_SIZE)]).unwrap()
    }

    fn read_bytes<M: GuestAddressSpace>(dev: &mut FwCfg<M>, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                let mut b = [0u8];
                dev.read(DATA, &mut b);
                b[0]
            })
            .collect()
    }

    fn read_item<M: GuestAddressSpace>(dev: &mut FwCfg<M>, key: u16, n: usize) -> Vec<u8> {
        dev.write(0, &key.to_le_bytes());
        read_bytes(dev, n)
    }

    fn put_desc(ram: &Mem, at: u64, control: u32, length: u32, address: u64) {
        let mut d = Vec::new();
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&length.to_be_bytes());
        d.extend_from_slice(&address.to_be_bytes());
        ram.write_slice(&d, GuestAddress(at)).unwrap();
    }

    fn kick<M: GuestAddressSpace>(dev: &mut FwCfg<M>, desc: u64) {
        dev.write(DMA, &((desc >> 32) as u32).to_be_bytes());
        dev.write(DMA + 4, &(desc as u32).to_be_bytes());
    }

    fn control(ram: &Mem, at: u64) -> u32 {
        let mut b = [0u8; 4];
        ram.read_slice(&mut b, GuestAddress(at)).unwrap();
        u32::from_be_bytes(b)
    }

    fn snapshot(ram: &Mem) -> Vec<u8> {
        let mut v = vec![0u8; RAM_SIZE];
        ram.read_slice(&mut v, GuestAddress(0)).unwrap();
        v
    }

    #[test]
    fn signature_reads_byte_by_byte_on_both_ports() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        // After creation the signature is selected.
        assert_eq!(read_bytes(&mut dev, 4), b"QEMU");
        dev.write(0, &FW_CFG_SIGNATURE.to_le_bytes());
        let mut via_selector_port = Vec::new();
        for _ in 0..4 {
            let mut b = [0u8];
            dev.read(0, &mut b); // QEMU's combined region: 1-byte reads return data
            via_selector_port.push(b[0]);
        }
        assert_eq!(via_selector_port, b"QEMU");
        // QEMU accepts only byte reads of the data port: a wider read returns 0, consumes nothing.
        dev.select(FW_CFG_SIGNATURE);
        let mut two = [0xFFu8; 2];
        dev.read(DATA, &mut two);
        assert_eq!(two, [0, 0]);
        let mut four = [0xFFu8; 4];
        dev.read(0, &mut four);
        assert_eq!(four, [0; 4]);
        assert_eq!(dev.offset(), 0);
        assert_eq!(read_bytes(&mut dev, 1), b"Q");
    }

    #[test]
    fn id_and_default_items() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        assert_eq!(read_item(&mut dev, FW_CFG_ID, 4), [3, 0, 0, 0]);
        assert_eq!(read_item(&mut dev, FW_CFG_UUID, 16), [0; 16]);
        assert_eq!(read_item(&mut dev, FW_CFG_NOGRAPHIC, 2), [1, 0]);
        assert_eq!(read_item(&mut dev, FW_CFG_BOOT_MENU, 2), [0, 0]);
        assert_eq!(read_item(&mut dev, FW_CFG_FILE_DIR, 4), [0, 0, 0, 0]);
        assert_eq!(dev.item(FW_CFG_FILE_DIR).unwrap().len(), 4);
    }

    #[test]
    fn machine_items_have_qemu_widths() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        dev.set_cpus(2, 8);
        dev.set_ram_size(0x1_2345_6789);
        dev.set_nographic(false);
        dev.set_boot_menu(true);
        dev.set_uuid([0xAB; 16]);
        assert_eq!(dev.item(FW_CFG_NB_CPUS).unwrap(), [2, 0]);
        assert_eq!(dev.item(FW_CFG_MAX_CPUS).unwrap(), [8, 0]);
        assert_eq!(
            read_item(&mut dev, FW_CFG_RAM_SIZE, 9),
            [0x89, 0x67, 0x45, 0x23, 1, 0, 0, 0, 0]
        );
        assert_eq!(dev.item(FW_CFG_NOGRAPHIC).unwrap(), [0, 0]);
        assert_eq!(dev.item(FW_CFG_BOOT_MENU).unwrap(), [1, 0]);
        assert_eq!(dev.item(FW_CFG_UUID).unwrap(), [0xAB; 16]);
    }

    #[test]
    fn past_the_end_reads_zero_and_offset_stops() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 7), b"QEMU\0\0\0");
        assert_eq!(dev.offset(), 4);
        // Unknown keys select nothing and read 0.
        assert_eq!(read_item(&mut dev, 0x1234, 3), [0, 0, 0]);
        assert_eq!(read_item(&mut dev, FW_CFG_MACHINE_ID, 2), [0, 0]);
        assert_eq!(dev.offset(), 0);
    }

    #[test]
    fn selector_write_rewinds() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 2), b"QE");
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut dev, FW_CFG_ID, 1), [3]);
        assert_eq!(dev.selector(), FW_CFG_ID);
        assert_eq!(dev.offset(), 1);
    }

    #[test]
    fn data_writes_and_byte_selector_writes_are_ignored() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        dev.write(0, &FW_CFG_ID.to_le_bytes());
        dev.write(DATA, &[0x55]);
        dev.write(0, &[0x00]); // 1-byte write at the selector: a data write in QEMU
        dev.write(DATA, &[1, 2]);
        assert_eq!(dev.selector(), FW_CFG_ID);
        assert_eq!(dev.offset(), 0);
        assert_eq!(read_bytes(&mut dev, 4), [3, 0, 0, 0]);
        // Undecoded offsets.
        dev.write(2, &[0, 0]);
        dev.write(12, &[0; 4]);
        assert_eq!(dev.selector(), FW_CFG_ID);
        let mut b = [0u8; 2];
        dev.read(2, &mut b);
        assert_eq!(b, [0xFF, 0xFF]);
    }

    #[test]
    fn write_channel_bit_is_ignored_for_reads() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        assert_eq!(
            read_item(&mut dev, FW_CFG_SIGNATURE | FW_CFG_WRITE_CHANNEL, 4),
            b"QEMU"
        );
    }

    #[test]
    fn arch_local_items() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        dev.add_item(FW_CFG_ARCH_LOCAL | 0x03, vec![9, 8, 7])
            .unwrap();
        assert_eq!(read_item(&mut dev, 0x8003, 3), [9, 8, 7]);
        // 0x8020 is an arch-local item, not a file.
        dev.add_file("a", vec![1]).unwrap();
        assert_eq!(read_item(&mut dev, 0x8020, 1), [0]);
        assert_eq!(read_item(&mut dev, 0x0020, 1), [1]);
    }

    #[test]
    fn add_item_rules() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        dev.add_item(FW_CFG_NUMA, vec![1, 2]).unwrap();
        assert_eq!(
            dev.add_item(FW_CFG_NUMA, vec![3]),
            Err(Error::DuplicateItem { key: FW_CFG_NUMA })
        );
        assert_eq!(
            dev.add_item(FW_CFG_SIGNATURE, vec![3]),
            Err(Error::DuplicateItem { key: 0 })
        );
        for key in [FW_CFG_FILE_DIR, FW_CFG_FILE_FIRST, 0x3FFF, 0x4001, 0xC000] {
            let e = dev.add_item(key, vec![0]).unwrap_err();
            assert_eq!(e, Error::ReservedKey { key });
            assert!(e.to_string().contains(&format!("{key:#06x}")));
        }
        dev.modify_item(FW_CFG_NUMA, vec![5]).unwrap();
        assert_eq!(dev.item(FW_CFG_NUMA).unwrap(), [5]);
    }

    #[test]
    fn modify_keeps_offset_inside_the_item() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        dev.add_item(FW_CFG_NUMA, vec![1, 2, 3, 4]).unwrap();
        assert_eq!(read_item(&mut dev, FW_CFG_NUMA, 3), [1, 2, 3]);
        dev.modify_item(FW_CFG_NUMA, vec![7]).unwrap();
        assert_eq!(dev.offset(), 1);
        assert_eq!(read_bytes(&mut dev, 1), [0]);
    }

    #[test]
    fn directory_is_sorted_with_selectors_in_name_order() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        assert_eq!(dev.add_file("etc/e820", vec![0; 40]).unwrap(), 0x20);
        assert_eq!(dev.add_file("bootorder", vec![0; 3]).unwrap(), 0x20);
        assert_eq!(dev.add_file("genroms/x.bin", vec![1; 5]).unwrap(), 0x22);
        // QEMU shifts the selectors of files sorting after a new one.
        assert_eq!(dev.file_selector("etc/e820"), Some(0x21));
        assert_eq!(dev.file_selector("nope"), None);
        assert_eq!(
            dev.file_names().collect::<Vec<_>>(),
            ["bootorder", "etc/e820", "genroms/x.bin"]
        );
        let dir = read_item(&mut dev, FW_CFG_FILE_DIR, 4 + 3 * 64);
        assert_eq!(&dir[0..4], &[0, 0, 0, 3], "big-endian count");
        let expect = [
            ("bootorder", 3u32, 0x20u16),
            ("etc/e820", 40, 0x21),
            ("genroms/x.bin", 5, 0x22),
        ];
        for (i, (name, size, select)) in expect.iter().enumerate() {
            let e = &dir[4 + i * 64..4 + (i + 1) * 64];
            assert_eq!(&e[0..4], &size.to_be_bytes());
            assert_eq!(&e[4..6], &select.to_be_bytes());
            assert_eq!(&e[6..8], &[0, 0]);
            assert_eq!(&e[8..8 + name.len()], name.as_bytes());
            assert!(e[8 + name.len()..].iter().all(|&b| b == 0));
        }
        assert_eq!(read_bytes(&mut dev, 1), [0], "directory ends there");
    }

    #[test]
    fn file_select_and_read() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let sel = dev.add_file("etc/hello", b"hi there".to_vec()).unwrap();
        assert_eq!(read_item(&mut dev, sel, 10), b"hi there\0\0");
        dev.modify_file("etc/hello", b"yo".to_vec()).unwrap();
        assert_eq!(read_item(&mut dev, sel, 3), b"yo\0");
        assert_eq!(&dev.item(FW_CFG_FILE_DIR).unwrap()[4..8], &[0, 0, 0, 2]);
        assert_eq!(
            dev.modify_file("etc/nope", vec![]),
            Err(Error::NoSuchFile {
                name: "etc/nope".into()
            })
        );
        // Selectors past the last file read 0.
        assert_eq!(read_item(&mut dev, sel + 1, 2), [0, 0]);
    }

    #[test]
    fn file_name_rules() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let ok = "n".repeat(55);
        dev.add_file(&ok, vec![]).unwrap();
        let long = "n".repeat(56);
        let e = dev.add_file(&long, vec![]).unwrap_err();
        assert_eq!(
            e,
            Error::FileNameTooLong {
                name: long.clone(),
                len: 56,
                max: 55
            }
        );
        assert!(e.to_string().contains(&long) && e.to_string().contains("55"));
        let e = dev.add_file(&ok, vec![1]).unwrap_err();
        assert_eq!(e, Error::DuplicateFile { name: ok.clone() });
        assert!(e.to_string().contains(&ok));
        assert!(matches!(
            dev.add_file("", vec![]),
            Err(Error::InvalidFileName { .. })
        ));
        assert!(matches!(
            dev.add_file("a\0b", vec![]),
            Err(Error::InvalidFileName { .. })
        ));
        // The 55-byte name fills the field up to its NUL.
        let dir = dev.item(FW_CFG_FILE_DIR).unwrap();
        assert_eq!(&dir[12..67], ok.as_bytes());
        assert_eq!(dir[67], 0);
    }

    #[test]
    fn e820_and_bootorder_files() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let sel = dev
            .add_e820(&[(0u64, 0x9fc00u64, 1u32), (0xfeff_c000, 0x4000, 2)])
            .unwrap();
        let data = read_item(&mut dev, sel, 40);
        let mut want = Vec::new();
        for (a, l, t) in [(0u64, 0x9fc00u64, 1u32), (0xfeff_c000, 0x4000, 2)] {
            want.extend_from_slice(&a.to_le_bytes());
            want.extend_from_slice(&l.to_le_bytes());
            want.extend_from_slice(&t.to_le_bytes());
        }
        assert_eq!(data, want);
        let entry = E820Entry {
            addr: 1,
            len: 2,
            kind: 3,
        };
        assert!(matches!(
            dev.add_e820(&[entry]),
            Err(Error::DuplicateFile { .. })
        ));
        dev.add_bootorder(&["/pci@i0cf8/ide@1,1/drive@0/disk@0", "HALT"])
            .unwrap();
        let sel = dev.file_selector("bootorder").unwrap();
        assert_eq!(
            dev.item(sel).unwrap(),
            b"/pci@i0cf8/ide@1,1/drive@0/disk@0\nHALT\0"
        );
    }

    #[test]
    fn linux_boot_items() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let boot = LinuxBoot {
            setup_addr: 0x10000,
            setup: vec![0xAA; 0x600],
            kernel_addr: 0x100000,
            kernel: vec![0xBB; 0x1234],
            initrd_addr: 0x7f00000,
            initrd: vec![0xCC; 10],
            cmdline_addr: 0x20000,
            cmdline: "console=ttyS0".into(),
            entry: None,
        };
        dev.add_linux_boot(&boot).unwrap();
        let le = |v: u32| v.to_le_bytes().to_vec();
        assert_eq!(dev.item(FW_CFG_SETUP_ADDR).unwrap(), le(0x10000));
        assert_eq!(dev.item(FW_CFG_SETUP_SIZE).unwrap(), le(0x600));
        assert_eq!(dev.item(FW_CFG_SETUP_DATA).unwrap(), boot.setup);
        assert_eq!(dev.item(FW_CFG_KERNEL_ADDR).unwrap(), le(0x100000));
        assert_eq!(dev.item(FW_CFG_KERNEL_SIZE).unwrap(), le(0x1234));
        assert_eq!(dev.item(FW_CFG_KERNEL_DATA).unwrap(), boot.kernel);
        assert_eq!(dev.item(FW_CFG_INITRD_ADDR).unwrap(), le(0x7f00000));
        assert_eq!(dev.item(FW_CFG_INITRD_SIZE).unwrap(), le(10));
        assert_eq!(dev.item(FW_CFG_INITRD_DATA).unwrap(), boot.initrd);
        assert_eq!(dev.item(FW_CFG_CMDLINE_ADDR).unwrap(), le(0x20000));
        assert_eq!(dev.item(FW_CFG_CMDLINE_SIZE).unwrap(), le(14));
        assert_eq!(dev.item(FW_CFG_CMDLINE_DATA).unwrap(), b"console=ttyS0\0");
        assert!(dev.item(FW_CFG_KERNEL_ENTRY).is_none());
        assert!(dev.item(FW_CFG_KERNEL_CMDLINE).is_none());

        let mut dev = FwCfg::new(&ram);
        let pvh = LinuxBoot {
            entry: Some(0x1000000),
            cmdline: String::new(),
            ..Default::default()
        };
        dev.add_linux_boot(&pvh).unwrap();
        assert_eq!(dev.item(FW_CFG_KERNEL_ENTRY).unwrap(), le(0x1000000));
        assert!(dev.item(FW_CFG_INITRD_SIZE).is_none(), "no initrd, no item");
        assert_eq!(dev.item(FW_CFG_CMDLINE_SIZE).unwrap(), le(1));
    }

    #[test]
    fn dma_register_reads_signature() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let mut sig = [0u8; 8];
        dev.read(DMA, &mut sig);
        assert_eq!(&sig, b"QEMU CFG");
        let mut low = [0u8; 4];
        dev.read(DMA + 4, &mut low);
        assert_eq!(&low, b" CFG");
        let mut past = [0u8; 2];
        dev.read(DMA + 7, &mut past);
        assert_eq!(past, [b'G', 0xFF]);
    }

    #[test]
    fn dma_select_and_read() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let sel = dev
            .add_file("etc/blob", (0..100u8).collect::<Vec<_>>())
            .unwrap();
        let ctl = (u32::from(sel) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ;
        put_desc(&ram, 0x1000, ctl, 60, 0x2000);
        kick(&mut dev, 0x1000);
        assert_eq!(control(&ram, 0x1000), 0);
        let mut got = [0u8; 60];
        ram.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        assert_eq!(got.to_vec(), (0..60u8).collect::<Vec<_>>());
        assert_eq!(dev.selector(), sel);
        assert_eq!(dev.offset(), 60);
        // The data port continues where DMA stopped.
        assert_eq!(read_bytes(&mut dev, 2), [60, 61]);
        // A READ without SELECT continues too, and zero-fills past the end.
        ram.write_slice(&[0xEE; 50], GuestAddress(0x3000)).unwrap();
        put_desc(&ram, 0x1000, FW_CFG_DMA_CTL_READ, 50, 0x3000);
        kick(&mut dev, 0x1000);
        assert_eq!(control(&ram, 0x1000), 0);
        let mut got = [0u8; 50];
        ram.read_slice(&mut got, GuestAddress(0x3000)).unwrap();
        let mut want: Vec<u8> = (62..100u8).collect();
        want.resize(50, 0);
        assert_eq!(got.to_vec(), want);
        assert_eq!(dev.offset(), 100);
    }

    #[test]
    fn dma_skip_then_read() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let ctl = (u32::from(FW_CFG_SIGNATURE) << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_SKIP;
        put_desc(&ram, 0x100, ctl, 2, 0xDEAD_BEEF_0000);
        let before = snapshot(&ram);
        kick(&mut dev, 0x100);
        assert_eq!(control(&ram, 0x100), 0);
        let mut after = snapshot(&ram);
        after[0x100..0x104].copy_from_slice(&before[0x100..0x104]);
        assert_eq!(after, before, "SKIP touches only the control word");
        assert_eq!(dev.offset(), 2);
        put_desc(&ram, 0x100, FW_CFG_DMA_CTL_READ, 2, 0x200);
        kick(&mut dev, 0x100);
        assert_eq!(
            ram.read_obj::<[u8; 2]>(GuestAddress(0x200)).unwrap(),
            *b"MU"
        );
        // Skipping past the end stops at the end.
        put_desc(&ram, 0x100, FW_CFG_DMA_CTL_SKIP, 1000, 0);
        kick(&mut dev, 0x100);
        assert_eq!(control(&ram, 0x100), 0);
        assert_eq!(dev.offset(), 4);
    }

    #[test]
    fn dma_single_64_bit_write_and_select_only() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        put_desc(
            &ram,
            0x800,
            (u32::from(FW_CFG_ID) << 16) | FW_CFG_DMA_CTL_SELECT,
            4,
            0x900,
        );
        ram.write_slice(&[0x77; 4], GuestAddress(0x900)).unwrap();
        dev.write(DMA, &0x800u64.to_be_bytes());
        assert_eq!(control(&ram, 0x800), 0);
        assert_eq!(dev.selector(), FW_CFG_ID, "SELECT alone selects");
        assert_eq!(
            ram.read_obj::<u32>(GuestAddress(0x900)).unwrap(),
            0x7777_7777
        );
        assert_eq!(read_bytes(&mut dev, 1), [3]);
    }

    #[test]
    fn dma_invalid_selection_reads_zeros() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        ram.write_slice(&[0x77; 8], GuestAddress(0x900)).unwrap();
        put_desc(
            &ram,
            0x800,
            (0x2345 << 16) | FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ,
            8,
            0x900,
        );
        kick(&mut dev, 0x800);
        assert_eq!(control(&ram, 0x800), 0);
        assert_eq!(ram.read_obj::<u64>(GuestAddress(0x900)).unwrap(), 0);
    }

    #[test]
    fn dma_write_is_refused() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        ram.write_slice(b"XXXX", GuestAddress(0x900)).unwrap();
        put_desc(
            &ram,
            0x800,
            FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_WRITE,
            4,
            0x900,
        );
        kick(&mut dev, 0x800);
        assert_eq!(control(&ram, 0x800), FW_CFG_DMA_CTL_ERROR);
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 4), b"QEMU");
        put_desc(&ram, 0x800, FW_CFG_DMA_CTL_WRITE, 0, 0x900);
        kick(&mut dev, 0x800);
        assert_eq!(
            control(&ram, 0x800),
            0,
            "an empty write has nothing to refuse"
        );
    }

    #[test]
    fn dma_buffer_outside_ram_fails_without_writing() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let end = RAM_SIZE as u64;
        for (address, length) in [
            (end - 2, 4),            // straddles the end of RAM
            (end, 1),                // just past it
            (u64::MAX - 1, 4),       // wraps the address space
            (0x1_0000_0000_0000, 1), // far away
        ] {
            put_desc(
                &ram,
                0x40,
                FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ,
                length,
                address,
            );
            let before = snapshot(&ram);
            kick(&mut dev, 0x40);
            assert_eq!(
                control(&ram, 0x40),
                FW_CFG_DMA_CTL_ERROR,
                "{address:#x}+{length}"
            );
            let mut after = snapshot(&ram);
            after[0x40..0x44].copy_from_slice(&before[0x40..0x44]);
            assert_eq!(after, before);
            assert_eq!(dev.offset(), 0, "a failed transfer consumes nothing");
        }
    }

    #[test]
    fn dma_descriptor_outside_ram() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        let before = snapshot(&ram);
        kick(&mut dev, 0x1_0000); // just past RAM: nothing to read, nothing to write back
        kick(&mut dev, u64::MAX - 3);
        dev.write(DMA, &u64::MAX.to_be_bytes());
        assert_eq!(snapshot(&ram), before);
        // A descriptor straddling the end: ERROR lands in its control word.
        let at = RAM_SIZE as u64 - 8;
        kick(&mut dev, at);
        assert_eq!(control(&ram, at), FW_CFG_DMA_CTL_ERROR);
        assert_eq!(dev.selector(), FW_CFG_SIGNATURE);
    }

    #[test]
    fn dma_length_limit() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        dev.set_max_dma_len(16);
        assert_eq!(dev.max_dma_len(), 16);
        put_desc(&ram, 0x40, FW_CFG_DMA_CTL_READ, 17, 0x100);
        kick(&mut dev, 0x40);
        assert_eq!(control(&ram, 0x40), FW_CFG_DMA_CTL_ERROR);
        put_desc(&ram, 0x40, FW_CFG_DMA_CTL_SKIP, 17, 0x100);
        kick(&mut dev, 0x40);
        assert_eq!(control(&ram, 0x40), FW_CFG_DMA_CTL_ERROR);
        put_desc(&ram, 0x40, FW_CFG_DMA_CTL_READ, 16, 0x100);
        kick(&mut dev, 0x40);
        assert_eq!(control(&ram, 0x40), 0);
    }

    #[test]
    fn dma_across_adjacent_regions() {
        let ram =
            Mem::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)]).unwrap();
        let mut dev = FwCfg::new(&ram);
        put_desc(&ram, 0x0, FW_CFG_DMA_CTL_READ, 4, 0xFFE);
        kick(&mut dev, 0);
        let mut b = [0u8; 4];
        ram.read_slice(&mut b, GuestAddress(0xFFE)).unwrap();
        assert_eq!(&b, b"QEMU");
        assert_eq!(control(&ram, 0), 0);
    }

    #[test]
    fn reset_selects_signature_and_clears_dma_address() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        assert_eq!(read_item(&mut dev, FW_CFG_ID, 2), [3, 0]);
        dev.write(DMA, &1u32.to_be_bytes()); // high half: 0x1_0000_0000
        dev.reset();
        assert_eq!((dev.selector(), dev.offset()), (FW_CFG_SIGNATURE, 0));
        put_desc(&ram, 0x40, FW_CFG_DMA_CTL_READ, 4, 0x100);
        dev.write(DMA + 4, &0x40u32.to_be_bytes());
        assert_eq!(control(&ram, 0x40), 0, "the stale high half is gone");
        assert_eq!(
            ram.read_obj::<[u8; 4]>(GuestAddress(0x100)).unwrap(),
            *b"QEMU"
        );
    }

    #[test]
    fn works_with_arc_and_atomic_memory() {
        let mem = Arc::new(ram());
        let mut dev = FwCfg::new(mem.clone());
        put_desc(&mem, 0x40, FW_CFG_DMA_CTL_READ, 4, 0x100);
        kick(&mut dev, 0x40);
        assert_eq!(
            mem.read_obj::<[u8; 4]>(GuestAddress(0x100)).unwrap(),
            *b"QEMU"
        );

        let atomic = GuestMemoryAtomic::new(ram());
        let mut dev = FwCfg::new(atomic.clone());
        put_desc(&atomic.memory(), 0x40, FW_CFG_DMA_CTL_READ, 4, 0x100);
        kick(&mut dev, 0x40);
        assert_eq!(
            atomic
                .memory()
                .read_obj::<[u8; 4]>(GuestAddress(0x100))
                .unwrap(),
            *b"QEMU"
        );
    }

    #[test]
    fn pio_bus_uses_absolute_ports() {
        let ram = ram();
        let mut dev = FwCfg::new(&ram);
        assert_eq!(dev.io_base(), 0x510);
        MutDevicePio::pio_write(&mut dev, PioAddress(0x510), 0, &FW_CFG_ID.to_le_bytes());
        let mut b = [0u8];
        MutDevicePio::pio_read(&mut dev, PioAddress(0x510), 1, &mut b);
        assert_eq!(b, [3]);
        let mut sig = [0u8; 4];
        MutDevicePio::pio_read(&mut dev, PioAddress(0x514), 0, &mut sig);
        assert_eq!(&sig, b"QEMU");
        MutDevicePio::pio_read(&mut dev, PioAddress(0x100), 0, &mut b);
        assert_eq!(b, [0xFF]);
        dev.set_io_base(0x600);
        MutDevicePio::pio_write(
            &mut dev,
            PioAddress(0x600),
            0,
            &FW_CFG_SIGNATURE.to_le_bytes(),
        );
        MutDevicePio::pio_read(&mut dev, PioAddress(0x601), 0, &mut b);
        assert_eq!(b, [b'Q']);
    }
}

/// The layout version [`FwCfgState`] has; [`FwCfg::restore`] accepts only this one.
pub const FW_CFG_STATE_VERSION: u32 = 1;

/// What a guest can have changed in fw_cfg (QEMU's `vmstate_fw_cfg`): the selected item,
/// the read offset in it and the DMA address register. The items themselves are the
/// machine's configuration, rebuilt from the same options on the destination.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FwCfgState {
    /// Layout version, [`FW_CFG_STATE_VERSION`].
    pub version: u32,
    /// The selector register.
    pub selector: u16,
    /// The read offset in the selected item.
    pub offset: u32,
    /// The DMA address register.
    pub dma_addr: u64,
}

impl<M: GuestAddressSpace> FwCfg<M> {
    /// The guest-visible register state now.
    pub fn state(&self) -> FwCfgState {
        FwCfgState {
            version: FW_CFG_STATE_VERSION,
            selector: self.selector,
            offset: self.offset,
            dma_addr: self.dma_addr,
        }
    }

    /// Puts the registers into `state` (the items stay this device's); another version is
    /// refused.
    pub fn restore(&mut self, state: &FwCfgState) -> Result<(), crate::Error> {
        if state.version != FW_CFG_STATE_VERSION {
            return Err(crate::Error::StateVersion {
                found: state.version,
                supported: FW_CFG_STATE_VERSION,
            });
        }
        self.selector = state.selector;
        self.offset = state.offset;
        self.dma_addr = state.dma_addr;
        Ok(())
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;
    use proptest::prelude::*;
    use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

    type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

    fn dev() -> FwCfg<Mem> {
        let ram = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut d = FwCfg::new(GuestMemoryAtomic::new(ram));
        d.add_file("etc/a", (0..=255u8).collect::<Vec<_>>())
            .unwrap();
        d.add_file("etc/b", b"vmkit".to_vec()).unwrap();
        d
    }

    proptest! {
        /// Selects and reads, save, restore into a device with the same items: the next
        /// data reads are the same bytes.
        #[test]
        fn save_restore_continues_the_selected_item(
            ops in proptest::collection::vec((any::<bool>(), 0u16..0x30), 0..40),
            more in 0usize..64,
        ) {
            let mut a = dev();
            for &(select, key) in &ops {
                if select {
                    a.write(0, &key.to_le_bytes());
                } else {
                    a.read(1, &mut [0u8]);
                }
            }
            let json = serde_json::to_string(&a.state()).unwrap();
            let mut b = dev();
            b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
            for _ in 0..more {
                let (mut x, mut y) = ([0u8], [0u8]);
                a.read(1, &mut x);
                b.read(1, &mut y);
                prop_assert_eq!(x, y);
            }
        }
    }

    #[test]
    fn other_versions_are_refused() {
        let mut a = dev();
        let mut s = a.state();
        s.version = 4;
        assert!(a.restore(&s).unwrap_err().to_string().contains("version 4"));
    }
}
