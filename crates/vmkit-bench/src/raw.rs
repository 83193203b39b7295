//! The floor: a bare kvm-ioctls loop with no vmkit code.
//!
//! It creates the same KVM objects a PC VMM does (in-kernel irqchip and PIT, TSS address),
//! maps the firmware image read-only where `-bios` puts it (ending at 4 GiB and again at
//! 0xf0000), 640 KiB of low RAM at 0, and runs each vCPU on its own thread. An exit is
//! "handled" by counting it (reads return 0xff); the guest's debug-exit write ends the boot
//! vCPU, a write to [`AP_DONE_PORT`] ends the second one. Whatever this costs per exit is
//! what KVM itself costs: any VMM pays at least this.

use std::time::{Duration, Instant};

use kvm_bindings::{
    kvm_mp_state, kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_READONLY,
    KVM_MP_STATE_RUNNABLE, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd};
use vm_memory::MmapRegion;

use crate::guest::{
    AP_DONE_PORT, AP_ENTRY_OFFSET, DEBUG_EXIT_PORT, FIRMWARE_HIGH_BASE, FIRMWARE_LOW_BASE,
    FIRMWARE_SEGMENT, FIRMWARE_SIZE, SERIAL_PORT,
};
use crate::{Error, Result};

/// Low RAM the raw VM maps at guest address 0 (what a PC has below the VGA window).
pub const RAW_LOW_RAM: usize = 0xa_0000;
/// KVM's three-page TSS area (needed by Intel hosts for real mode), as QEMU places it.
const TSS_ADDRESS: usize = 0xfffb_d000;

/// Anonymous host memory handed to KVM as guest memory (a vm-memory `MmapRegion`, which
/// owns the mapping).
#[derive(Debug)]
struct Mapping {
    region: MmapRegion,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> Result<Self> {
        let region = MmapRegion::new(len).map_err(|e| Error::Io {
            what: format!("mapping {len} bytes of guest memory"),
            source: std::io::Error::other(e),
        })?;
        Ok(Self { region, len })
    }

    fn host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    fn copy_in(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.len {
            return Err(Error::Guest(format!(
                "a {} byte image does not fit {} bytes of guest memory",
                bytes.len(),
                self.len
            )));
        }
        // SAFETY: `bytes.len() <= self.len`, the mapping is writable and owned by self
        // (borrowed mutably), and the source is a distinct Rust slice.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.region.as_ptr(), bytes.len()) };
        Ok(())
    }

