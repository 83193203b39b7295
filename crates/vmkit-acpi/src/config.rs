//! What the tables describe.

/// Local APIC base address (every CPU's, as the MADT header says).
pub const LAPIC_ADDRESS: u32 = 0xfee0_0000;
/// IOAPIC base address.
pub const IOAPIC_ADDRESS: u32 = 0xfec0_0000;
/// HPET base address (QEMU's and the chipsets').
pub const HPET_ADDRESS: u32 = 0xfed0_0000;
/// Size of the HPET register block.
pub const HPET_LEN: u32 = 0x400;
/// The PIIX4 PM I/O base SeaBIOS programs into PMBA (QEMU's tables use whatever PMBA says).
pub const PIIX4_PM_IO_BASE: u16 = 0x600;
/// The ISA IRQ of the SCI on QEMU's pc.
pub const SCI_IRQ: u8 = 9;
/// The APM command port the FADT names as SMI_CMD.
pub const SMI_CMD_PORT: u16 = 0xb2;
/// Value written to SMI_CMD to switch to ACPI mode (PIIX4 in QEMU).
pub const ACPI_ENABLE_CMD: u8 = 0xf1;
/// Value written to SMI_CMD to leave ACPI mode.
pub const ACPI_DISABLE_CMD: u8 = 0xf0;
/// QEMU pc's GPE0 block (the PIIX4 PM device's, hot-plug status/enable).
pub const PIIX4_GPE0_BLK: u16 = 0xafe0;
/// Length of QEMU pc's GPE0 block.
pub const PIIX4_GPE0_BLK_LEN: u8 = 4;
/// Most CPUs: one-byte APIC ids, 0xff is broadcast.
pub const MAX_CPUS: u32 = 255;

/// The IOAPIC the MADT lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApicConfig {
    /// IOAPIC id (QEMU's pc: 0).
    pub id: u8,
    /// MMIO base.
    pub address: u32,
    /// First GSI of its pins.
    pub gsi_base: u32,
}

impl Default for IoApicConfig {
    fn default() -> Self {
        IoApicConfig {
            id: 0,
            address: IOAPIC_ADDRESS,
            gsi_base: 0,
        }
    }
}

/// The PIIX4 power-management function (00:01.3 on QEMU's pc): the FADT's fixed hardware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piix4PmConfig {
    /// PM I/O base (PMBA): PM1a_EVT at +0 (4 bytes), PM1a_CNT at +4 (2), PM_TMR at +8 (4).
    pub io_base: u16,
    /// ISA IRQ of the SCI.
    pub sci_irq: u8,
    /// SMI command port.
    pub smi_cmd: u16,
    /// SMI_CMD value that enables ACPI mode.
    pub acpi_enable: u8,
    /// SMI_CMD value that disables ACPI mode.
    pub acpi_disable: u8,
    /// GPE0 block I/O base.
    pub gpe0_blk: u16,
    /// GPE0 block length in bytes.
    pub gpe0_blk_len: u8,
    /// Advertise S3 (`\_S3_` = {1, 1, 0, 0}); QEMU does unless `disable_s3=1`.
    pub s3: bool,
    /// Advertise S4 (`\_S4_` = {2, 2, 0, 0}); QEMU does unless `disable_s4=1`.
    pub s4: bool,
}

impl Default for Piix4PmConfig {
    fn default() -> Self {
        Piix4PmConfig {
            io_base: PIIX4_PM_IO_BASE,
            sci_irq: SCI_IRQ,
            smi_cmd: SMI_CMD_PORT,
            acpi_enable: ACPI_ENABLE_CMD,
            acpi_disable: ACPI_DISABLE_CMD,
            gpe0_blk: PIIX4_GPE0_BLK,
            gpe0_blk_len: PIIX4_GPE0_BLK_LEN,
            s3: true,
            s4: true,
        }
    }
}

