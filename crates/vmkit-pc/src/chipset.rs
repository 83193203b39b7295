//! The pc machine's chipset as QEMU's `pc` builds it (`pc_init1` → `i440fx_init`,
//! `piix3_create`, `piix4_pm_init`, `fw_cfg_arch_create`): the PCI host at 0xCF8 with the
//! i440FX at 00:00.0, the PIIX3 ISA bridge at 00:01.0, its IDE function at 00:01.1 and the
//! PIIX4 power management at 00:01.3, plus fw_cfg at 0x510.
//!
//! The register models are vmkit-pci (config space, mechanism #1, BAR mapping) and
//! vmkit-piix (the four functions); this module only connects their outputs: PAM changes to
//! the region tree ([`crate::pam`]), the SCI to ISA IRQ 9, S5 and the 0xCF9 reset to the
//! machine's events.

use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryAtomic;
use vmkit_bus::{MmioBus, PioBus, PioRange};
use vmkit_fwcfg::FwCfg;
use vmkit_hw::{lock, Clock};
use vmkit_isa::MachineEvents;
use vmkit_isa::{IrqRouter, IsaIrqLine};
use vmkit_memory::{AddressSpace, GuestMemoryView};
use vmkit_pci::{DevFn, PciBus, PciHost, RegionTreeMapper};
use vmkit_piix::pm::{APM_CNT_PORT, GPE0_BASE, GPE0_LEN};
use vmkit_piix::{
    I440fx, IdeNoDrives, PamListener, PamMode, PamSegment, PciIntx, Piix3, Piix3Ide, Piix4Pm,
    PowerEvents,
};

use crate::error::Result;
use crate::pam::{PamRoute, PamWindows};

/// The i440FX host bridge's slot.
pub const I440FX_DEVFN: DevFn = DevFn(0);
/// The PIIX3 ISA bridge's slot (00:01.0).
pub const PIIX3_DEVFN: DevFn = DevFn(1 << 3);
/// The PIIX3 IDE function's slot (00:01.1).
pub const PIIX3_IDE_DEVFN: DevFn = DevFn(1 << 3 | 1);
/// The PIIX4 PM function's slot (00:01.3).
pub const PIIX4_PM_DEVFN: DevFn = DevFn(1 << 3 | 3);
/// Where vmkit puts the PM block when it boots an OS without firmware: SeaBIOS's choice.
pub const DEFAULT_PM_BASE: u16 = 0x600;
/// ISA IRQ of the SCI (hard-wired on QEMU's pc).
pub const SCI_IRQ: u32 = 9;

/// The fw_cfg device as the machine builds it (DMA into guest memory).
pub type MachineFwCfg = FwCfg<GuestMemoryAtomic<GuestMemoryView>>;

/// Bus entry name of the PCI configuration ports.
pub const PCI_HOST_NAME: &str = "/machine/i440fx/pci-conf";
/// Bus entry name of fw_cfg.
pub const FW_CFG_NAME: &str = "/machine/fw_cfg";

/// The PAM segments of the i440FX: twelve 16 KiB pieces over 0xC0000-0xEFFFF and the
/// 64 KiB system BIOS segment at 0xF0000.
pub fn pam_segments() -> Vec<(u64, u64)> {
    let mut segments: Vec<(u64, u64)> = (0..12).map(|i| (0xc_0000 + i * 0x4000, 0x4000)).collect();
    segments.push((0xf_0000, 0x1_0000));
    segments
}

/// The built chipset.
pub struct Chipset {
    /// PCI bus 0.
    pub pci: PciBus,
    /// The configuration mechanism (and the 0xCF9 reset register).
    pub host: Arc<Mutex<PciHost>>,
    /// fw_cfg.
    pub fw_cfg: Arc<Mutex<MachineFwCfg>>,
    /// The PAM windows the i440FX drives.
    pub pam: Arc<Mutex<PamWindows>>,
    /// The PIIX4 PM function (power button, S5).
    pub pm: Arc<Mutex<Piix4Pm>>,
    /// The i440FX host bridge (PAM, SMRAM).
    pub i440fx: Arc<Mutex<I440fx>>,
    /// The PIIX3 PCI-to-ISA bridge (PIRQ routes).
    pub piix3: Arc<Mutex<Piix3>>,
    /// The PIIX3's IDE function.
    pub ide: Arc<Mutex<Piix3Ide>>,
    /// INTx of the PCI functions, steered through the PIIX3's PIRQ routes to ISA IRQs.
    pub intx: Arc<PciIntx>,
    /// Places PCI regions in the memory space and in [`io_space`](Self::io_space), as
    /// QEMU's `pci_update_mappings` adds subregions; their bus entries follow the views.
    pub mapper: Arc<RegionTreeMapper>,
    /// Whether vmkit programs the PM block itself on every reset (no firmware to do it).
    pm_setup: bool,
}