    /// Bytes of the mapping resident in host RAM (`mincore`): the pages the guest (or the
    /// copy of the image) touched.
    fn resident_bytes(&self) -> u64 {
        let pages = self.len.div_ceil(page_size());
        let mut vector = vec![0u8; pages];
        // SAFETY: `ptr..ptr+len` is our mapping and `vector` holds one byte per page.
        let rc =
            unsafe { libc::mincore(self.region.as_ptr().cast(), self.len, vector.as_mut_ptr()) };
        if rc != 0 {
            return 0;
        }
        let resident = vector.iter().filter(|&&v| v & 1 != 0).count() as u64;
        resident * page_size() as u64
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

/// What one raw run did.
#[derive(Debug, Clone)]
pub struct RawOutcome {
    /// Exits each vCPU took and counted (the ending write not included).
    pub exits: Vec<u64>,
    /// The byte the guest wrote to the debug-exit port.
    pub exit_value: Option<u8>,
    /// Guest memory resident at the end (RAM and ROM mappings, `mincore`).
    pub guest_resident_bytes: u64,
    /// From starting the vCPU threads to the last one ending.
    pub run_time: Duration,
}

fn kvm_error(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> Error {
    move |source| Error::Kvm {
        what,
        source: std::io::Error::from_raw_os_error(source.errno()),
    }
}

/// Runs the firmware `image` with `vcpus` (1 or 2) vCPUs until the guest's debug exit.
/// With 2, the second vCPU starts directly at `f000:AP_ENTRY_OFFSET`. With `echo_serial`,
/// bytes written to COM1's data port go to stdout at once (unbuffered), as a VMM's console
/// would pass them on; otherwise they are dropped. They are not counted as exits.
pub fn run_firmware(image: &[u8], vcpus: usize, echo_serial: bool) -> Result<RawOutcome> {
    if image.len() != FIRMWARE_SIZE {
        return Err(Error::Guest(format!(
            "the raw loop takes {FIRMWARE_SIZE}-byte images, not {}",
            image.len()
        )));
    }
    if !(1..=2).contains(&vcpus) {
        return Err(Error::Usage(format!(
            "the raw loop runs 1 or 2 vCPUs, not {vcpus}"
        )));
    }
    let ram = Mapping::new(RAW_LOW_RAM)?;
    let mut rom = Mapping::new(FIRMWARE_SIZE)?;
    rom.copy_in(image)?;

    let kvm = Kvm::new().map_err(kvm_error("opening /dev/kvm"))?;
    let vm = kvm.create_vm().map_err(kvm_error("KVM_CREATE_VM"))?;
    vm.set_tss_address(TSS_ADDRESS)
        .map_err(kvm_error("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_error("KVM_CREATE_IRQCHIP"))?;
    vm.create_pit2(kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    })
    .map_err(kvm_error("KVM_CREATE_PIT2"))?;

    let rom_flags = if kvm.check_extension(Cap::ReadonlyMem) {
        KVM_MEM_READONLY
    } else {
        0
    };
    let regions = [
        (0, 0, RAW_LOW_RAM, ram.host_addr(), 0),
        (
            1,
            FIRMWARE_HIGH_BASE,
            FIRMWARE_SIZE,
            rom.host_addr(),
            rom_flags,
        ),
        (
            2,
            FIRMWARE_LOW_BASE,
            FIRMWARE_SIZE,
            rom.host_addr(),
            rom_flags,
        ),
    ];
    for (slot, guest_phys_addr, size, userspace_addr, flags) in regions {
        let region = kvm_userspace_memory_region {
            slot,
            guest_phys_addr,
            memory_size: size as u64,
            userspace_addr,
            flags,
        };
        // SAFETY: the host range is one of our live mappings of at least `size` bytes, and
        // the mappings outlive the VM (they are dropped after `vm` at the end of this
        // function, in reverse declaration order).
        unsafe { vm.set_user_memory_region(region) }
            .map_err(kvm_error("KVM_SET_USER_MEMORY_REGION"))?;
    }

    let mut cpus: Vec<VcpuFd> = Vec::with_capacity(vcpus);
    for id in 0..vcpus {
        cpus.push(
            vm.create_vcpu(id as u64)
                .map_err(kvm_error("KVM_CREATE_VCPU"))?,
        );
    }
    // vCPU 0 is left in KVM's reset state: CS base 0xffff0000, IP 0xfff0, the reset vector.
    if let Some(ap) = cpus.get(1) {
        let mut sregs = ap.get_sregs().map_err(kvm_error("KVM_GET_SREGS"))?;
        sregs.cs.selector = FIRMWARE_SEGMENT;
        sregs.cs.base = FIRMWARE_LOW_BASE;
        ap.set_sregs(&sregs).map_err(kvm_error("KVM_SET_SREGS"))?;
        let mut regs = ap.get_regs().map_err(kvm_error("KVM_GET_REGS"))?;
        regs.rip = u64::from(AP_ENTRY_OFFSET);
        regs.rflags = 2;
        ap.set_regs(&regs).map_err(kvm_error("KVM_SET_REGS"))?;
        ap.set_mp_state(kvm_mp_state {
            mp_state: KVM_MP_STATE_RUNNABLE,
        })
        .map_err(kvm_error("KVM_SET_MP_STATE"))?;
    }

    let start = Instant::now();
    let results: Vec<Result<VcpuEnd>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cpus
            .iter_mut()
            .map(|cpu| scope.spawn(move || run_vcpu(cpu, echo_serial)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::Guest("a raw vCPU thread panicked".into())))
            })
            .collect()
    });
    let run_time = start.elapsed();
    let mut exits = Vec::with_capacity(vcpus);
    let mut exit_value = None;
    for result in results {
        let end = result?;
        exits.push(end.exits);
        exit_value = exit_value.or(end.debug_exit);
    }
    drop(cpus);
    drop(vm);
    Ok(RawOutcome {
        exits,
        exit_value,
        guest_resident_bytes: ram.resident_bytes().saturating_add(rom.resident_bytes()),
        run_time,
    })
}

struct VcpuEnd {
    exits: u64,
    debug_exit: Option<u8>,
}

/// The whole exit path of the floor.
fn run_vcpu(cpu: &mut VcpuFd, echo_serial: bool) -> Result<VcpuEnd> {
    let mut exits = 0u64;
    loop {
        match cpu.run() {
            Ok(VcpuExit::IoOut(SERIAL_PORT, data)) => {
                if echo_serial {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(data);
                    let _ = out.flush();
                }
            }
            Ok(VcpuExit::IoOut(port, data)) => {
                if port == DEBUG_EXIT_PORT {
                    return Ok(VcpuEnd {
                        exits,
                        debug_exit: data.first().copied(),
                    });
                }
                if port == AP_DONE_PORT {
                    return Ok(VcpuEnd {
                        exits,
                        debug_exit: None,
                    });
                }
                exits += 1;
            }
            Ok(VcpuExit::IoIn(_, data)) | Ok(VcpuExit::MmioRead(_, data)) => {
                data.fill(0xff);
                exits += 1;
            }
            Ok(VcpuExit::MmioWrite(..)) => exits += 1,
            Ok(other) => {
                return Err(Error::Guest(format!(
                    "raw loop: unexpected exit {other:?} after {exits} exits"
                )))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(kvm_error("KVM_RUN")(e)),
        }
    }
}
