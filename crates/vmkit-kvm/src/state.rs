//! vCPU and VM state for save/restore and migration, as QEMU's `kvm_arch_get_registers` /
//! `kvm_arch_put_registers` and Firecracker's `VcpuState` take it.
//!
//! [`VcpuState`] holds what KVM keeps per vCPU: general and special registers, the FPU/XSAVE
//! area (`KVM_GET_XSAVE2` when the kernel has `KVM_CAP_XSAVE2`, else `KVM_GET_XSAVE`), XCRs,
//! debug registers, the local APIC, every MSR KVM lists in `KVM_GET_MSR_INDEX_LIST` (read in
//! chunks, an MSR the vCPU refuses is left out), pending events and the MP state.
//! [`VmState`] holds the in-kernel PIC pair and IOAPIC, the PIT and the KVM clock.
//!
//! Restore follows the order KVM needs: special registers first (they carry the APIC base),
//! then registers, XSAVE, XCRs, debug registers, the LAPIC (so that the timer is in
//! TSC-deadline mode before `MSR_IA32_TSC_DEADLINE` is written), MSRs with the TSC before
//! the TSC deadline, the MP state, and the vCPU events last. The machine must be stopped
//! (no vCPU in `KVM_RUN`) while state is taken or put; vCPU state is best taken on the
//! vCPU's own thread.

use kvm_bindings::{
    kvm_clock_data, kvm_debugregs, kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msr_entry,
    kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave, Msrs, Xsave,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::Cap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{KvmSystem, Vcpu, Vm};

/// The layout version of [`VcpuState`] and [`VmState`].
pub const KVM_STATE_VERSION: u32 = 1;

/// MSRs read per `KVM_GET_MSRS` call.
const MSR_CHUNK: usize = 64;
/// `MSR_IA32_TSC`.
pub const MSR_IA32_TSC: u32 = 0x10;
/// `MSR_IA32_TSC_DEADLINE`.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;

/// One vCPU's complete KVM state.
#[derive(Clone, Serialize, Deserialize)]
pub struct VcpuState {
    /// Layout version, [`KVM_STATE_VERSION`].
    pub version: u32,
    /// The vCPU id (its APIC id).
    pub id: u64,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers, APIC base, EFER.
    pub sregs: kvm_sregs,
    /// The XSAVE area as 32-bit words (4096 bytes, or `KVM_CAP_XSAVE2`'s size).
    pub xsave: Vec<u32>,
    /// Extended control registers (XCR0).
    pub xcrs: kvm_xcrs,
    /// Debug registers DR0-3, DR6, DR7.
    pub debugregs: kvm_debugregs,
    /// The local APIC's register page (with the in-kernel irqchip only).
    pub lapic: Option<kvm_lapic_state>,
    /// Every MSR KVM lists that the vCPU would read: (index, value).
    pub msrs: Vec<(u32, u64)>,
    /// Pending exceptions, interrupts, NMIs, SMM and the interrupt shadow.
    pub events: kvm_vcpu_events,
    /// Runnable, halted, waiting for SIPI...
    pub mp_state: kvm_mp_state,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("id", &self.id)
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("msrs", &self.msrs.len())
            .field("xsave_bytes", &(self.xsave.len() * 4))
            .finish_non_exhaustive()
    }
}

/// The VM-wide in-kernel devices' state.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    /// Layout version, [`KVM_STATE_VERSION`].
    pub version: u32,
    /// PIC master, PIC slave and IOAPIC (`KVM_GET_IRQCHIP`), if the VM has the in-kernel
    /// irqchip.
    pub irqchip: Option<Vec<kvm_irqchip>>,
    /// The in-kernel PIT (`KVM_GET_PIT2`), if the VM has one.
    pub pit2: Option<kvm_pit_state2>,
    /// The KVM clock (`KVM_GET_CLOCK`).
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("irqchip", &self.irqchip.is_some())
            .field("pit2", &self.pit2.is_some())
            .field("clock", &self.clock.clock)
            .finish()
    }
}

/// What a vCPU state is taken with: the MSR index list and the XSAVE size, asked once.
#[derive(Debug, Clone)]
pub struct StateContext {
    msr_indices: Vec<u32>,
    xsave2_bytes: Option<usize>,
    lapic: bool,
}

