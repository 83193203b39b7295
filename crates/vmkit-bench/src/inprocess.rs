//! vmkit as a library in this process: `start_pc` for the per-exit rows, and a hand-built
//! two-vCPU `pc` machine (via [`MachineParts`]) for the scaling runs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vmkit_bus::{PioDevice, PioRange};
use vmkit_kvm::kvm_bindings::{kvm_mp_state, KVM_MP_STATE_RUNNABLE};
use vmkit_kvm::{ExitKind, KvmSystem};
use vmkit_pc::{BootSource, CpuModel, IrqchipMode, PcConfig, PcMachine};
use vmkit_vmm::builder::start_pc;
use vmkit_vmm::cli::{Options, SerialOption};
use vmkit_vmm::timer::HostTimer;
use vmkit_vmm::{Controller, ControllerEvents, ExitReason, MachineParts, RunOptions, Vmm};

use crate::guest::{
    Workload, AP_ENTRY_OFFSET, DEBUG_EXIT_PORT, EXIT_STATUS, FIRMWARE_LOW_BASE, SCALING_PORTS,
};
use crate::{Error, Result};

/// Guest RAM of every vmkit machine here (and of QEMU's): `-m 16`.
pub const GUEST_RAM: u64 = 16 << 20;

/// The `-device` text for the debug-exit port, as on QEMU's command line.
pub fn debug_exit_device() -> String {
    format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=2")
}

fn machine_error(e: impl std::fmt::Display) -> Error {
    Error::Vmkit(e.to_string())
}

fn expect_debug_exit(reason: &ExitReason) -> Result<()> {
    match reason {
        ExitReason::DebugExit { status } if i64::from(*status) == i64::from(EXIT_STATUS) => Ok(()),
        other => Err(Error::Guest(format!(
            "vmkit ended with {other:?}, not the guest's debug exit (status {EXIT_STATUS})"
        ))),
    }
}

/// Runs `image` through `vmkit_vmm::builder::start_pc` (what the `vmkit` binary does, minus
/// option parsing and the process) and returns the time from the call to the end of
/// `wait()`. Checks that the vCPU took at least `exits` exits of the workload's kind.
pub fn run_start_pc(image: Vec<u8>, workload: Workload, exits: u32) -> Result<Duration> {
    let options = Options {
        ram_size: GUEST_RAM,
        serial: SerialOption::None,
        devices: vec![debug_exit_device()],
        ..Options::default()
    };
    let start = Instant::now();
    let vmm = start_pc(
        &options,
        BootSource::Firmware(image),
        RunOptions::default(),
        Vec::new(),
    )
    .map_err(machine_error)?;
    let controller = Arc::clone(vmm.controller());
    let reason = controller.wait_until_ended();
    let stats = vmm.exit_stats();
    vmm.wait().map_err(machine_error)?;
    let elapsed = start.elapsed();
    expect_debug_exit(&reason)?;
    let kind = match workload {
        Workload::PioWrite => ExitKind::IoOut,
        Workload::PioRead => ExitKind::IoIn,
        Workload::MmioWrite => ExitKind::MmioWrite,
        Workload::RamWrite => return Ok(elapsed),
    };
    // Port 0x80 writes are coalesced (no exit each): count what reached the port's device.
    let seen = if workload == Workload::PioWrite {
        stats
            .pio
            .ranges
            .iter()
            .find(|r| r.base == 0x80)
            .map_or(0, |r| r.writes)
    } else {
        stats
            .per_vcpu
            .first()
            .and_then(|counts| counts.iter().find(|(name, _)| *name == kind.name()))
            .map_or(0, |(_, count)| *count)
    };
    if seen < u64::from(exits) {
        return Err(Error::Guest(format!(
            "vmkit counted {seen} {} exits, the guest makes {exits}",
            kind.name()
        )));
    }
    Ok(elapsed)
}

/// A port device that counts writes: one per vCPU in the scaling runs, each behind its own
/// `Mutex` as an ordinary vmkit device is.
#[derive(Debug, Default)]
pub struct CountingSink {
    writes: u64,
}

impl CountingSink {
    /// Writes seen.
    pub fn writes(&self) -> u64 {
        self.writes
    }
}

