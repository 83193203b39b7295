//! The table blobs, their fix-ups, and their placement in guest memory.

use std::ops::Range;

use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress};

use crate::config::{PcAcpiConfig, HPET_ADDRESS, IOAPIC_ADDRESS, MAX_CPUS};
use crate::{checksum, dsdt, Error, Result};

/// fw_cfg file holding every table but the RSDP.
pub const TABLES_FILE: &str = "etc/acpi/tables";
/// fw_cfg file holding the RSDP.
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
/// OEM id in the RSDP and every table header.
pub const OEM_ID: [u8; 6] = *b"VMKIT ";
/// OEM table id in every table header.
pub const OEM_TABLE_ID: [u8; 8] = *b"VMKITPC ";
/// OEM revision in every table header.
pub const OEM_REVISION: u32 = 1;
/// Where [`AcpiTables::write_to_bios_area`] puts the RSDP: the BIOS area's first paragraph,
/// where Linux's scan of 0xe0000-0xfffff finds it.
pub const BIOS_AREA_RSDP: u64 = 0xf_0000;
/// Where [`AcpiTables::write_to_bios_area`] puts the tables blob (64-byte aligned for the
/// FACS).
pub const BIOS_AREA_TABLES: u64 = 0xf_0040;
/// End of the BIOS area (1 MiB).
pub const BIOS_AREA_END: u64 = 0x10_0000;

/// Alignment the tables blob needs in memory (the FACS's).
pub const TABLES_ALIGN: u64 = 64;
/// Alignment the RSDP needs in memory.
pub const RSDP_ALIGN: u64 = 16;

const HEADER_LEN: usize = 36;
/// Length of an ACPI 1.0 (revision 1) FADT.
const FADT_REV1_LEN: usize = 116;
/// Bytes of the RSDP an ACPI 1.0 RSDP has (and its checksum covers).
const RSDP_V1_LEN: usize = 20;
/// MADT flag: the machine also has dual 8259s.
const MADT_PCAT_COMPAT: u32 = 1;
/// IAPC_BOOT_ARCH for the hardware-reduced FADT: legacy devices, 8042, no VGA.
const HW_REDUCED_BOOT_ARCH: u16 = (1 << 0) | (1 << 1) | (1 << 2);
/// CMOS index of the century byte (QEMU's RTC_CENTURY).
const RTC_CENTURY: u8 = 0x32;
/// HPET event timer block id of QEMU's HPET (vendor 0x8086, 3 comparators, 64-bit,
/// legacy replacement capable).
pub const HPET_BLOCK_ID: u32 = 0x8086_a201;
/// ISA IRQs that QEMU's pc declares level-triggered, active-high (the PCI link IRQs and the
/// SCI).
pub const PCI_LEVEL_IRQS: [u8; 4] = [5, 9, 10, 11];

/// Which fw_cfg file a fix-up refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcpiFile {
    /// [`TABLES_FILE`].
    Tables,
    /// [`RSDP_FILE`].
    Rsdp,
}

impl AcpiFile {
    /// The fw_cfg file name.
    pub fn name(self) -> &'static str {
        match self {
            AcpiFile::Tables => TABLES_FILE,
            AcpiFile::Rsdp => RSDP_FILE,
        }
    }
}

/// Where firmware must allocate a file (QEMU's ALLOCATE command zones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocZone {
    /// Anywhere in RAM (below 4 GiB for 32-bit pointers).
    High,
    /// The F segment (0xf0000-0xfffff), where legacy OSes find the RSDP.
    FSeg,
}

/// A file firmware must allocate before patching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The file.
    pub file: AcpiFile,
    /// Required alignment in bytes.
    pub align: u32,
    /// Where it goes.
    pub zone: AllocZone,
}

/// Add the guest address of `target` to the little-endian `size`-byte field at `offset` in
/// `file` (which holds the offset of the pointee inside `target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointerFixup {
    /// File holding the pointer.
    pub file: AcpiFile,
    /// Offset of the pointer in `file`.
    pub offset: u32,
    /// Size of the pointer: 1, 2, 4 or 8.
    pub size: u8,
    /// File the pointer points into.
    pub target: AcpiFile,
}