impl std::fmt::Debug for Chipset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chipset")
            .field("pci", &self.pci.devfns())
            .finish_non_exhaustive()
    }
}

/// What the chipset is connected to.
pub struct ChipsetParts {
    /// The port bus.
    pub pio: PioBus,
    /// The MMIO bus.
    pub mmio: MmioBus,
    /// The address space (PAM switches aliases in it from the vCPU thread).
    pub memory: Arc<Mutex<AddressSpace>>,
    /// Where guest resets (0xCF9) and power-off (S5) go.
    pub events: Arc<dyn MachineEvents>,
    /// Where ISA IRQs go (the SCI is IRQ 9).
    pub irq: Arc<dyn IrqRouter>,
    /// The clock of the PM timer.
    pub clock: Arc<dyn Clock>,
    /// Program the PM block as firmware would (boots without firmware).
    pub pm_setup: bool,
}

impl Chipset {
    /// Maps the PCI host and fw_cfg on the port bus; the PCI functions are added by the
    /// caller with [`PciBus::add`].
    pub fn new(parts: &ChipsetParts, fw_cfg: MachineFwCfg, pam: PamWindows) -> Result<Self> {
        let pam = Arc::new(Mutex::new(pam));
        // QEMU's `io` address space: I/O BARs are regions in it as memory BARs are in
        // the memory space, so ioeventfds and listeners treat both alike.
        let io = Arc::new(Mutex::new(AddressSpace::new("io")));
        let mapper = Arc::new(RegionTreeMapper::new(
            Arc::clone(&parts.memory),
            parts.mmio.clone(),
            io,
            parts.pio.clone(),
        )?);
        let pci = PciBus::with_mapper(mapper.clone());
        let events = Arc::clone(&parts.events);
        // Both the soft and the hard reset of 0xCF9 reset the whole machine, as QEMU's
        // `rcr_write` does (qemu_system_reset_request).
        let host =
            PciHost::with_reset(pci.clone(), Box::new(move |_hard| events.reset_requested()));
        let host = Arc::new(Mutex::new(host));
        parts.pio.insert(
            PioRange::new(PciHost::BASE, PciHost::LEN)?,
            PCI_HOST_NAME,
            Arc::new(vmkit_hw::Locked(Arc::clone(&host))),
        )?;
        let fw_cfg = Arc::new(Mutex::new(fw_cfg));
        parts.pio.insert(
            PioRange::new(vmkit_fwcfg::FW_CFG_IO_BASE, vmkit_fwcfg::FW_CFG_IO_LEN)?,
            FW_CFG_NAME,
            Arc::new(vmkit_hw::Locked(Arc::clone(&fw_cfg))),
        )?;
        let listener = Arc::new(PamToRegions {
            pam: Arc::clone(&pam),
            memory: Arc::clone(&parts.memory),
        });
        let i440fx = Arc::new(Mutex::new(I440fx::new(listener)));
        pci.add(I440FX_DEVFN, i440fx.clone())?;
        let piix3 = Arc::new(Mutex::new(Piix3::new()));
        let irq = Arc::clone(&parts.irq);
        let intx = Arc::new(PciIntx::new(
            Arc::clone(&piix3),
            Arc::new(move |line, level| irq.set_irq(u32::from(line), level)),
        ));
        lock(&piix3).set_listener(intx.listener());
        pci.add(PIIX3_DEVFN, piix3.clone())?;
        let ide = Arc::new(Mutex::new(Piix3Ide::new()));
        pci.add(PIIX3_IDE_DEVFN, ide.clone())?;
        for (base, len) in IdeNoDrives::RANGES {
            parts.pio.insert(
                PioRange::new(base, len)?,
                "/machine/i440fx/pci.0/piix3-ide/ide",
                Arc::new(IdeNoDrives),
            )?;
        }
        let sci = Arc::new(IsaIrqLine::new(Arc::clone(&parts.irq), SCI_IRQ)?);
        let power = Arc::new(PowerToEvents(Arc::clone(&parts.events)));
        let pm = Arc::new(Mutex::new(Piix4Pm::new(
            Arc::clone(&parts.clock),
            sci,
            power,
        )));
        pci.add(PIIX4_PM_DEVFN, pm.clone())?;
        parts.pio.insert(
            PioRange::new(GPE0_BASE, GPE0_LEN)?,
            "/machine/i440fx/pci.0/piix4-pm/gpe0",
            Arc::new(PmPorts {
                pm: Arc::clone(&pm),
                block: PmBlock::Gpe0,
            }),
        )?;
        parts.pio.insert(
            PioRange::new(APM_CNT_PORT, 2)?,
            "/machine/i440fx/pci.0/piix4-pm/apm",
            Arc::new(PmPorts {
                pm: Arc::clone(&pm),
                block: PmBlock::Apm,
            }),
        )?;
        let chipset = Self {
            pci,
            host,
            fw_cfg,
            pam,
            pm,
            i440fx,
            piix3,
            ide,
            intx,
            mapper,
            pm_setup: parts.pm_setup,
        };
        chipset.program_pm();
        Ok(chipset)
    }