impl MutDevicePio for CountingSink {
    fn pio_read(&mut self, _base: PioAddress, _offset: PioAddressOffset, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn pio_write(&mut self, _base: PioAddress, _offset: PioAddressOffset, _data: &[u8]) {
        self.writes = self.writes.wrapping_add(1);
    }
}

/// What one in-process scaling run did.
#[derive(Debug, Clone)]
pub struct ScalingRun {
    /// From building the machine to `wait()` returning.
    pub elapsed: Duration,
    /// Writes each vCPU's sink device saw.
    pub device_writes: Vec<u64>,
}

/// Runs a scaling `image` on vmkit's `pc` machine with `vcpus` vCPUs (in-kernel irqchip),
/// each writing its own [`CountingSink`]; the second vCPU starts directly at its entry
/// (no INIT/SIPI), set up with `vmkit_pc::boot::real_mode_at`.
pub fn run_scaling(image: Vec<u8>, vcpus: usize) -> Result<ScalingRun> {
    let start = Instant::now();
    let kvm = KvmSystem::open().map_err(machine_error)?;
    let controller = Arc::new(Controller::new().map_err(machine_error)?);
    let config = PcConfig {
        netdevs: Vec::new(),
        firmware_linux: None,
        hpet: true,
        ram_size: GUEST_RAM,
        smp: vcpus,
        cpu: CpuModel::host(),
        irqchip: IrqchipMode::Kernel,
        boot: BootSource::Firmware(image),
        com1: None,
        devices: vec![debug_exit_device()],
        chardevs: Vec::new(),
        drives: Vec::new(),
    };
    let mut machine = PcMachine::build(
        &kvm,
        config,
        Arc::new(ControllerEvents(Arc::clone(&controller))),
    )
    .map_err(machine_error)?;

    let mut sinks = Vec::with_capacity(vcpus);
    for (index, port) in SCALING_PORTS.iter().take(vcpus).enumerate() {
        let sink = Arc::new(Mutex::new(CountingSink::default()));
        let device: Arc<PioDevice> = sink.clone();
        machine
            .pio
            .insert(
                PioRange::new(*port, 1).map_err(machine_error)?,
                format!("bench-sink{index}"),
                device,
            )
            .map_err(machine_error)?;
        sinks.push(sink);
    }
    for vcpu in machine.vcpus.iter().skip(1) {
        vmkit_pc::boot::real_mode_at(vcpu, FIRMWARE_LOW_BASE + u64::from(AP_ENTRY_OFFSET))
            .map_err(machine_error)?;
        vcpu.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        })
        .map_err(machine_error)?;
    }

    let timer = Arc::new(HostTimer::new(machine.clock).map_err(machine_error)?);
    let notify = Arc::clone(&timer);
    machine
        .timers
        .set_notifier(Arc::new(move |deadline| notify.arm_at(deadline)));
    let timers = machine.timers.clone();
    let reset_cpu = machine.reset_cpu_fn();
    let parts = MachineParts {
        vcpus: std::mem::take(&mut machine.vcpus),
        pio: machine.pio.clone(),
        mmio: machine.mmio.clone(),
        interrupt_controller: None,
        reset_cpu: Arc::new(move |vcpu, index| reset_cpu(vcpu, index).map_err(|e| e.to_string())),
        reset_devices: Box::new(machine.reset_devices_fn()),
        service_timers: Box::new(move || timers.service()),
        timer,
        console_input: None,
        // Only used to show the instruction at RIP after a failure.
        memory: Arc::new(|_gpa: u64, _buf: &mut [u8]| false),
        set_boot_cpu_waker: None,
        keep_alive: vec![Box::new(machine)],
    };
    let vmm = Vmm::start(controller, parts, RunOptions::default()).map_err(machine_error)?;
    let reason = vmm.wait().map_err(machine_error)?;
    let elapsed = start.elapsed();
    expect_debug_exit(&reason)?;
    let device_writes = sinks
        .iter()
        .map(|sink| sink.lock().map_or(0, |s| s.writes()))
        .collect();
    Ok(ScalingRun {
        elapsed,
        device_writes,
    })
}