/// Set the byte at `offset` in `file` so that `start..start + length` sums to 0; applied
/// after every pointer fix-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChecksumFixup {
    /// The file.
    pub file: AcpiFile,
    /// Offset of the checksum byte.
    pub offset: u32,
    /// First byte summed.
    pub start: u32,
    /// Bytes summed.
    pub length: u32,
}

/// Where each table is inside [`AcpiTables::tables`] (byte offset and length).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableOffsets {
    /// FACS (first, 64-byte aligned).
    pub facs: Range<u32>,
    /// DSDT.
    pub dsdt: Range<u32>,
    /// FADT ("FACP").
    pub fadt: Range<u32>,
    /// MADT ("APIC").
    pub madt: Range<u32>,
    /// HPET table, when the machine has an HPET.
    pub hpet: Option<Range<u32>>,
    /// RSDT (last).
    pub rsdt: Range<u32>,
}

/// The tables as QEMU hands them to firmware: two files and the fix-ups that link them.
///
/// In the files every pointer holds the offset of its pointee inside the target file and
/// every checksum is already valid for those unpatched bytes; firmware (or
/// [`AcpiTables::link`]) adds the files' guest addresses and recomputes the checksums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    /// Contents of [`TABLES_FILE`]: FACS, DSDT, FADT, MADT, HPET, RSDT.
    pub tables: Vec<u8>,
    /// Contents of [`RSDP_FILE`]: an ACPI 1.0 (revision 0) RSDP pointing at the RSDT.
    pub rsdp: Vec<u8>,
    /// Files to allocate, in order.
    pub allocations: Vec<Allocation>,
    /// Pointer fix-ups, to apply first.
    pub pointers: Vec<PointerFixup>,
    /// Checksum fix-ups, to apply after the pointers.
    pub checksums: Vec<ChecksumFixup>,
    /// Where each table is in `tables`.
    pub offsets: TableOffsets,
}

/// The two files with pointers resolved for given guest addresses and checksums computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedTables {
    /// Guest address of the tables blob.
    pub tables_addr: u64,
    /// The patched tables blob.
    pub tables: Vec<u8>,
    /// Guest address of the RSDP.
    pub rsdp_addr: u64,
    /// The patched RSDP.
    pub rsdp: Vec<u8>,
}

fn serialize(aml: &dyn Aml) -> Vec<u8> {
    let mut out = Vec::new();
    aml.to_aml_bytes(&mut out);
    out
}