    /// For boots without firmware: PMBA = 0x600, PM I/O on, SCI on IRQ 9.
    fn program_pm(&self) {
        if self.pm_setup {
            {
                let mut pm = lock(&self.pm);
                pm.set_pm_base(DEFAULT_PM_BASE);
                vmkit_pci::PciDevice::config_mut(&mut *pm)
                    .set_byte(vmkit_pci::config::INTERRUPT_LINE, SCI_IRQ as u8);
            }
            self.pci.update_mappings(PIIX4_PM_DEVFN);
        }
    }

    /// The port I/O address space I/O BARs are mapped in.
    pub fn io_space(&self) -> &Arc<Mutex<AddressSpace>> {
        self.mapper.io_space()
    }

    /// Presses the power button (QMP `system_powerdown`): PWRBTN_STS, and the SCI when the
    /// guest enabled it.
    pub fn power_button(&self) {
        lock(&self.pm).power_button();
    }

    /// A machine reset: every PCI function to its power-on state (which routes every PAM
    /// segment back to PCI through the i440FX's listener), the host's latches, fw_cfg's
    /// selector.
    pub fn reset(&self) {
        self.pci.reset();
        lock(&self.host).reset();
        lock(&self.fw_cfg).reset();
        self.program_pm();
    }
}

/// The i440FX's PAM changes, applied to the region tree.
struct PamToRegions {
    pam: Arc<Mutex<PamWindows>>,
    memory: Arc<Mutex<AddressSpace>>,
}

impl PamListener for PamToRegions {
    fn pam_changed(&self, segment: PamSegment, mode: PamMode) {
        let route = PamRoute {
            read_ram: mode.reads_ram(),
            write_ram: mode.writes_ram(),
        };
        let mut memory = lock(&self.memory);
        if let Err(e) = lock(&self.pam).set_route(&mut memory, segment.base, route) {
            // The guest cannot be told; the segment keeps its previous route.
            eprintln!(
                "vmkit: PAM segment {:#x}: cannot switch to {mode:?}: {e}",
                segment.base
            );
        }
    }
}

/// S5 from the PIIX4's PM1_CNT ends the machine; other sleep states are not modelled.
struct PowerToEvents(Arc<dyn MachineEvents>);

impl PowerEvents for PowerToEvents {
    fn sleep(&self, slp_typ: u8) {
        if slp_typ == vmkit_piix::pm::SLP_TYP_S5 {
            self.0.poweroff_requested();
        }
    }
}

enum PmBlock {
    Gpe0,
    Apm,
}

/// The PIIX4's fixed-port blocks (GPE0 at 0xAFE0, APM at 0xB2) on the port bus.
struct PmPorts {
    pm: Arc<Mutex<Piix4Pm>>,
    block: PmBlock,
}

impl vm_device::DevicePio for PmPorts {
    fn pio_read(
        &self,
        _base: vm_device::bus::PioAddress,
        offset: vm_device::bus::PioAddressOffset,
        data: &mut [u8],
    ) {
        let pm = lock(&self.pm);
        match self.block {
            PmBlock::Gpe0 => pm.gpe_read(u64::from(offset), data),
            PmBlock::Apm => pm.apm_read(u64::from(offset), data),
        }
    }