/// The i440FX PCI host bridge and the PIIX3 ISA bridge at 00:01.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciConfig {
    /// First byte of the 32-bit PCI MMIO hole (QEMU: the end of RAM below 4 GiB).
    pub hole32_start: u32,
    /// Last byte of the 32-bit hole (QEMU: just below the IOAPIC, 0xfebfffff).
    pub hole32_end: u32,
    /// The 64-bit hole, first and last byte, if any.
    pub hole64: Option<(u64, u64)>,
}

impl PciConfig {
    /// QEMU's hole for a machine with `ram_below_4g` bytes of RAM under 4 GiB.
    pub fn for_ram_below_4g(ram_below_4g: u32) -> Self {
        PciConfig {
            hole32_start: ram_below_4g,
            hole32_end: IOAPIC_ADDRESS - 1,
            hole64: None,
        }
    }
}

/// Everything [`build_pc_tables`](crate::build_pc_tables) describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcAcpiConfig {
    /// APIC id of each CPU, in CPU order; the ACPI processor UID is the index.
    pub apic_ids: Vec<u8>,
    /// Local APIC base address.
    pub lapic_address: u32,
    /// The IOAPIC.
    pub ioapic: IoApicConfig,
    /// The PIIX4 PM device. With it the FADT is a full (ACPI 1.0, revision 1) FADT as QEMU's
    /// pc; without it the FADT is hardware-reduced (revision 6): no SCI, PM timer or
    /// ACPI-mode switch, for a machine that has none of that hardware.
    pub pm: Option<Piix4PmConfig>,
    /// The PCI host bridge; `None` leaves `\_SB.PCI0` out of the DSDT.
    pub pci: Option<PciConfig>,
    /// An HPET at [`HPET_ADDRESS`]: HPET table and `\_SB.HPET` device.
    pub hpet: bool,
    /// ISA IRQ 0 goes to GSI 2 (QEMU's routing) and the MADT says so; `false` for KVM's
    /// default routing, where IRQ 0 is on pin 0.
    pub irq0_to_gsi2: bool,
    /// COM1 (PNP0501 at 0x3f8, IRQ 4) in the DSDT.
    pub com1: bool,
    /// A control-method power button device (PNP0C0C) in the DSDT. QEMU's pc has none: its
    /// power button is the fixed-feature one (FADT PWR_BUTTON flag clear), which every full
    /// FADT here declares.
    pub power_button_device: bool,
}

impl PcAcpiConfig {
    /// QEMU's `-M pc` with `cpus` CPUs (APIC ids 0..cpus) and `ram_below_4g` bytes of RAM
    /// under 4 GiB: PIIX4 PM at 0x600, PCI, HPET, IRQ0 on GSI2, COM1, IOAPIC id 0.
    pub fn qemu_pc(cpus: u8, ram_below_4g: u32) -> Self {
        PcAcpiConfig {
            apic_ids: (0..cpus).collect(),
            lapic_address: LAPIC_ADDRESS,
            ioapic: IoApicConfig::default(),
            pm: Some(Piix4PmConfig::default()),
            pci: Some(PciConfig::for_ram_below_4g(ram_below_4g)),
            hpet: true,
            irq0_to_gsi2: true,
            com1: true,
            power_button_device: false,
        }
    }

    /// A pc without PM, PCI or HPET and with KVM's default IRQ routing (IRQ n on pin n), as
    /// vmkit's pc machine boots Linux today: hardware-reduced FADT, IOAPIC id `cpus` (as in
    /// the MP table), COM1.
    pub fn without_chipset(cpus: u8) -> Self {
        PcAcpiConfig {
            apic_ids: (0..cpus).collect(),
            lapic_address: LAPIC_ADDRESS,
            ioapic: IoApicConfig {
                id: cpus,
                ..IoApicConfig::default()
            },
            pm: None,
            pci: None,
            hpet: false,
            irq0_to_gsi2: false,
            com1: true,
            power_button_device: false,
        }
    }
}