fn offset32(len: usize) -> u32 {
    // The blob is a few KiB for at most 255 CPUs.
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn validate(config: &PcAcpiConfig) -> Result<()> {
    let cpus = config.apic_ids.len();
    if cpus == 0 {
        return Err(Error::NoCpus);
    }
    if cpus > MAX_CPUS as usize {
        return Err(Error::TooManyCpus {
            requested: u32::try_from(cpus).unwrap_or(u32::MAX),
            max: MAX_CPUS,
        });
    }
    let mut seen = [false; 256];
    for (cpu, &apic_id) in config.apic_ids.iter().enumerate() {
        if apic_id == 0xff {
            return Err(Error::BadApicId {
                cpu,
                apic_id,
                reason: "the broadcast id",
            });
        }
        if std::mem::replace(&mut seen[usize::from(apic_id)], true) {
            return Err(Error::BadApicId {
                cpu,
                apic_id,
                reason: "already taken by another CPU",
            });
        }
    }
    if let Some(pci) = &config.pci {
        let (start, end) = (u64::from(pci.hole32_start), u64::from(pci.hole32_end));
        let bad = |reason| Error::BadPciHole { start, end, reason };
        if start > end {
            return Err(bad("it ends before it starts"));
        }
        if start < 0x10_0000 {
            return Err(bad("it starts below 1 MiB"));
        }
        if end >= u64::from(IOAPIC_ADDRESS) {
            return Err(bad(
                "it reaches the IOAPIC, HPET, local APIC and BIOS range",
            ));
        }
    }
    Ok(())
}

/// Builds the tables for `config`, laid out as QEMU's pc lays them: [`TABLES_FILE`] holds
/// FACS, DSDT, FADT, MADT, HPET (if any) and RSDT; [`RSDP_FILE`] the RSDP.
pub fn build_pc_tables(config: &PcAcpiConfig) -> Result<AcpiTables> {
    validate(config)?;
    let mut blob: Vec<u8> = Vec::new();
    let mut pointers = Vec::new();
    let mut checksums = Vec::new();
    let mut place = |blob: &mut Vec<u8>, bytes: Vec<u8>, summed: bool| -> Range<u32> {
        // 8-byte steps keep every table's fields naturally aligned.
        blob.resize(blob.len().next_multiple_of(8), 0);
        let start = blob.len();
        blob.extend_from_slice(&bytes);
        if summed {
            checksums.push(ChecksumFixup {
                file: AcpiFile::Tables,
                offset: offset32(start + 9),
                start: offset32(start),
                length: offset32(bytes.len()),
            });
        }
        offset32(start)..offset32(blob.len())
    };

    // FACS first, at offset 0 of a 64-byte aligned file. It has no checksum.
    let facs = place(&mut blob, serialize(&FACS::new()), false);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        HEADER_LEN as u32,
        1,
        OEM_ID,
        *b"VMKTDSDT",
        OEM_REVISION,
    );
    dsdt.append_slice(&dsdt::dsdt_body(config));
    let dsdt = place(&mut blob, dsdt.as_slice().to_vec(), true);

    let (fadt_bytes, fadt_pointers) = build_fadt(config, facs.start, dsdt.start);
    let fadt = place(&mut blob, fadt_bytes, true);
    pointers.extend(
        fadt_pointers
            .into_iter()
            .map(|(offset, size)| PointerFixup {
                file: AcpiFile::Tables,
                offset: fadt.start + offset,
                size,
                target: AcpiFile::Tables,
            }),
    );

    let madt = place(&mut blob, build_madt(config), true);
    let hpet = config.hpet.then(|| place(&mut blob, build_hpet(), true));

    let mut entries = vec![fadt.start, madt.start];
    entries.extend(hpet.as_ref().map(|hpet| hpet.start));
    let mut rsdt = Sdt::new(
        *b"RSDT",
        HEADER_LEN as u32,
        1,
        OEM_ID,
        *b"VMKTRSDT",
        OEM_REVISION,
    );
    for entry in &entries {
        rsdt.append_slice(&entry.to_le_bytes());
    }
    let rsdt = place(&mut blob, rsdt.as_slice().to_vec(), true);
    for index in 0..entries.len() {
        pointers.push(PointerFixup {
            file: AcpiFile::Tables,
            offset: rsdt.start + offset32(HEADER_LEN + 4 * index),
            size: 4,
            target: AcpiFile::Tables,
        });
    }

    let rsdp = build_rsdp_v1(rsdt.start);
    pointers.push(PointerFixup {
        file: AcpiFile::Rsdp,
        offset: 16,
        size: 4,
        target: AcpiFile::Tables,
    });
    checksums.push(ChecksumFixup {
        file: AcpiFile::Rsdp,
        offset: 8,
        start: 0,
        length: offset32(RSDP_V1_LEN),
    });

    Ok(AcpiTables {
        tables: blob,
        rsdp,
        allocations: vec![
            Allocation {
                file: AcpiFile::Rsdp,
                align: RSDP_ALIGN as u32,
                zone: AllocZone::FSeg,
            },
            Allocation {
                file: AcpiFile::Tables,
                align: TABLES_ALIGN as u32,
                zone: AllocZone::High,
            },
        ],
        pointers,
        checksums,
        offsets: TableOffsets {
            facs,
            dsdt,
            fadt,
            madt,
            hpet,
            rsdt,
        },
    })
}

/// The ACPI 1.0 RSDP QEMU's pc uses (revision 0, 20 bytes, RSDT only): acpi_tables' `Rsdp`
/// is the ACPI 2.0 one, so take its first 20 bytes (the 1.0 layout), mark it revision 0 and
/// point it at the RSDT.
fn build_rsdp_v1(rsdt: u32) -> Vec<u8> {
    let mut rsdp = serialize(&Rsdp::new(OEM_ID, 0));
    rsdp.truncate(RSDP_V1_LEN);
    rsdp[15] = 0; // revision: ACPI 1.0
    rsdp[16..20].copy_from_slice(&rsdt.to_le_bytes());
    rsdp[8] = 0;
    rsdp[8] = checksum(&rsdp);
    rsdp
}

