//! The vCPU layer: one virtual CPU (QEMU's `cpu->kvm_fd` and `cpu->kvm_run`).

use std::os::fd::AsRawFd;
use std::sync::Arc;

use kvm_bindings::{
    kvm_fpu, kvm_interrupt, kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_sregs, kvm_vcpu_events,
    CpuId, Msrs, KVMIO, KVM_EXIT_DEBUG, KVM_EXIT_FAIL_ENTRY, KVM_EXIT_HLT, KVM_EXIT_INTERNAL_ERROR,
    KVM_EXIT_INTR, KVM_EXIT_IO, KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT, KVM_EXIT_IRQ_WINDOW_OPEN,
    KVM_EXIT_MEMORY_FAULT, KVM_EXIT_MMIO, KVM_EXIT_SHUTDOWN, KVM_EXIT_SYSTEM_EVENT,
    KVM_EXIT_UNKNOWN,
};
use kvm_ioctls::VcpuFd;
use vmm_sys_util::errno;
use vmm_sys_util::ioctl::ioctl_with_ref;
use vmm_sys_util::ioctl_iow_nr;

use crate::error::{Error, Result};
use crate::exit::{InternalError, SystemEvent, VcpuExit};
use crate::kick::{current_thread_id, ensure_kick_handler, KickTarget, VcpuKicker};

ioctl_iow_nr!(KVM_INTERRUPT, KVMIO, 0x86, kvm_interrupt);
ioctl_iow_nr!(KVM_X86_SETUP_MCE, KVMIO, 0x9c, u64);

/// One virtual CPU: its registers and state, `KVM_RUN`, interrupt injection, and a kicker other
/// threads use to make it leave `KVM_RUN`.
///
/// A `Vcpu` is `Send`: create it on any thread and move it to the thread that runs it.
#[derive(Debug)]
pub struct Vcpu {
    fd: VcpuFd,
    id: u64,
    run_size: usize,
    kick: Arc<KickTarget>,
    coalesced: Option<Arc<crate::CoalescedRing>>,
}

impl Vcpu {
    pub(crate) fn new(mut fd: VcpuFd, id: u64, run_size: usize) -> Self {
        let immediate_exit = std::ptr::addr_of_mut!(fd.get_kvm_run().immediate_exit);
        Self {
            fd,
            id,
            run_size,
            kick: Arc::new(KickTarget::new(immediate_exit)),
            coalesced: None,
        }
    }

    /// The vCPU id given at creation (its initial APIC id).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Attaches the VM's coalesced-write ring: whoever runs this vCPU must drain it (in
    /// order, to the buses) after every `KVM_RUN` before handling the exit.
    pub fn set_coalesced_ring(&mut self, ring: Option<Arc<crate::CoalescedRing>>) {
        self.coalesced = ring;
    }

    /// The coalesced-write ring attached with [`Vcpu::set_coalesced_ring`].
    pub fn coalesced_ring(&self) -> Option<&Arc<crate::CoalescedRing>> {
        self.coalesced.as_ref()
    }

    /// A handle other threads use to force this vCPU out of `KVM_RUN`.
    ///
    /// The first call in the process installs a do-nothing handler for the kick signal
    /// (see [`crate::set_kick_signal`]).
    pub fn kicker(&self) -> Result<VcpuKicker> {
        let signal = ensure_kick_handler()?;
        Ok(VcpuKicker::new(Arc::clone(&self.kick), signal))
    }