impl StateContext {
    /// Reads `KVM_GET_MSR_INDEX_LIST` and `KVM_CAP_XSAVE2` from `kvm`.
    pub fn new(kvm: &KvmSystem) -> Result<Self> {
        let list = kvm.msr_index_list()?;
        let size = kvm.as_raw().check_extension_int(Cap::Xsave2);
        let xsave2_bytes = usize::try_from(size)
            .ok()
            .filter(|&s| s > std::mem::size_of::<kvm_xsave>());
        Ok(Self {
            msr_indices: list.as_slice().to_vec(),
            xsave2_bytes,
            lapic: true,
        })
    }

    /// For vCPUs of a VM without the in-kernel irqchip: no local APIC state is taken or put.
    pub fn without_lapic(mut self) -> Self {
        self.lapic = false;
        self
    }

    /// The MSRs a state holds.
    pub fn msr_indices(&self) -> &[u32] {
        &self.msr_indices
    }

    fn xsave_fam_len(&self) -> usize {
        self.xsave2_bytes.map_or(0, |bytes| {
            (bytes - std::mem::size_of::<kvm_xsave>()).div_ceil(4)
        })
    }
}

fn invalid(what: impl Into<String>) -> Error {
    Error::InvalidState(what.into())
}

fn msrs_of(entries: &[(u32, u64)]) -> Result<Msrs> {
    let list: Vec<kvm_msr_entry> = entries
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&list).map_err(|_| invalid("too many MSRs for one KVM_SET_MSRS"))
}

