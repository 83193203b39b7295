//! The `pc` machine: memory, firmware or a flat binary, vCPUs, and the ISA devices wired by
//! type name through the object registry, in either interrupt model (QEMU's `pc_init1`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_mp_state, KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_UNINITIALIZED};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic};
use vmkit_acpi::{build_pc_tables, write_mptable_to_ebda, PcAcpiConfig};
use vmkit_bus::{MmioBus, MmioRange, PioBus};
use vmkit_cpu::{boot_msrs, build_cpuid, CpuModel};
use vmkit_fwcfg::FwCfg;
use vmkit_hpet::{HPET_BASE, HPET_LEN};
use vmkit_hw::{Clock, MonotonicClock};
use vmkit_isa::{
    add_pc_isa_devices, register_isa_types, IsaConfig, IsaContext, IsaDevices, MachineEvents,
    SerialBackend, UserspacePic,
};
use vmkit_kvm::{KvmMemoryListener, KvmSystem, Vcpu, Vm};
use vmkit_memory::{AddressSpace, GuestMemoryView};
use vmkit_object::{Context, ObjectTree, Registry, TypeInfo};
use vmkit_pcglue::CmosMemoryLayout;

use crate::boot;
use crate::chipset::{pam_segments, Chipset, ChipsetParts};
use crate::error::{Error, Result};
use crate::firmware::{load_firmware, map_firmware};
use crate::hpet::{build_hpet, HpetLines, LegacyGate, MachineHpet, PitLegacy, HPET_NAME};
use crate::irq::KernelIrqRouter;
use crate::layout::{
    configure_kvm_pages, MemoryLayout, BIOS_AREA_START, HIGH_MEMORY_START, PCI_HOLE_START,
};
use crate::linux::{self, LinuxBoot, LoadedLinux};
use crate::pam::{IsaRom, PamWindows};
use crate::pci_devices::{needs_pci_context, KvmMsi, PciContext};

/// Which interrupt controllers and timer run where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IrqchipMode {
    /// KVM's PIC/IOAPIC/LAPIC (`KVM_CREATE_IRQCHIP`) and PIT (`KVM_CREATE_PIT2`).
    #[default]
    Kernel,
    /// vmkit's i8259 pair and i8254 in the VMM; interrupts injected with `KVM_INTERRUPT`.
    User,
}

/// CPU mode a flat binary starts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlatMode {
    /// Real mode.
    Real,
    /// 64-bit mode with identity paging of the first 4 GiB.
    Long,
}

/// What the boot vCPU runs.
#[derive(Debug, Clone)]
pub enum BootSource {
    /// A firmware image file, mapped as QEMU's `-bios` does; start at the reset vector.
    FirmwareFile(PathBuf),
    /// A firmware image in memory.
    Firmware(Vec<u8>),
    /// A Linux kernel booted as the x86 boot protocol or PVH describes (see
    /// [`crate::linux`]); loaded again on every reset.
    Linux(Box<LinuxBoot>),
    /// A flat binary copied to `addr` (and again on every reset), entered at `entry`.
    Flat {
        /// The bytes.
        image: Vec<u8>,
        /// Guest physical load address.
        addr: u64,
        /// Entry point.
        entry: u64,
        /// CPU mode at entry.
        mode: FlatMode,
    },
}

impl BootSource {
    /// A flat binary read from `path`, refused before it is read when it holds more than
    /// `limit` bytes (the guest's RAM).
    pub fn flat_file(
        path: impl Into<PathBuf>,
        addr: u64,
        entry: u64,
        mode: FlatMode,
        limit: u64,
    ) -> Result<Self> {
        let path = path.into();
        let image = crate::image_file::read_image("flat binary", &path, limit)?;
        if image.is_empty() {
            // Zeroed RAM would run as `add [bx+si], al` forever.
            return Err(Error::Config(format!(
                "flat binary {} is empty: nothing to run",
                path.display()
            )));
        }
        Ok(BootSource::Flat {
            image,
            addr,
            entry,
            mode,
        })
    }
}

/// The abstract type of machines.
pub const TYPE_MACHINE: &str = "machine";
/// The `pc` machine type (the object at `/machine`).
pub const TYPE_PC: &str = "pc";

/// The stack pointer given to flat binaries in 64-bit mode: the top of conventional memory,
/// below the EBDA.
pub const FLAT_STACK_TOP: u64 = 0x9_f000;