/// The FADT and its pointer fields (offset in the FADT, size).
fn build_fadt(config: &PcAcpiConfig, facs: u32, dsdt: u32) -> (Vec<u8>, Vec<(u32, u8)>) {
    let mut fadt = FADTBuilder::new(OEM_ID, *b"VMKTFACP", OEM_REVISION);
    let Some(pm) = &config.pm else {
        // Hardware-reduced: nothing behind SCI, PM1 or the PM timer.
        fadt.major_version = 6;
        fadt.fadt_minor_version = 0;
        fadt.sci_int = u16::from(crate::config::SCI_IRQ).into();
        fadt.iapc_boot_arch = HW_REDUCED_BOOT_ARCH.into();
        fadt.dsdt = dsdt.into();
        fadt.x_dsdt = u64::from(dsdt).into();
        let fadt = fadt.flag(Flags::HwReducedAcpi).finalize();
        // DSDT at 40 (4 bytes) and X_DSDT at 140 (8 bytes); no FACS without hardware.
        return (serialize(&fadt), vec![(40, 4), (140, 8)]);
    };
    // ACPI 1.0 FADT, as QEMU builds for pc ("w2k requires FADT(rev1)").
    fadt.major_version = 1;
    fadt.firmware_ctrl = facs.into();
    fadt.dsdt = dsdt.into();
    fadt.sci_int = u16::from(pm.sci_irq).into();
    fadt.smi_cmd = u32::from(pm.smi_cmd).into();
    fadt.acpi_enable = pm.acpi_enable;
    fadt.acpi_disable = pm.acpi_disable;
    fadt.pm1a_evt_blk = u32::from(pm.io_base).into();
    fadt.pm1a_cnt_blk = (u32::from(pm.io_base) + 4).into();
    fadt.pm_tmr_blk = (u32::from(pm.io_base) + 8).into();
    fadt.pm1_evt_len = 4;
    fadt.pm1_cnt_len = 2;
    fadt.pm_tmr_len = 4;
    fadt.gpe0_blk = u32::from(pm.gpe0_blk).into();
    fadt.gpe0_blk_len = pm.gpe0_blk_len;
    fadt.p_lvl2_lat = 0x0fffu16.into(); // C2 not supported
    fadt.p_lvl3_lat = 0x0fffu16.into(); // C3 not supported
    fadt.century = RTC_CENTURY;
    // Revision 1 ends at the flags; the later fields stay zero and are cut off below.
    fadt.reset_reg = GAS::new(AddressSpace::SystemMemory, 0, 0, AccessSize::Undefined, 0);
    fadt.fadt_minor_version = 0;
    let mut fadt = fadt
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::RtcS4)
        .flag(Flags::UsePlatformClock);
    if config.apic_ids.len() > 8 {
        // Flat logical destination mode has room for 8 CPUs only.
        fadt = fadt.flag(Flags::ForceApicClusterModel);
    }
    let mut bytes = serialize(&fadt.finalize());
    bytes.truncate(FADT_REV1_LEN);
    bytes[4..8].copy_from_slice(&(FADT_REV1_LEN as u32).to_le_bytes());
    // Offset 44: ACPI 1.0 INT_MODEL, 1 = multiple APIC (acpi_tables keeps it reserved).
    bytes[44] = 1;
    bytes[9] = 0;
    bytes[9] = checksum(&bytes);
    // FIRMWARE_CTRL at 36, DSDT at 40, both 32-bit.
    (bytes, vec![(36, 4), (40, 4)])
}

/// Interrupt Source Override (MADT type 2); acpi_tables has no type for it.
fn interrupt_override(source: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut entry = vec![2, 10, 0, source];
    entry.extend_from_slice(&gsi.to_le_bytes());
    entry.extend_from_slice(&flags.to_le_bytes());
    entry
}

/// MPS INTI flags: active high (01), level triggered (11 << 2).
const LEVEL_ACTIVE_HIGH: u16 = 0x000d;