impl Vcpu {
    /// Reads every MSR of `indices` that this vCPU has, `MSR_CHUNK` at a time; an MSR KVM
    /// lists but refuses for this vCPU (a feature its CPUID does not give) is skipped.
    fn read_msrs(&self, indices: &[u32]) -> Result<Vec<(u32, u64)>> {
        let mut out = Vec::with_capacity(indices.len());
        let mut rest = indices;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(MSR_CHUNK)];
            let mut msrs = msrs_of(&chunk.iter().map(|&i| (i, 0)).collect::<Vec<_>>())?;
            let read = self.get_msrs(&mut msrs)?;
            out.extend(msrs.as_slice()[..read].iter().map(|e| (e.index, e.data)));
            // KVM stops at the first MSR it refuses: skip that one and go on after it.
            let consumed = if read < chunk.len() { read + 1 } else { read };
            rest = &rest[consumed..];
        }
        Ok(out)
    }

    /// The vCPU's complete state. Call with the vCPU out of `KVM_RUN` (on its own thread).
    pub fn save_state(&self, ctx: &StateContext) -> Result<VcpuState> {
        let fd = self.as_raw();
        // Events and MP state first: nothing else read afterwards changes them.
        let events = self.vcpu_events()?;
        let mp_state = self.mp_state()?;
        let regs = self.regs()?;
        let sregs = self.sregs()?;
        let xsave = match ctx.xsave2_bytes {
            Some(_) => {
                let mut xsave = Xsave::new(ctx.xsave_fam_len())
                    .map_err(|_| invalid("XSAVE2 area larger than a FAM wrapper holds"))?;
                // SAFETY: `xsave` was allocated with the FAM length derived from
                // KVM_CAP_XSAVE2, the size KVM_GET_XSAVE2 writes.
                unsafe { fd.get_xsave2(&mut xsave) }.map_err(Error::ioctl("KVM_GET_XSAVE2"))?;
                let mut words = xsave.as_fam_struct_ref().xsave.region.to_vec();
                words.extend_from_slice(xsave.as_slice());
                words
            }
            None => fd
                .get_xsave()
                .map_err(Error::ioctl("KVM_GET_XSAVE"))?
                .region
                .to_vec(),
        };
        let xcrs = fd.get_xcrs().map_err(Error::ioctl("KVM_GET_XCRS"))?;
        let debugregs = fd
            .get_debug_regs()
            .map_err(Error::ioctl("KVM_GET_DEBUGREGS"))?;
        let lapic = if ctx.lapic { Some(self.lapic()?) } else { None };
        let msrs = self.read_msrs(&ctx.msr_indices)?;
        Ok(VcpuState {
            version: KVM_STATE_VERSION,
            id: self.id(),
            regs,
            sregs,
            xsave,
            xcrs,
            debugregs,
            lapic,
            msrs,
            events,
            mp_state,
        })
    }

    /// Puts `state` into the vCPU in the order KVM needs (see the module docs). Refuses a
    /// state of another version, for another vCPU id, or with an XSAVE area of a size this
    /// host does not use.
    pub fn restore_state(&self, ctx: &StateContext, state: &VcpuState) -> Result<()> {
        if state.version != KVM_STATE_VERSION {
            return Err(invalid(format!(
                "vCPU state version {} is not supported (this build reads {KVM_STATE_VERSION})",
                state.version
            )));
        }
        if state.id != self.id() {
            return Err(invalid(format!(
                "vCPU state is for vCPU {}, not vCPU {}",
                state.id,
                self.id()
            )));
        }
        let fd = self.as_raw();
        self.set_sregs(&state.sregs)?;
        self.set_regs(&state.regs)?;
        if state.xsave.len() < 1024 {
            return Err(invalid(format!(
                "XSAVE area of {} bytes; it has at least 4096",
                state.xsave.len() * 4
            )));
        }
        match ctx.xsave2_bytes {
            Some(_) => {
                let fam = ctx.xsave_fam_len();
                let mut xsave = Xsave::new(fam)
                    .map_err(|_| invalid("XSAVE2 area larger than a FAM wrapper holds"))?;
                // SAFETY: only the fixed-size 4096-byte region of the header is written here.
                unsafe {
                    xsave
                        .as_mut_fam_struct()
                        .xsave
                        .region
                        .copy_from_slice(&state.xsave[..1024]);
                }
                let extra = &state.xsave[1024..];
                let n = extra.len().min(fam);
                xsave.as_mut_slice()[..n].copy_from_slice(&extra[..n]);
                // SAFETY: `xsave` holds the KVM_CAP_XSAVE2 size KVM_SET_XSAVE2 reads.
                unsafe { fd.set_xsave2(&xsave) }.map_err(Error::ioctl("KVM_SET_XSAVE2"))?;
            }
            None => {
                let mut xsave = kvm_xsave::default();
                xsave.region.copy_from_slice(&state.xsave[..1024]);
                // SAFETY: a plain kvm_xsave with no FAM part is what KVM_SET_XSAVE reads
                // when the kernel has no KVM_CAP_XSAVE2.
                unsafe { fd.set_xsave(&xsave) }.map_err(Error::ioctl("KVM_SET_XSAVE"))?;
            }
        }
        fd.set_xcrs(&state.xcrs)
            .map_err(Error::ioctl("KVM_SET_XCRS"))?;
        fd.set_debug_regs(&state.debugregs)
            .map_err(Error::ioctl("KVM_SET_DEBUGREGS"))?;
        match (&state.lapic, ctx.lapic) {
            (Some(lapic), true) => self.set_lapic(lapic)?,
            (None, false) => {}
            (Some(_), false) | (None, true) => {
                return Err(invalid(
                    "the vCPU state and this VM differ in having a local APIC (the in-kernel \
                     irqchip): give the same -irqchip on both sides",
                ))
            }
        }
        // The TSC before the TSC deadline (the deadline is relative to it), then the rest.
        let mut ordered: Vec<(u32, u64)> = state.msrs.clone();
        ordered.sort_by_key(|&(index, _)| match index {
            MSR_IA32_TSC => 0,
            MSR_IA32_TSC_DEADLINE => 2,
            _ => 1,
        });
        let mut rest: &[(u32, u64)] = &ordered;
        while !rest.is_empty() {
            let chunk = &rest[..rest.len().min(MSR_CHUNK)];
            let written = fd
                .set_msrs(&msrs_of(chunk)?)
                .map_err(Error::ioctl("KVM_SET_MSRS"))?;
            if written < chunk.len() {
                let (index, value) = chunk[written];
                // An MSR this VM's configuration refuses (a paravirtual feature that needs
                // the in-kernel LAPIC, say) is only acceptable at its reset value 0.
                if value != 0 {
                    return Err(invalid(format!(
                        "KVM_SET_MSRS refused MSR {index:#x} = {value:#x} (this host's vCPU \
                         lacks it)"
                    )));
                }
                rest = &rest[written + 1..];
            } else {
                rest = &rest[written..];
            }
        }
        self.set_mp_state(state.mp_state)?;
        self.set_vcpu_events(&state.events)?;
        Ok(())
    }
}