/// Configuration of a `pc` machine.
pub struct PcConfig {
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// Number of vCPUs (more than one needs the in-kernel irqchip).
    pub smp: usize,
    /// The guest CPU: `host` (KVM's supported CPUID) with `-cpu` feature edits.
    pub cpu: CpuModel,
    /// The interrupt model.
    pub irqchip: IrqchipMode,
    /// What runs.
    pub boot: BootSource,
    /// COM1's backend (`None`: COM1 exists but its output is discarded).
    pub com1: Option<SerialBackend>,
    /// `-device` option texts, created after the standard devices.
    pub devices: Vec<String>,
    /// Character backends by chardev id, for devices with `chardev=ID` (`isa-serial`,
    /// `isa-debugcon`).
    pub chardevs: Vec<(String, SerialBackend)>,
    /// Network backends by `-netdev` id, for `virtio-net-pci,netdev=ID`.
    pub netdevs: Vec<(String, Box<dyn vmkit_net::NetBackend>)>,
    /// A Linux kernel the firmware boots from fw_cfg (`-kernel` with `-bios`); needs a
    /// firmware [`boot`](Self::boot).
    pub firmware_linux: Option<Box<crate::linux::FirmwareLinux>>,
    /// The HPET at 0xFED00000 and its ACPI table, as QEMU's pc has them (`-no-hpet`: false).
    pub hpet: bool,
    /// Opened `-drive` backends by id, for `virtio-blk-pci,drive=ID`.
    pub drives: Vec<(String, Arc<dyn vmkit_block::BlockBackend>)>,
}

impl std::fmt::Debug for PcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcConfig")
            .field("ram_size", &self.ram_size)
            .field("smp", &self.smp)
            .field("cpu", &self.cpu)
            .field("irqchip", &self.irqchip)
            .field("com1", &self.com1.is_some())
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

/// A built `pc` machine: everything a runtime needs to run it.
pub struct PcMachine {
    /// The VM.
    pub vm: Arc<Vm>,
    /// Guest physical memory (its KVM listener keeps the slots in sync); the i440FX's PAM
    /// registers change it from vCPU threads.
    pub memory: Arc<Mutex<AddressSpace>>,
    /// The memory layout.
    pub layout: MemoryLayout,
    /// The port bus.
    pub pio: PioBus,
    /// The MMIO bus.
    pub mmio: MmioBus,
    /// The object registry with the ISA device types.
    pub registry: Registry,
    /// The composition tree (`/machine/...`).
    pub tree: ObjectTree,
    /// The standard ISA devices.
    pub isa: IsaDevices,
    /// Device timers (serviced by the runtime's host timer).
    pub timers: vmkit_isa::DeviceTimers,
    /// The userspace PIC pair (userspace model).
    pub pic: Option<Arc<UserspacePic>>,
    /// The vCPUs, boot processor first (taken by the runtime).
    pub vcpus: Vec<Vcpu>,
    /// The monotonic clock devices use.
    pub clock: MonotonicClock,
    boot: Arc<BootSource>,
    linux: Option<LoadedLinux>,
    /// Where the Linux MP table goes on reset: the vCPU count (Linux on the in-kernel irqchip).
    mptable_cpus: Option<usize>,
    guest_memory: GuestMemoryAtomic<GuestMemoryView>,
    /// The PCI chipset and fw_cfg.
    pub chipset: Arc<Chipset>,
    /// The HPET (unless `-no-hpet`).
    pub hpet: Option<Arc<Mutex<MachineHpet>>>,
    /// KVM ioeventfds and irqfds of the PCI devices.
    pub notifiers: Arc<crate::notifiers::MachineNotifiers>,
    /// The regions of guest RAM (`pc.ram` and its aliases), e.g. for dirty logging.
    pub ram_regions: crate::layout::RamRegions,
}

impl std::fmt::Debug for PcMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcMachine")
            .field("layout", &self.layout)
            .field("vcpus", &self.vcpus.len())
            .field("userspace_pic", &self.pic.is_some())
            .finish_non_exhaustive()
    }
}

/// A registry with every type a `pc` machine uses: the machine types and the devices
/// `-device` can add (for `-device help`, `-machine help` and QMP introspection).
pub fn pc_registry() -> Result<Registry> {
    let registry = Registry::new();
    register_isa_types(&registry)?;
    registry.register(
        TypeInfo::new(TYPE_MACHINE)
            .parent("container")
            .abstract_type()
            .description("a machine: the root of /machine"),
    )?;
    registry.register_all(crate::chipset::chipset_types())?;
    registry.register_all(crate::pci_devices::pci_device_types())?;
    registry.register(
        TypeInfo::new(TYPE_PC)
            .parent(TYPE_MACHINE)
            .description("Standard PC (i440FX + PIIX, 1996)"),
    )?;
    Ok(registry)
}