fn build_madt(config: &PcAcpiConfig) -> Vec<u8> {
    let mut madt = Sdt::new(*b"APIC", 44, 1, OEM_ID, *b"VMKTAPIC", OEM_REVISION);
    madt.write_u32(36, config.lapic_address);
    madt.write_u32(40, MADT_PCAT_COMPAT);
    for (uid, &apic_id) in config.apic_ids.iter().enumerate() {
        // Validated: at most 255 CPUs, so the UID fits.
        let uid = u8::try_from(uid).unwrap_or(u8::MAX);
        let lapic = ProcessorLocalApic::new(uid, apic_id, EnabledStatus::Enabled);
        madt.append_slice(&serialize(&lapic));
    }
    let ioapic = IoApic::new(
        config.ioapic.id,
        config.ioapic.address,
        config.ioapic.gsi_base,
    );
    madt.append_slice(&serialize(&ioapic));
    if config.irq0_to_gsi2 {
        // Flags 0: conforms to the ISA bus (edge, active high).
        madt.append_slice(&interrupt_override(0, 2, 0));
    }
    for irq in PCI_LEVEL_IRQS {
        let is_sci = config.pm.is_some_and(|pm| pm.sci_irq == irq);
        // QEMU declares all four whenever there is PCI.
        if is_sci || config.pci.is_some() {
            madt.append_slice(&interrupt_override(irq, u32::from(irq), LEVEL_ACTIVE_HIGH));
        }
    }
    if let Some(pm) = &config.pm {
        if !PCI_LEVEL_IRQS.contains(&pm.sci_irq) {
            madt.append_slice(&interrupt_override(
                pm.sci_irq,
                u32::from(pm.sci_irq),
                LEVEL_ACTIVE_HIGH,
            ));
        }
    }
    // Local APIC NMI (type 4): LINT1 of every processor (UID 0xff), flags conforming.
    madt.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    madt.as_slice().to_vec()
}

fn build_hpet() -> Vec<u8> {
    let mut hpet = Sdt::new(*b"HPET", 56, 1, OEM_ID, *b"VMKTHPET", OEM_REVISION);
    hpet.write_u32(36, HPET_BLOCK_ID);
    let base = GAS::new(
        AddressSpace::SystemMemory,
        0,
        0,
        AccessSize::Undefined,
        u64::from(HPET_ADDRESS),
    );
    hpet.write_bytes(40, &serialize(&base));
    // 52: HPET number 0; 53: minimum periodic tick 0; 55: no page protection.
    hpet.as_slice().to_vec()
}

impl AcpiTables {
    /// The bytes of `file`.
    pub fn file(&self, file: AcpiFile) -> &[u8] {
        match file {
            AcpiFile::Tables => &self.tables,
            AcpiFile::Rsdp => &self.rsdp,
        }
    }

    /// Applies the fix-ups as firmware does for files at `tables_addr` and `rsdp_addr`.
    pub fn link(&self, tables_addr: u64, rsdp_addr: u64) -> Result<LinkedTables> {
        let mut tables = self.tables.clone();
        let mut rsdp = self.rsdp.clone();
        let base = |file| match file {
            AcpiFile::Tables => tables_addr,
            AcpiFile::Rsdp => rsdp_addr,
        };
        for pointer in &self.pointers {
            let bytes = match pointer.file {
                AcpiFile::Tables => &mut tables,
                AcpiFile::Rsdp => &mut rsdp,
            };
            let size = usize::from(pointer.size);
            let at = pointer.offset as usize;
            let out_of_range = Error::FixupOutOfRange {
                file: pointer.file.name(),
                offset: pointer.offset,
                len: u32::from(pointer.size),
                file_len: bytes.len(),
            };
            if !matches!(size, 1 | 2 | 4 | 8) {
                return Err(out_of_range);
            }
            let field = bytes.get_mut(at..at + size).ok_or(out_of_range)?;
            let mut value = [0u8; 8];
            value[..size].copy_from_slice(field);
            let patched = u64::from_le_bytes(value).wrapping_add(base(pointer.target));
            let fits = size == 8 || patched >> (8 * size) == 0;
            if !fits || patched < base(pointer.target) {
                return Err(Error::PointerOverflow {
                    file: pointer.file.name(),
                    offset: pointer.offset,
                    size: pointer.size,
                    value: patched,
                });
            }
            field.copy_from_slice(&patched.to_le_bytes()[..size]);
        }
        for sum in &self.checksums {
            let bytes = match sum.file {
                AcpiFile::Tables => &mut tables,
                AcpiFile::Rsdp => &mut rsdp,
            };
            let range = sum.start as usize..sum.start as usize + sum.length as usize;
            let at = sum.offset as usize;
            if range.end > bytes.len() || !range.contains(&at) {
                return Err(Error::FixupOutOfRange {
                    file: sum.file.name(),
                    offset: sum.offset,
                    len: sum.length,
                    file_len: bytes.len(),
                });
            }
            bytes[at] = 0;
            bytes[at] = checksum(&bytes[range]);
        }
        Ok(LinkedTables {
            tables_addr,
            tables,
            rsdp_addr,
            rsdp,
        })
    }