impl Vm {
    /// The in-kernel devices' state; `irqchip` and `pit` say whether the VM has them.
    pub fn save_state(&self, irqchip: bool, pit: bool) -> Result<VmState> {
        let fd = self.as_raw();
        let irqchip = if irqchip {
            let mut chips = Vec::new();
            for id in [
                KVM_IRQCHIP_PIC_MASTER,
                KVM_IRQCHIP_PIC_SLAVE,
                KVM_IRQCHIP_IOAPIC,
            ] {
                let mut chip = kvm_irqchip {
                    chip_id: id,
                    ..Default::default()
                };
                fd.get_irqchip(&mut chip)
                    .map_err(Error::ioctl("KVM_GET_IRQCHIP"))?;
                chips.push(chip);
            }
            Some(chips)
        } else {
            None
        };
        let pit2 = if pit {
            Some(fd.get_pit2().map_err(Error::ioctl("KVM_GET_PIT2"))?)
        } else {
            None
        };
        let clock = fd.get_clock().map_err(Error::ioctl("KVM_GET_CLOCK"))?;
        Ok(VmState {
            version: KVM_STATE_VERSION,
            irqchip,
            pit2,
            clock,
        })
    }

    /// Puts `state` into the VM: the PIT, the irqchips, then the KVM clock (as it was when
    /// saved: the time the machine was stopped does not pass for the guest, as QEMU).
    pub fn restore_state(&self, state: &VmState, irqchip: bool, pit: bool) -> Result<()> {
        if state.version != KVM_STATE_VERSION {
            return Err(invalid(format!(
                "VM state version {} is not supported (this build reads {KVM_STATE_VERSION})",
                state.version
            )));
        }
        if state.irqchip.is_some() != irqchip || state.pit2.is_some() != pit {
            return Err(invalid(format!(
                "the state is for a VM {} the in-kernel irqchip and {} the in-kernel PIT; this \
                 one {} and {} (give the same -irqchip on both sides)",
                if state.irqchip.is_some() {
                    "with"
                } else {
                    "without"
                },
                if state.pit2.is_some() {
                    "with"
                } else {
                    "without"
                },
                if irqchip { "has it" } else { "has not" },
                if pit { "has it" } else { "has not" },
            )));
        }
        let fd = self.as_raw();
        if let Some(pit2) = &state.pit2 {
            fd.set_pit2(pit2).map_err(Error::ioctl("KVM_SET_PIT2"))?;
        }
        if let Some(chips) = &state.irqchip {
            if chips.len() != 3 {
                return Err(invalid(format!(
                    "{} irqchips in the state, not 3",
                    chips.len()
                )));
            }
            for chip in chips {
                fd.set_irqchip(chip)
                    .map_err(Error::ioctl("KVM_SET_IRQCHIP"))?;
            }
        }
        let clock = kvm_clock_data {
            clock: state.clock.clock,
            ..Default::default()
        };
        fd.set_clock(&clock)
            .map_err(Error::ioctl("KVM_SET_CLOCK"))?;
        Ok(())
    }
}

impl Vcpu {
    /// Completes an exit userspace has handled (the data of an `IN`, an MMIO read) without
    /// entering the guest: `KVM_RUN` with `immediate_exit` set, as KVM's API asks before
    /// the registers are read for a save.
    pub fn complete_pending_exit(&mut self) -> Result<()> {
        self.kicker()?.kick()?;
        match self.run()? {
            crate::VcpuExit::Interrupted => Ok(()),
            other => Err(invalid(format!(
                "completing the pending exit left the vCPU at {other:?}"
            ))),
        }
    }
}

/// Which 4 KiB pages of the host mapping at `host_addr` (`len` bytes, page-aligned) are
/// resident (`mincore`): a page of anonymous guest RAM that never was is all zeros, so a
/// RAM save can skip it without reading (and faulting in) it. `None` if the kernel refuses.
pub fn resident_pages(host_addr: *mut u8, len: usize) -> Option<Vec<bool>> {
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    if (host_addr as usize) % 4096 != 0 {
        return None;
    }
    // SAFETY: mincore only reads the residency of the pages of [host_addr, host_addr + len)
    // and writes one byte per page into `vec`, which holds `pages` bytes; the range is a
    // mapping of guest RAM the caller holds.
    let ret = unsafe { libc::mincore(host_addr.cast(), len, vec.as_mut_ptr()) };
    (ret == 0).then(|| vec.into_iter().map(|b| b & 1 != 0).collect())
}