/// `-device` creates devices only: ISA and PCI devices and virtio serial ports, as QEMU's
/// `-device` takes `TYPE_DEVICE` subtypes only (`-device pc` or `-device container` is
/// refused, not added to the tree). Unknown and abstract types are left to the registry,
/// whose errors name them.
fn check_device_type(registry: &Registry, options: &str) -> Result<()> {
    let Ok(parsed) = vmkit_object::ObjectOptions::parse(options) else {
        return Ok(());
    };
    let Ok(class) = registry.class(&parsed.type_name) else {
        return Ok(());
    };
    let is_device = [
        vmkit_isa::TYPE_ISA_DEVICE,
        crate::pci_devices::TYPE_PCI_DEVICE,
        crate::pci_devices::TYPE_VIRTIO_SERIAL_PORT,
    ]
    .iter()
    .any(|base| class.is_a(base));
    if is_device {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "-device {}: '{}' is not a valid device model name (-device help lists them)",
            options, parsed.type_name
        )))
    }
}

/// Puts a vCPU in its power-on state for `boot`: the boot processor at the firmware reset
/// vector, the flat binary's entry or the kernel's entry (`linux`, what was loaded);
/// application processors waiting for INIT/SIPI.
fn set_boot_state(
    vcpu: &Vcpu,
    index: usize,
    boot: &BootSource,
    linux: Option<&LoadedLinux>,
    memory: &GuestMemoryAtomic<GuestMemoryView>,
) -> Result<()> {
    // The MSRs a boot expects (and a reset restores): syscall MSRs and TSC at 0, fast
    // strings, MTRRs on with write-back default.
    vcpu.set_msrs(&boot_msrs()?)?;
    if index != 0 {
        vcpu.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_UNINITIALIZED,
        })?;
        return boot::reset_vector(vcpu);
    }
    match boot {
        BootSource::FirmwareFile(_) | BootSource::Firmware(_) => boot::reset_vector(vcpu)?,
        BootSource::Linux(_) => match linux {
            Some(loaded) => linux::set_linux_entry(vcpu, loaded)?,
            None => return Err(Error::Config("the Linux kernel was not loaded".into())),
        },
        BootSource::Flat {
            entry,
            mode: FlatMode::Real,
            ..
        } => boot::real_mode_at(vcpu, *entry)?,
        BootSource::Flat {
            entry,
            mode: FlatMode::Long,
            ..
        } => {
            let snapshot = memory.memory();
            boot::long_mode_at(vcpu, &*snapshot, *entry, FLAT_STACK_TOP)?;
        }
    }
    vcpu.set_mp_state(kvm_mp_state {
        mp_state: KVM_MP_STATE_RUNNABLE,
    })?;
    Ok(())
}

/// Sets vCPU `index`'s CPUID (vmkit-cpu: KVM's supported set, the `-smp` topology, this
/// vCPU's APIC id, the hypervisor leaves and `model`'s feature edits).
fn set_cpuid(
    supported: &kvm_bindings::CpuId,
    model: &CpuModel,
    vcpu: &Vcpu,
    index: usize,
    count: usize,
) -> Result<kvm_bindings::CpuId> {
    let index = u32::try_from(index).unwrap_or(u32::MAX);
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    let cpuid = build_cpuid(supported, model, index, count)?;
    vcpu.set_cpuid(&cpuid)?;
    Ok(cpuid)
}

/// QEMU's default machine-check banks (`MCE_BANKS_DEF`).
const MCE_BANKS: u64 = 10;
/// `MCG_CAP` flags QEMU asks for by default: `MCG_CTL_P` and `MCG_SER_P`.
const MCE_CAP_FLAGS: u64 = (1 << 8) | (1 << 24);

/// The guest's `MCG_CAP` as QEMU's `kvm_arch_init_vcpu` sets it: when the CPU has MCE and
/// MCA (CPUID.1:EDX bits 7 and 14) and family 6 or later, 10 banks and MCG_CTL_P|MCG_SER_P,
/// limited to what KVM supports; KVM's own default would be its maximum (32) banks.
fn guest_mcg_cap(cpuid: &kvm_bindings::CpuId, supported: Option<u64>) -> Option<u64> {
    let supported = supported?;
    let leaf1 = cpuid.as_slice().iter().find(|e| e.function == 1)?;
    let family = (leaf1.eax >> 8) & 0xf;
    let mce_mca = (1 << 7) | (1 << 14);
    if family < 6 || leaf1.edx & mce_mca != mce_mca {
        return None;
    }
    let banks = MCE_BANKS.min(supported & 0xff);
    Some((MCE_CAP_FLAGS & supported) | banks)
}