    fn pio_write(
        &self,
        _base: vm_device::bus::PioAddress,
        offset: vm_device::bus::PioAddressOffset,
        data: &[u8],
    ) {
        let mut pm = lock(&self.pm);
        match self.block {
            PmBlock::Gpe0 => pm.gpe_write(u64::from(offset), data),
            PmBlock::Apm => pm.apm_write(u64::from(offset), data),
        }
    }
}

/// QEMU's type of the x86 fw_cfg device (`/machine/fw_cfg`).
pub const TYPE_FW_CFG_IO: &str = "fw_cfg_io";
/// QEMU's type of the i440FX host (`/machine/i440fx`).
pub const TYPE_I440FX_PCIHOST: &str = "i440FX-pcihost";
/// QEMU's type of the i440FX PCI function (00:00.0).
pub const TYPE_I440FX: &str = "i440FX";
/// QEMU's type of the PIIX3 ISA bridge (00:01.0).
pub const TYPE_PIIX3: &str = "PIIX3";
/// QEMU's type of the PIIX3 IDE function (00:01.1).
pub const TYPE_PIIX3_IDE: &str = "piix3-ide";
/// QEMU's type of the PIIX4 PM function (00:01.3).
pub const TYPE_PIIX4_PM: &str = "PIIX4_PM";

fn fixed_uint(name: &str, value: u64, description: &str) -> vmkit_object::PropertyDef {
    vmkit_object::PropertyDef::uint(name, 0..=u64::from(u32::MAX))
        .default(value)
        .read_only()
        .description(description)
}

/// The chipset's object types, with QEMU's names and the properties QEMU shows for them
/// (read-only here: the chipset is wired when the machine is built, not by these objects).
pub fn chipset_types() -> Vec<vmkit_object::TypeInfo> {
    use vmkit_object::{PropertyDef, TypeInfo};
    let function = |name: &str, description: &str, addr: u64| {
        TypeInfo::new(name)
            .parent("container")
            .description(description)
            .property(fixed_uint(
                "addr",
                addr,
                "slot and function: (slot << 3) | function",
            ))
    };
    vec![
        TypeInfo::new(TYPE_FW_CFG_IO)
            .parent("container")
            .description("QEMU's firmware configuration interface, x86 I/O ports")
            .property(fixed_uint(
                "iobase",
                u64::from(vmkit_fwcfg::FW_CFG_IO_BASE),
                "selector port (data at +1)",
            ))
            .property(fixed_uint("dma_iobase", 0x514, "DMA address register"))
            .property(
                PropertyDef::bool("dma_enabled")
                    .default(true)
                    .read_only()
                    .description("the DMA interface is offered (FW_CFG_ID bit 1)"),
            ),
        TypeInfo::new(TYPE_I440FX_PCIHOST)
            .parent("container")
            .description("i440FX PCI host: configuration mechanism #1 at 0xCF8/0xCFC"),
        function(TYPE_I440FX, "Intel 82441FX PMC host bridge (PAM, SMRAM)", 0),
        function(
            TYPE_PIIX3,
            "Intel 82371SB PIIX3 ISA bridge (PIRQ routing)",
            8,
        ),
        function(TYPE_PIIX3_IDE, "Intel 82371SB PIIX3 IDE (no drives)", 9),
        function(
            TYPE_PIIX4_PM,
            "Intel 82371AB PIIX4 power management (ACPI PM1, PM timer, SCI, S5)",
            11,
        ),
    ]
}

/// Places the chipset's objects as QEMU's pc has them: `/machine/fw_cfg`,
/// `/machine/i440fx` with the functions under `/machine/i440fx/pci.0`.
pub fn add_chipset_objects(tree: &vmkit_object::ObjectTree) -> Result<()> {
    let registry = tree.registry();
    tree.add("/machine", "fw_cfg", &registry.new_object(TYPE_FW_CFG_IO)?)?;
    tree.add(
        "/machine",
        "i440fx",
        &registry.new_object(TYPE_I440FX_PCIHOST)?,
    )?;
    tree.add(
        "/machine/i440fx",
        "pci.0",
        &registry.new_object("container")?,
    )?;
    for (name, type_name) in [
        ("i440fx", TYPE_I440FX),
        ("piix3", TYPE_PIIX3),
        ("piix3-ide", TYPE_PIIX3_IDE),
        ("piix4-pm", TYPE_PIIX4_PM),
    ] {
        tree.add(
            "/machine/i440fx/pci.0",
            name,
            &registry.new_object(type_name)?,
        )?;
    }
    Ok(())
}