    /// Links the tables for `tables_addr` and `rsdp_addr` and writes both into guest memory,
    /// for booting an OS without firmware. The RSDP must be 16-byte aligned inside
    /// 0xe0000-0xfffff (where Linux scans), the tables 64-byte aligned (the FACS) and below
    /// 4 GiB (32-bit pointers), and the two must not overlap.
    pub fn write_to_memory<M>(
        &self,
        memory: &M,
        tables_addr: u64,
        rsdp_addr: u64,
    ) -> Result<LinkedTables>
    where
        M: Bytes<GuestAddress> + ?Sized,
        M::E: std::fmt::Display,
    {
        if rsdp_addr % RSDP_ALIGN != 0 {
            return Err(Error::Misaligned {
                what: "RSDP",
                addr: rsdp_addr,
                align: RSDP_ALIGN,
            });
        }
        if tables_addr % TABLES_ALIGN != 0 {
            return Err(Error::Misaligned {
                what: "tables",
                addr: tables_addr,
                align: TABLES_ALIGN,
            });
        }
        let rsdp_end = rsdp_addr.saturating_add(self.rsdp.len() as u64);
        if rsdp_addr < 0xe_0000 || rsdp_end > BIOS_AREA_END {
            return Err(Error::RsdpOutsideBiosArea { addr: rsdp_addr });
        }
        let tables_end = tables_addr.saturating_add(self.tables.len() as u64);
        if rsdp_addr < tables_end && tables_addr < rsdp_end {
            return Err(Error::Overlap {
                rsdp: rsdp_addr,
                rsdp_len: self.rsdp.len(),
                tables: tables_addr,
                tables_len: self.tables.len(),
            });
        }
        let linked = self.link(tables_addr, rsdp_addr)?;
        memory
            .write_slice(&linked.tables, GuestAddress(tables_addr))
            .map_err(|e| Error::GuestMemory {
                what: "ACPI tables",
                addr: tables_addr,
                reason: e.to_string(),
            })?;
        memory
            .write_slice(&linked.rsdp, GuestAddress(rsdp_addr))
            .map_err(|e| Error::GuestMemory {
                what: "RSDP",
                addr: rsdp_addr,
                reason: e.to_string(),
            })?;
        Ok(linked)
    }

    /// [`write_to_memory`](Self::write_to_memory) at the fixed BIOS-area addresses
    /// [`BIOS_AREA_TABLES`] and [`BIOS_AREA_RSDP`]; the tables must end by 1 MiB.
    pub fn write_to_bios_area<M>(&self, memory: &M) -> Result<LinkedTables>
    where
        M: Bytes<GuestAddress> + ?Sized,
        M::E: std::fmt::Display,
    {
        let end = BIOS_AREA_TABLES + self.tables.len() as u64;
        if end > BIOS_AREA_END {
            return Err(Error::GuestMemory {
                what: "ACPI tables",
                addr: BIOS_AREA_TABLES,
                reason: format!(
                    "{} bytes do not fit below {BIOS_AREA_END:#x}",
                    self.tables.len()
                ),
            });
        }
        self.write_to_memory(memory, BIOS_AREA_TABLES, BIOS_AREA_RSDP)
    }
}