impl PcMachine {
    /// Builds the machine; the guest's reset and exit requests go to `events`.
    pub fn build(
        kvm: &KvmSystem,
        config: PcConfig,
        events: Arc<dyn MachineEvents>,
    ) -> Result<Self> {
        check_config(&config)?;
        let layout = MemoryLayout::new(config.ram_size)?;
        let vm = Arc::new(kvm.create_vm()?);
        configure_kvm_pages(&vm)?;
        if config.irqchip == IrqchipMode::Kernel {
            vm.create_irqchip()?;
            vm.create_pit2()?;
        }

        let mut memory = AddressSpace::new("system");
        let ram_regions = layout.map_into(&mut memory)?;
        let boot = config.boot;
        let firmware = map_boot_memory(&mut memory, &boot, config.irqchip)?;
        #[allow(unsafe_code)]
        // SAFETY: the listener is registered with this address space and never called directly.
        let listener = unsafe { KvmMemoryListener::new(Arc::clone(&vm), u32::MAX) };
        memory.register_listener(Box::new(listener))?;
        let guest_memory = memory.guest_memory();
        load_flat(&boot, &guest_memory)?;
        let linux = load_kernel(&boot, &layout, &guest_memory)?;

        let pio = PioBus::new();
        let mmio = MmioBus::new();
        let isa_rom = match firmware {
            Some(firmware) => Some(IsaRom {
                base: firmware.layout.isa_base,
                size: firmware.layout.isa_size,
                rom: memory.region_access(firmware.rom)?,
                rom_offset: firmware.layout.isa_offset,
            }),
            None => None,
        };
        let pam = PamWindows::new(
            &mut memory,
            ram_regions.ram,
            pam_segments(),
            isa_rom,
            mmio.clone(),
        )?;
        let memory = Arc::new(Mutex::new(memory));
        let clock = MonotonicClock::new();
        let shared_clock: Arc<dyn Clock> = Arc::new(clock);
        let (mut context, pic) =
            interrupt_context(&vm, &pio, config.irqchip, Arc::clone(&shared_clock), events);
        // ISA devices drive IRQs through the gate, which the HPET's legacy replacement
        // mode closes for the 8254 and the RTC; the HPET itself drives the router directly.
        let irq_router = Arc::clone(&context.irq);
        let legacy_gate = Arc::new(LegacyGate::new(Arc::clone(&irq_router)));
        context.irq = legacy_gate.clone();
        context.ram = CmosMemoryLayout::split(config.ram_size, PCI_HOLE_START);
        context.mmio = Some(mmio.clone());
        let isa_config = attach_serial_backends(&mut context, config.chardevs, config.com1);

        let registry = pc_registry()?;
        let tree = ObjectTree::new(&registry)?;
        tree.set_machine(&registry.new_object(TYPE_PC)?)?;
        let isa = add_pc_isa_devices(&tree, &mut context, &isa_config)?;
        crate::chipset::add_chipset_objects(&tree)?;
        let pci_devices = add_isa_devices(&registry, &tree, &config.devices, &mut context)?;
        let timers = context.timers.clone();
        let hpet = if config.hpet {
            let pit: Option<Arc<dyn PitLegacy>> = match config.irqchip {
                IrqchipMode::Kernel => Some(Arc::clone(&vm) as Arc<dyn PitLegacy>),
                IrqchipMode::User => None,
            };
            let lines = Arc::new(HpetLines::new(irq_router, legacy_gate, pit));
            Some(add_hpet(lines, &shared_clock, &timers, &mmio)?)
        } else {
            None
        };

        let fw_cfg = firmware_config(
            &guest_memory,
            &layout,
            config.smp,
            config.hpet,
            config.firmware_linux.as_deref(),
        )?;
        let chipset = Chipset::new(
            &ChipsetParts {
                pio: pio.clone(),
                mmio: mmio.clone(),
                memory: Arc::clone(&memory),
                events: Arc::clone(&context.events),
                irq: Arc::clone(&context.irq),
                clock: Arc::clone(&context.clock),
                pm_setup: needs_pm_setup(&boot),
            },
            fw_cfg,
            pam,
        )?;
        let kernel_irqchip = config.irqchip == IrqchipMode::Kernel;
        let mut pci_context = PciContext::new(
            chipset.pci.clone(),
            Arc::clone(&chipset.intx),
            guest_memory.clone(),
            kernel_irqchip
                .then(|| Arc::new(KvmMsi::new(Arc::clone(&vm))) as Arc<dyn vmkit_pci::MsiSignal>),
        );
        let notifiers = crate::notifiers::MachineNotifiers::install(
            &vm,
            &memory,
            &chipset.mapper,
            kernel_irqchip,
        )?;
        pci_context.notifiers = Some(Arc::clone(&notifiers));
        // The chardevs the ISA devices left, for virtio console ports; the -netdevs, for
        // virtio-net; the drives, for virtio-blk.
        pci_context.chardevs = std::mem::take(&mut context.serial_backends);
        pci_context.netdevs.extend(config.netdevs);
        pci_context.drives = config.drives.into_iter().collect();
        add_pci_devices(&tree, &pci_devices, &mut pci_context)?;

        // Linux finds the application processors and the IOAPIC in the MP table or, when
        // built without MP table support, in the ACPI MADT; with the userspace irqchip there
        // is no IOAPIC or local APIC to describe.
        let mptable_cpus =
            (linux.is_some() && config.irqchip == IrqchipMode::Kernel).then_some(config.smp);
        if let Some(cpus) = mptable_cpus {
            write_linux_boot_tables(&guest_memory, cpus, &layout, config.hpet)?;
        }
        let mut vcpus = create_vcpus(
            kvm,
            &vm,
            &config.cpu,
            config.smp,
            &boot,
            linux.as_ref(),
            &guest_memory,
        )?;
        coalesce_post_port(kvm, &vm, &pio, &tree, &mut vcpus)?;

        Ok(Self {
            vm,
            memory,
            layout,
            pio,
            mmio,
            registry,
            tree,
            isa,
            timers,
            pic,
            vcpus,
            clock,
            boot: Arc::new(boot),
            linux,
            mptable_cpus,
            guest_memory,
            chipset: Arc::new(chipset),
            hpet,
            notifiers,
            ram_regions,
        })
    }

