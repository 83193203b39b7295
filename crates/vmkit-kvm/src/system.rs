//! The system layer: the /dev/kvm handle (QEMU's `KVMState`).

use kvm_bindings::{CpuId, MsrList, KVM_API_VERSION, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

use crate::error::{Error, Result};
use crate::vm::Vm;

/// Capabilities every vmkit VM relies on: user memory slots, immediate exit for kicks, the
/// in-kernel irqchip family, irqfd/ioeventfd, and the x86 boot ioctls.
pub const BASE_CAPABILITIES: &[Cap] = &[
    Cap::UserMemory,
    Cap::ImmediateExit,
    Cap::SetTssAddr,
    Cap::SetIdentityMapAddr,
    Cap::Irqchip,
    Cap::Pit2,
    Cap::Irqfd,
    Cap::Ioeventfd,
    Cap::ExtCpuid,
    Cap::MpState,
    Cap::VcpuEvents,
];

/// The system handle: an open /dev/kvm with a checked API version.
#[derive(Debug)]
pub struct KvmSystem {
    kvm: Kvm,
}

/// The default KVM device node.
pub const KVM_DEVICE_PATH: &str = "/dev/kvm";

impl KvmSystem {
    /// Opens /dev/kvm and checks the API version.
    pub fn open() -> Result<Self> {
        Self::open_path(KVM_DEVICE_PATH)
    }

    /// Opens the KVM device node at `path` and checks the API version.
    pub fn open_path(path: &str) -> Result<Self> {
        let c_path = std::ffi::CString::new(path).map_err(|_| Error::Open {
            path: path.to_string(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        let kvm = Kvm::new_with_path(&c_path).map_err(|e| Error::Open {
            path: path.to_string(),
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let found = kvm.get_api_version();
        let expected = KVM_API_VERSION as i32;
        if found != expected {
            return Err(Error::ApiVersion { found, expected });
        }
        Ok(Self { kvm })
    }

    /// Fails with [`Error::MissingCapabilities`] naming every capability of `caps` this kernel
    /// does not offer.
    pub fn require(&self, caps: &[Cap]) -> Result<()> {
        let missing: Vec<Cap> = caps
            .iter()
            .copied()
            .filter(|&cap| !self.kvm.check_extension(cap))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::MissingCapabilities(missing))
        }
    }

    /// Whether one capability is offered.
    pub fn has(&self, cap: Cap) -> bool {
        self.kvm.check_extension(cap)
    }

    /// The CPUID leaves KVM can expose to a guest on this host.
    pub fn supported_cpuid(&self) -> Result<CpuId> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::ioctl("KVM_GET_SUPPORTED_CPUID"))
    }

    /// The MSR indices KVM saves and restores for a guest.
    pub fn msr_index_list(&self) -> Result<MsrList> {
        self.kvm
            .get_msr_index_list()
            .map_err(Error::ioctl("KVM_GET_MSR_INDEX_LIST"))
    }

    /// The number of memory slots a VM may use.
    pub fn max_memslots(&self) -> usize {
        self.kvm.get_nr_memslots()
    }

    /// The recommended and the maximum number of vCPUs per VM.
    pub fn vcpu_limits(&self) -> (usize, usize) {
        (self.kvm.get_nr_vcpus(), self.kvm.get_max_vcpus())
    }

    /// Creates a VM after checking [`BASE_CAPABILITIES`].
    pub fn create_vm(&self) -> Result<Vm> {
        self.require(BASE_CAPABILITIES)?;
        let fd = self
            .kvm
            .create_vm()
            .map_err(Error::ioctl("KVM_CREATE_VM"))?;
        Ok(Vm::new(fd, self.max_memslots(), self.has(Cap::ReadonlyMem)))
    }

    /// The machine-check capabilities KVM supports: the `MCG_CAP` flags of
    /// KVM_X86_GET_MCE_CAP_SUPPORTED and, in bits 7:0, the most banks (`KVM_CAP_MCE`'s value);
    /// `None` without `KVM_CAP_MCE`.
    pub fn mce_cap_supported(&self) -> Result<Option<u64>> {
        vmm_sys_util::ioctl_ior_nr!(
            KVM_X86_GET_MCE_CAP_SUPPORTED,
            kvm_bindings::KVMIO,
            0x9d,
            u64
        );
        // KVM_CAP_MCE's value is the most banks; the ioctl gives the flags.
        let banks = match u64::try_from(self.kvm.check_extension_int(Cap::Mce)) {
            Ok(banks) if banks > 0 => banks.min(0xff),
            _ => return Ok(None),
        };
        let mut cap = 0u64;
        // SAFETY: the ioctl writes one u64 through the pointer, valid for the call; the fd is
        // /dev/kvm.
        let ret = unsafe {
            vmm_sys_util::ioctl::ioctl_with_mut_ref(
                &self.kvm,
                KVM_X86_GET_MCE_CAP_SUPPORTED(),
                &mut cap,
            )
        };
        if ret < 0 {
            return Err(Error::Ioctl {
                op: "KVM_X86_GET_MCE_CAP_SUPPORTED",
                source: vmm_sys_util::errno::Error::last(),
            });
        }
        Ok(Some((cap & !0xff) | banks))
    }

    /// The underlying kvm-ioctls handle, for ioctls this crate does not wrap.
    pub fn as_raw(&self) -> &Kvm {
        &self.kvm
    }
}