    /// Enters the guest until the next exit and decodes it.
    ///
    /// No allocation happens here. A pending kick makes this return
    /// [`VcpuExit::Interrupted`] at once (and clears the kick), so a kick sent at any moment is
    /// never lost.
    pub fn run(&mut self) -> Result<VcpuExit<'_>> {
        self.kick.set_running_thread(current_thread_id());
        let outcome = self.fd.run().map(|_| ());
        if let Err(e) = outcome {
            return match e.errno() {
                libc::EINTR | libc::EAGAIN => {
                    self.kick.clear_immediate_exit();
                    Ok(VcpuExit::Interrupted)
                }
                _ => Err(Error::Ioctl {
                    op: "KVM_RUN",
                    source: e,
                }),
            };
        }
        self.decode_exit()
    }

    fn decode_exit(&mut self) -> Result<VcpuExit<'_>> {
        let run_size = self.run_size;
        let run = self.fd.get_kvm_run();
        let reason = run.exit_reason;
        Ok(match reason {
            KVM_EXIT_IO => {
                // SAFETY: the kernel set exit_reason to KVM_EXIT_IO, so `io` is the live union
                // member; it is plain integers.
                let io = unsafe { run.__bindgen_anon_1.io };
                let len = usize::from(io.size) * io.count as usize;
                let offset = usize::try_from(io.data_offset)
                    .map_err(|_| Error::MalformedExit("I/O data offset"))?;
                if offset.checked_add(len).is_none_or(|end| end > run_size) {
                    return Err(Error::MalformedExit("I/O data outside the kvm_run mapping"));
                }
                let base = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
                // SAFETY: `offset + len` lies inside the kvm_run mapping of `run_size` bytes
                // (checked above), which lives as long as `self.fd`; the slice borrows `self`
                // mutably, so nothing else touches the mapping while it exists.
                let data = unsafe { std::slice::from_raw_parts_mut(base.add(offset), len) };
                match u32::from(io.direction) {
                    KVM_EXIT_IO_OUT => VcpuExit::IoOut {
                        port: io.port,
                        size: io.size,
                        count: io.count,
                        data,
                    },
                    KVM_EXIT_IO_IN => VcpuExit::IoIn {
                        port: io.port,
                        size: io.size,
                        count: io.count,
                        data,
                    },
                    _ => return Err(Error::MalformedExit("I/O direction")),
                }
            }
            KVM_EXIT_MMIO => {
                // SAFETY: exit_reason says `mmio` is the live union member.
                let mmio = unsafe { &mut run.__bindgen_anon_1.mmio };
                let len = (mmio.len as usize).min(mmio.data.len());
                let addr = mmio.phys_addr;
                if mmio.is_write != 0 {
                    VcpuExit::MmioWrite {
                        addr,
                        data: &mmio.data[..len],
                    }
                } else {
                    VcpuExit::MmioRead {
                        addr,
                        data: &mut mmio.data[..len],
                    }
                }
            }
            KVM_EXIT_HLT => VcpuExit::Hlt,
            KVM_EXIT_SHUTDOWN => VcpuExit::Shutdown,
            KVM_EXIT_IRQ_WINDOW_OPEN => VcpuExit::IrqWindowOpen,
            KVM_EXIT_INTR => {
                self.kick.clear_immediate_exit();
                VcpuExit::Interrupted
            }
            KVM_EXIT_INTERNAL_ERROR => {
                // SAFETY: exit_reason says `internal` is the live union member.
                let internal = unsafe { run.__bindgen_anon_1.internal };
                VcpuExit::InternalError(InternalError::new(
                    internal.suberror,
                    internal.ndata,
                    internal.data,
                ))
            }
            KVM_EXIT_FAIL_ENTRY => {
                // SAFETY: exit_reason says `fail_entry` is the live union member.
                let fail = unsafe { run.__bindgen_anon_1.fail_entry };
                VcpuExit::FailEntry {
                    hardware_reason: fail.hardware_entry_failure_reason,
                    cpu: fail.cpu,
                }
            }
            KVM_EXIT_SYSTEM_EVENT => {
                // SAFETY: exit_reason says `system_event` is the live union member, and its
                // inner union is read as the 16-word `data` view, which covers `flags` too.
                let (kind, ndata, data) = unsafe {
                    let event = run.__bindgen_anon_1.system_event;
                    (event.type_, event.ndata, event.__bindgen_anon_1.data)
                };
                VcpuExit::SystemEvent(SystemEvent::new(kind, ndata, data))
            }
            KVM_EXIT_DEBUG => {
                // SAFETY: exit_reason says `debug` is the live union member.
                let arch = unsafe { run.__bindgen_anon_1.debug.arch };
                VcpuExit::Debug {
                    exception: arch.exception,
                    pc: arch.pc,
                    dr6: arch.dr6,
                    dr7: arch.dr7,
                }
            }
            KVM_EXIT_MEMORY_FAULT => {
                // SAFETY: exit_reason says `memory_fault` is the live union member.
                let fault = unsafe { run.__bindgen_anon_1.memory_fault };
                VcpuExit::MemoryFault {
                    flags: fault.flags,
                    gpa: fault.gpa,
                    size: fault.size,
                }
            }
            KVM_EXIT_UNKNOWN => {
                // SAFETY: exit_reason says `hw` is the live union member.
                let hw = unsafe { run.__bindgen_anon_1.hw };
                VcpuExit::Unknown {
                    hardware_exit_reason: hw.hardware_exit_reason,
                }
            }
            other => VcpuExit::Other(other),
        })
    }

    /// Sets the machine-check capabilities (`MCG_CAP`: bank count in bits 7:0 and flags) the
    /// guest sees (KVM_X86_SETUP_MCE). Without it KVM offers its maximum bank count; QEMU
    /// sets 10 banks. See [`KvmSystem::mce_cap_supported`](crate::KvmSystem::mce_cap_supported).
    pub fn setup_mce(&self, mcg_cap: u64) -> Result<()> {
        // SAFETY: KVM_X86_SETUP_MCE reads one u64 from the pointer, valid for the call; the fd
        // is a vCPU fd.
        let ret = unsafe { ioctl_with_ref(&self.fd, KVM_X86_SETUP_MCE(), &mcg_cap) };
        if ret < 0 {
            return Err(Error::Ioctl {
                op: "KVM_X86_SETUP_MCE",
                source: errno::Error::last(),
            });
        }
        Ok(())
    }

    /// Injects external interrupt `vector` (KVM_INTERRUPT). Only valid without the in-kernel
    /// irqchip and when [`Vcpu::ready_for_interrupt_injection`] is true.
    pub fn inject_interrupt(&self, vector: u8) -> Result<()> {
        let irq = kvm_interrupt {
            irq: u32::from(vector),
        };
        // SAFETY: KVM_INTERRUPT reads one kvm_interrupt from the pointer, which is valid for
        // the call; the fd is a vCPU fd.
        let ret = unsafe { ioctl_with_ref(&self.fd, KVM_INTERRUPT(), &irq) };
        if ret < 0 {
            return Err(Error::Ioctl {
                op: "KVM_INTERRUPT",
                source: errno::Error::last(),
            });
        }
        Ok(())
    }

    /// Asks KVM to exit with [`VcpuExit::IrqWindowOpen`] as soon as the guest can take an
    /// interrupt (userspace interrupt controller model).
    pub fn set_request_interrupt_window(&mut self, request: bool) {
        self.fd.get_kvm_run().request_interrupt_window = u8::from(request);
    }

    /// After an exit: whether KVM_INTERRUPT would be accepted now (IF set, no interrupt
    /// shadow, nothing pending).
    pub fn ready_for_interrupt_injection(&mut self) -> bool {
        self.fd.get_kvm_run().ready_for_interrupt_injection != 0
    }

    /// After an exit: the guest's RFLAGS.IF.
    pub fn interrupt_flag(&mut self) -> bool {
        self.fd.get_kvm_run().if_flag != 0
    }

    /// General purpose registers, RIP and RFLAGS.
    pub fn regs(&self) -> Result<kvm_regs> {
        self.fd.get_regs().map_err(Error::ioctl("KVM_GET_REGS"))
    }

    /// Sets general purpose registers, RIP and RFLAGS.
    pub fn set_regs(&self, regs: &kvm_regs) -> Result<()> {
        self.fd.set_regs(regs).map_err(Error::ioctl("KVM_SET_REGS"))
    }

    /// Segment, control and descriptor-table registers.
    pub fn sregs(&self) -> Result<kvm_sregs> {
        self.fd.get_sregs().map_err(Error::ioctl("KVM_GET_SREGS"))
    }

    /// Sets segment, control and descriptor-table registers.
    pub fn set_sregs(&self, sregs: &kvm_sregs) -> Result<()> {
        self.fd
            .set_sregs(sregs)
            .map_err(Error::ioctl("KVM_SET_SREGS"))
    }

    /// x87/SSE state.
    pub fn fpu(&self) -> Result<kvm_fpu> {
        self.fd.get_fpu().map_err(Error::ioctl("KVM_GET_FPU"))
    }

    /// Sets x87/SSE state.
    pub fn set_fpu(&self, fpu: &kvm_fpu) -> Result<()> {
        self.fd.set_fpu(fpu).map_err(Error::ioctl("KVM_SET_FPU"))
    }

    /// The XSAVE area as KVM_GET_XSAVE gives it (4096 bytes, the standard format).
    /// `Ok(None)` when this host's XSAVE features need a larger area (AMX tiles; CPUID
    /// leaf 0xD), which only KVM_GET_XSAVE2 can carry.
    pub fn xsave_bytes(&self) -> Result<Option<Vec<u8>>> {
        if !xsave_fits_4k() {
            return Ok(None);
        }
        let area = self.fd.get_xsave().map_err(Error::ioctl("KVM_GET_XSAVE"))?;
        Ok(Some(
            area.region
                .iter()
                .flat_map(|word| word.to_le_bytes())
                .collect(),
        ))
    }

    /// Writes an area read with [`Vcpu::xsave_bytes`] back (KVM_SET_XSAVE); bytes past
    /// 4096 are ignored, missing ones are zero.
    pub fn set_xsave_bytes(&self, bytes: &[u8]) -> Result<()> {
        if !xsave_fits_4k() {
            return Err(Error::ioctl("KVM_SET_XSAVE")(kvm_ioctls::Error::new(
                libc::E2BIG,
            )));
        }
        let mut area = kvm_bindings::kvm_xsave::default();
        for (word, chunk) in area.region.iter_mut().zip(bytes.chunks(4)) {
            let mut le = [0u8; 4];
            le[..chunk.len()].copy_from_slice(chunk);
            *word = u32::from_le_bytes(le);
        }
        // SAFETY: `area` is a whole kvm_xsave, and CPUID says every XSAVE component of
        // this host fits in its 4096 bytes, so KVM_SET_XSAVE reads nothing past it.
        unsafe { self.fd.set_xsave(&area) }.map_err(Error::ioctl("KVM_SET_XSAVE"))
    }

    /// Reads the MSRs whose indices are in `msrs`; returns how many were read.
    pub fn get_msrs(&self, msrs: &mut Msrs) -> Result<usize> {
        self.fd.get_msrs(msrs).map_err(Error::ioctl("KVM_GET_MSRS"))
    }

    /// Writes MSRs; fails unless all of them were accepted.
    pub fn set_msrs(&self, msrs: &Msrs) -> Result<()> {
        let written = self
            .fd
            .set_msrs(msrs)
            .map_err(Error::ioctl("KVM_SET_MSRS"))?;
        let wanted = msrs.as_slice().len();
        if written != wanted {
            let index = msrs.as_slice().get(written).map_or(0, |e| e.index);
            return Err(Error::MsrRejected { index });
        }
        Ok(())
    }

    /// Sets the CPUID leaves the guest sees.
    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<()> {
        self.fd
            .set_cpuid2(cpuid)
            .map_err(Error::ioctl("KVM_SET_CPUID2"))
    }

    /// The CPUID leaves the guest sees (up to `max_entries`).
    pub fn cpuid(&self, max_entries: usize) -> Result<CpuId> {
        self.fd
            .get_cpuid2(max_entries)
            .map_err(Error::ioctl("KVM_GET_CPUID2"))
    }

    /// The local APIC's registers (in-kernel irqchip only).
    pub fn lapic(&self) -> Result<kvm_lapic_state> {
        self.fd.get_lapic().map_err(Error::ioctl("KVM_GET_LAPIC"))
    }

    /// Sets the local APIC's registers (in-kernel irqchip only).
    pub fn set_lapic(&self, lapic: &kvm_lapic_state) -> Result<()> {
        self.fd
            .set_lapic(lapic)
            .map_err(Error::ioctl("KVM_SET_LAPIC"))
    }

    /// Runnable, halted, waiting for INIT/SIPI...
    pub fn mp_state(&self) -> Result<kvm_mp_state> {
        self.fd
            .get_mp_state()
            .map_err(Error::ioctl("KVM_GET_MP_STATE"))
    }

    /// Sets the multiprocessing state.
    pub fn set_mp_state(&self, state: kvm_mp_state) -> Result<()> {
        self.fd
            .set_mp_state(state)
            .map_err(Error::ioctl("KVM_SET_MP_STATE"))
    }

    /// Pending exceptions, interrupts, NMIs and the interrupt shadow.
    pub fn vcpu_events(&self) -> Result<kvm_vcpu_events> {
        self.fd
            .get_vcpu_events()
            .map_err(Error::ioctl("KVM_GET_VCPU_EVENTS"))
    }

    /// Sets pending events.
    pub fn set_vcpu_events(&self, events: &kvm_vcpu_events) -> Result<()> {
        self.fd
            .set_vcpu_events(events)
            .map_err(Error::ioctl("KVM_SET_VCPU_EVENTS"))
    }

    /// Translates a guest virtual address with the vCPU's current paging state.
    pub fn translate_gva(&self, gva: u64) -> Result<Option<u64>> {
        let t = self
            .fd
            .translate_gva(gva)
            .map_err(Error::ioctl("KVM_TRANSLATE"))?;
        Ok((t.valid != 0).then_some(t.physical_address))
    }

    /// The underlying kvm-ioctls handle, for ioctls this crate does not wrap.
    pub fn as_raw(&self) -> &VcpuFd {
        &self.fd
    }

    /// The vCPU file descriptor number.
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

impl Drop for Vcpu {
    fn drop(&mut self) {
        // Kickers may outlive the vCPU; make them stop touching kvm_run before it is unmapped.
        self.kick.detach();
    }
}

/// Whether every XSAVE component this host supports in XCR0 (CPUID.(EAX=0xD, ECX=0)
/// EDX:EAX) ends within a plain `kvm_xsave`. (That leaf's ECX can name a larger size on
/// nested hosts that list no larger component, so the components are summed instead.)
fn xsave_fits_4k() -> bool {
    let leaf = core::arch::x86_64::__cpuid_count(0xd, 0);
    let supported = u64::from(leaf.edx) << 32 | u64::from(leaf.eax);
    let end = (2..63u32)
        .filter(|index| supported & (1 << index) != 0)
        .map(|index| {
            let component = core::arch::x86_64::__cpuid_count(0xd, index);
            component.ebx as usize + component.eax as usize
        })
        .fold(576, usize::max);
    end <= std::mem::size_of::<kvm_bindings::kvm_xsave>()
}