    /// A function that puts vCPU `index` back into its power-on state (for the runtime to
    /// call on the vCPU's own thread after a machine reset).
    pub fn reset_cpu_fn(&self) -> impl Fn(&Vcpu, usize) -> Result<()> + Send + Sync + 'static {
        let boot = Arc::clone(&self.boot);
        let linux = self.linux;
        let memory = self.guest_memory.clone();
        move |vcpu, index| set_boot_state(vcpu, index, &boot, linux.as_ref(), &memory)
    }

    /// A function that resets the devices and reloads a flat binary or Linux kernel, as a
    /// machine reset does (call with every vCPU stopped).
    pub fn reset_devices_fn(&self) -> impl FnMut() + Send + 'static {
        let tree = self.tree.clone();
        let pic = self.pic.clone();
        let boot = Arc::clone(&self.boot);
        let memory = self.guest_memory.clone();
        let layout = self.layout;
        let mptable_cpus = self.mptable_cpus;
        let chipset = Arc::clone(&self.chipset);
        let hpet = self.hpet.clone();
        let timers = self.timers.clone();
        let with_hpet = hpet.is_some();
        move || {
            if let Ok(machine) = tree.machine() {
                machine.reset_tree();
            }
            chipset.reset();
            if let Some(hpet) = &hpet {
                let deadline = {
                    let mut hpet = vmkit_hw::lock(hpet);
                    hpet.reset();
                    vmkit_hw::TimedDevice::next_deadline_ns(&*hpet)
                };
                timers.deadline_changed(deadline);
            }
            if let Some(pic) = &pic {
                pic.reset();
            }
            // Both loaded once at build time: loading the same bytes again cannot fail.
            let _ = load_flat(&boot, &memory);
            let _ = load_kernel(&boot, &layout, &memory);
            if let Some(cpus) = mptable_cpus {
                if let Err(e) = write_linux_boot_tables(&memory, cpus, &layout, with_hpet) {
                    // The guest's memory map changed under the tables; Linux will find
                    // none, which it survives (no SMP), so report it and go on.
                    eprintln!("vmkit: machine reset: rewriting the MP and ACPI tables: {e}");
                }
            }
        }
    }

    /// Where the Linux kernel, initrd and boot data went, for a [`BootSource::Linux`] machine.
    pub fn linux(&self) -> Option<&LoadedLinux> {
        self.linux.as_ref()
    }

    /// Guest memory (RAM and ROM by guest physical address).
    pub fn guest_memory(&self) -> &GuestMemoryAtomic<GuestMemoryView> {
        &self.guest_memory
    }
}

/// Standard COM port bases, COM1 first.
const COM_BASES: [u64; 4] = [0x3f8, 0x2f8, 0x3e8, 0x2e8];

/// The `-smp` limits, and that a kernel for the firmware comes with firmware.
fn check_config(config: &PcConfig) -> Result<()> {
    if config.smp == 0 || config.smp > 255 {
        return Err(Error::Config(format!(
            "-smp {}: the pc machine takes 1 to 255 vCPUs",
            config.smp
        )));
    }
    if config.smp > 1 && config.irqchip == IrqchipMode::User {
        return Err(Error::Config(
            "-smp above 1 needs -irqchip kernel: vmkit has no userspace local APIC to start \
             application processors"
                .into(),
        ));
    }
    if config.firmware_linux.is_some()
        && !matches!(
            config.boot,
            BootSource::FirmwareFile(_) | BootSource::Firmware(_)
        )
    {
        return Err(Error::Config(
            "a kernel for the firmware to boot (-kernel with -bios) needs a firmware boot source"
                .into(),
        ));
    }
    Ok(())
}

/// Maps what the boot source needs besides RAM: the firmware image, or for Linux with the
/// in-kernel irqchip the ROM the ACPI tables go in.
fn map_boot_memory(
    memory: &mut AddressSpace,
    boot: &BootSource,
    irqchip: IrqchipMode,
) -> Result<Option<crate::firmware::Firmware>> {
    match boot {
        BootSource::FirmwareFile(path) => Ok(Some(load_firmware(memory, path)?)),
        BootSource::Firmware(image) => Ok(Some(map_firmware(memory, image)?)),
        BootSource::Linux(_) if irqchip == IrqchipMode::Kernel => {
            // Backing for the ACPI tables Linux finds by scanning the BIOS area (e820
            // already reports it reserved); a ROM, as the guest has no reason to write it.
            let size = HIGH_MEMORY_START - BIOS_AREA_START;
            memory.transaction(|space| {
                let tables = space.new_rom(ACPI_REGION_NAME, size)?;
                let root = space.root();
                space.add_subregion(root, BIOS_AREA_START, tables)
            })?;
            Ok(None)
        }
        BootSource::Flat { .. } | BootSource::Linux(_) => Ok(None),
    }
}

/// Adds the command line's ISA devices in order and returns the PCI ones, which go on the
/// bus once the chipset exists (still in command-line order).
fn add_isa_devices<'a>(
    registry: &Registry,
    tree: &ObjectTree,
    devices: &'a [String],
    context: &mut IsaContext,
) -> Result<Vec<&'a str>> {
    let mut pci_devices = Vec::new();
    for device in devices {
        check_device_type(registry, device)?;
        if needs_pci_context(registry, device) {
            pci_devices.push(device.as_str());
            continue;
        }
        if let Some(slot) = replaced_com_port(device)? {
            // As QEMU's defaults give way to explicit ports: an isa-serial placed on
            // COM2-COM4 replaces the unconnected default there.
            tree.remove(&format!("/machine/peripheral/com{}", slot + 1))?;
        }
        tree.device_add_with(device, &mut Context::new(context))?;
    }
    Ok(pci_devices)
}

/// The fw_cfg device with QEMU's items: CPUs, RAM, e820, the ACPI tables and their loader,
/// and for `-kernel` with `-bios` the kernel and QEMU's linuxboot option ROM first in the
/// boot order.
fn firmware_config(
    guest_memory: &GuestMemoryAtomic<GuestMemoryView>,
    layout: &MemoryLayout,
    smp: usize,
    hpet: bool,
    firmware_linux: Option<&crate::linux::FirmwareLinux>,
) -> Result<FwCfg<GuestMemoryAtomic<GuestMemoryView>>> {
    let mut fw_cfg = FwCfg::new(guest_memory.clone());
    let cpus = u8::try_from(smp).unwrap_or(u8::MAX);
    let mut bootorder = Vec::new();
    if let Some(linux) = firmware_linux {
        use crate::linux::firmware::{LINUXBOOT_BOOT_PATH, LINUXBOOT_ROM_FILE};
        fw_cfg.add_linux_boot(&linux.fw_cfg_items(layout.below_4g_size())?)?;
        fw_cfg.add_file(LINUXBOOT_ROM_FILE, linux.option_rom().to_vec())?;
        bootorder.push(LINUXBOOT_BOOT_PATH);
    }
    crate::firmware_cfg::populate(
        &mut fw_cfg,
        layout,
        u16::from(cpus),
        &build_pc_tables(&acpi_config(smp, layout, hpet))?,
        &bootorder,
    )?;
    Ok(fw_cfg)
}

/// The ISA devices' context for the interrupt model: KVM's irqchip through the in-kernel
/// IRQ router, or vmkit's own PIC pair (returned too, for the vCPU loop to inject from).
fn interrupt_context(
    vm: &Arc<Vm>,
    pio: &PioBus,
    irqchip: IrqchipMode,
    clock: Arc<dyn Clock>,
    events: Arc<dyn MachineEvents>,
) -> (IsaContext, Option<Arc<UserspacePic>>) {
    match irqchip {
        IrqchipMode::Kernel => (
            IsaContext::kernel(
                pio.clone(),
                Arc::new(KernelIrqRouter::new(Arc::clone(vm))),
                clock,
                events,
            ),
            None,
        ),
        IrqchipMode::User => {
            let pic = Arc::new(UserspacePic::new());
            (
                IsaContext::userspace(pio.clone(), Arc::clone(&pic), clock, events),
                Some(pic),
            )
        }
    }
}

/// Hands the `-chardev`s and COM1's backend to the ISA context; COM1 without a backend is
/// left out of the default ISA devices.
fn attach_serial_backends(
    context: &mut IsaContext,
    chardevs: Vec<(String, SerialBackend)>,
    com1: Option<SerialBackend>,
) -> IsaConfig {
    context.serial_backends.extend(chardevs);
    let mut isa_config = IsaConfig::default();
    match com1 {
        Some(backend) => {
            context.serial_backends.insert("serial0".into(), backend);
        }
        None => isa_config.serial[0] = None,
    }
    isa_config
}

/// The HPET at its MMIO window.
fn add_hpet(
    lines: Arc<HpetLines>,
    clock: &Arc<dyn Clock>,
    timers: &vmkit_hw::DeviceTimers,
    mmio: &MmioBus,
) -> Result<Arc<Mutex<MachineHpet>>> {
    let (hpet, hpet_mmio) = build_hpet(lines, Arc::clone(clock), timers);
    mmio.insert(
        MmioRange::new(HPET_BASE, HPET_LEN)?,
        HPET_NAME,
        Arc::new(hpet_mmio),
    )?;
    Ok(hpet)
}

/// Adds the command line's PCI devices in order, then warns of backends no device took.
fn add_pci_devices(tree: &ObjectTree, devices: &[&str], context: &mut PciContext) -> Result<()> {
    for device in devices {
        tree.device_add_with(device, &mut Context::new(context))?;
    }
    for id in context.netdevs.unused() {
        // As QEMU warns: the backend stays open but nothing sends or receives on it.
        eprintln!("vmkit: warning: netdev {id} has no peer");
    }
    Ok(())
}

/// The vCPUs with their CPUID, machine-check banks and boot state.
fn create_vcpus(
    kvm: &KvmSystem,
    vm: &Vm,
    cpu: &CpuModel,
    smp: usize,
    boot: &BootSource,
    linux: Option<&LoadedLinux>,
    guest_memory: &GuestMemoryAtomic<GuestMemoryView>,
) -> Result<Vec<Vcpu>> {
    let supported_cpuid = kvm.supported_cpuid()?;
    let mce_supported = kvm.mce_cap_supported()?;
    let mut vcpus = Vec::with_capacity(smp);
    for index in 0..smp {
        let vcpu = vm.create_vcpu(index as u64)?;
        let cpuid = set_cpuid(&supported_cpuid, cpu, &vcpu, index, smp)?;
        if let Some(mcg_cap) = guest_mcg_cap(&cpuid, mce_supported) {
            vcpu.setup_mce(mcg_cap)?;
        }
        set_boot_state(&vcpu, index, boot, linux, guest_memory)?;
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// For `-device isa-serial,...` on a standard COM2-COM4 base (or `index=1..3`), the slot
/// (1-3) whose unconnected default port it replaces. COM1 is the console and is not replaced:
/// a second device there is refused as an overlap.
fn replaced_com_port(device: &str) -> Result<Option<usize>> {
    let options = vmkit_object::ObjectOptions::parse(device)?;
    if options.type_name != vmkit_isa::devices::TYPE_ISA_SERIAL {
        return Ok(None);
    }
    // Read numbers exactly as the property itself will.
    let number = |text: &str| vmkit_object::parse_integer(text).and_then(|n| u64::try_from(n).ok());
    for (key, value) in &options.properties {
        let slot = match key.as_str() {
            "iobase" => number(value).and_then(|base| COM_BASES.iter().position(|b| *b == base)),
            "index" => number(value)
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i < 4),
            _ => None,
        };
        if let Some(slot) = slot.filter(|slot| *slot > 0) {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

fn load_flat(boot: &BootSource, memory: &GuestMemoryAtomic<GuestMemoryView>) -> Result<()> {
    if let BootSource::Flat { image, addr, .. } = boot {
        memory
            .memory()
            .write_slice(image, GuestAddress(*addr))
            .map_err(|e| {
                Error::Config(format!(
                    "the flat binary ({} bytes) does not fit in RAM at {addr:#x}: {e}",
                    image.len()
                ))
            })?;
    }
    Ok(())
}

fn load_kernel(
    boot: &BootSource,
    layout: &MemoryLayout,
    memory: &GuestMemoryAtomic<GuestMemoryView>,
) -> Result<Option<LoadedLinux>> {
    match boot {
        BootSource::Linux(linux) => linux::load_linux(&*memory.memory(), layout, linux).map(Some),
        _ => Ok(None),
    }
}

/// Name of the ROM region holding the ACPI tables of a Linux boot.
const ACPI_REGION_NAME: &str = "pc.acpi-tables";

/// The ACPI description of this machine, as QEMU's pc describes its own, less what vmkit's
/// pc does not have: no S3/S4 (and the HPET only when the machine has one), and KVM's default interrupt routing (ISA IRQ 0
/// on IOAPIC pin 0, so no IRQ0 override in the MADT).
fn acpi_config(cpus: usize, layout: &MemoryLayout, hpet: bool) -> PcAcpiConfig {
    let cpus = u8::try_from(cpus).unwrap_or(u8::MAX);
    let below_4g = u32::try_from(layout.below_4g_size()).unwrap_or(u32::MAX);
    let mut acpi = PcAcpiConfig::qemu_pc(cpus, below_4g);
    acpi.hpet = hpet;
    acpi.irq0_to_gsi2 = false;
    if let Some(pm) = acpi.pm.as_mut() {
        pm.s3 = false;
        pm.s4 = false;
    }
    acpi
}

/// For Linux booted without firmware, vmkit does what firmware would: the MP table in the
/// EBDA (where Linux looks for it) and the ACPI tables in the BIOS area (the same tables
/// firmware gets over fw_cfg: full FADT with the PIIX4 PM blocks vmkit programmed at 0x600,
/// DSDT with the PCI root and `\_S5`, MADT), the IOAPIC id as in the MP table.
fn write_linux_boot_tables(
    memory: &GuestMemoryAtomic<GuestMemoryView>,
    cpus: usize,
    layout: &MemoryLayout,
    hpet: bool,
) -> Result<()> {
    let snapshot = memory.memory();
    let mut acpi = acpi_config(cpus, layout, hpet);
    acpi.ioapic.id = u8::try_from(cpus).unwrap_or(u8::MAX);
    build_pc_tables(&acpi)?.write_to_bios_area(&*snapshot)?;
    let cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
    write_mptable_to_ebda(&*snapshot, cpus)?;
    Ok(())
}

/// Whether vmkit must program the PIIX4 PM function as firmware would (PMBA at 0x600, PM
/// I/O on): for boots without firmware, whose OS reads the FADT's PM blocks directly.
fn needs_pm_setup(boot: &BootSource) -> bool {
    !matches!(boot, BootSource::FirmwareFile(_) | BootSource::Firmware(_))
}

/// Port 0x80 writes go to KVM's coalesced ring instead of exiting (`KVM_CAP_COALESCED_PIO`),
/// when the port belongs to the `port80` device (write-only in effect: a read returns the
/// last write, and the vCPU loop drains the ring before every exit's dispatch, so a read sees
/// every earlier write). Linux writes there for every `outb_p`; a raw loop here measured
/// 9237 -> 1946 ns per write. Without the capability every write exits as before.
fn coalesce_post_port(
    kvm: &KvmSystem,
    vm: &Vm,
    pio: &vmkit_bus::PioBus,
    tree: &vmkit_object::ObjectTree,
    vcpus: &mut [Vcpu],
) -> Result<()> {
    let Some(first) = vcpus.first() else {
        return Ok(());
    };
    let is_port80 = pio
        .lookup(vmkit_pcglue::POST_PORT)
        .is_some_and(|(range, name)| {
            range.base() == vmkit_pcglue::POST_PORT
                && range.last() == vmkit_pcglue::POST_PORT
                && tree.resolve(&name).is_ok_and(|o| o.is_a("port80"))
        });
    if !is_port80
        || !kvm.has(vmkit_kvm::kvm_ioctls::Cap::CoalescedMmio)
        || !kvm.has(vmkit_kvm::kvm_ioctls::Cap::CoalescedPio)
    {
        return Ok(());
    }
    let ring = Arc::new(vmkit_kvm::CoalescedRing::map(first)?);
    vm.register_coalesced(
        vmkit_kvm::kvm_ioctls::IoEventAddress::Pio(u64::from(vmkit_pcglue::POST_PORT)),
        1,
    )?;
    for vcpu in vcpus {
        vcpu.set_coalesced_ring(Some(Arc::clone(&ring)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::{kvm_cpuid_entry2, CpuId};

    fn leaf1(eax: u32, edx: u32) -> CpuId {
        let entry = kvm_cpuid_entry2 {
            function: 1,
            eax,
            edx,
            ..Default::default()
        };
        CpuId::from_entries(&[entry]).unwrap()
    }

    #[test]
    fn mcg_cap_is_qemus_ten_banks_within_what_kvm_supports() {
        let mce_mca = (1 << 7) | (1 << 14);
        // KVM here: MCG_CTL_P | MCG_SER_P | MCG_LMCE_P (bit 27) flags, 32 banks.
        let supported = Some((1 << 8) | (1 << 24) | (1 << 27) | 32);
        assert_eq!(
            guest_mcg_cap(&leaf1(0x6_06f0, mce_mca), supported),
            Some((1 << 8) | (1 << 24) | 10)
        );
        assert_eq!(guest_mcg_cap(&leaf1(0x6_06f0, mce_mca), Some(4)), Some(4));
        assert_eq!(guest_mcg_cap(&leaf1(0x6_06f0, 1 << 7), supported), None);
        assert_eq!(guest_mcg_cap(&leaf1(0x500, mce_mca), supported), None);
        assert_eq!(guest_mcg_cap(&leaf1(0x6_06f0, mce_mca), None), None);
    }
}
