//! Test support shared by vmkit's crates (not published).
//!
//! - [`kvm_usable`] / [`require_kvm!`]: tests that need KVM run when `/dev/kvm` works, fail
//!   when it does not and `VMKIT_REQUIRE_KVM=1` is set (as CI does), and otherwise skip with
//!   a printed reason.
//! - [`GuestRam`]: page-aligned anonymous memory to hand to KVM as a memory slot.
//! - [`assemble`]: tiny guests written in the tests themselves with iced-x86's assembler.
//!
//! ```
//! let code = vmkit_testutil::assemble(16, 0x1000, |a| {
//!     use iced_x86::code_asm::*;
//!     a.mov(al, 0x41)?;
//!     a.out(0x10, al)?;
//!     a.hlt()
//! });
//! assert_eq!(code, [0xb0, 0x41, 0xe6, 0x10, 0xf4]);
//! ```

use iced_x86::code_asm::CodeAssembler;
use iced_x86::IcedError;
use vm_memory::MmapRegion;

/// Environment variable that turns a missing or unusable /dev/kvm into a test failure.
pub const REQUIRE_KVM_ENV: &str = "VMKIT_REQUIRE_KVM";

/// Whether KVM can be used here: `/dev/kvm` opens and a VM can be created.
///
/// When it cannot: panics if `VMKIT_REQUIRE_KVM=1`, otherwise prints why `test` is skipped
/// and returns false.
pub fn kvm_usable(test: &str) -> bool {
    let problem = match kvm_ioctls::Kvm::new() {
        Ok(kvm) => match kvm.create_vm() {
            Ok(_) => return true,
            Err(e) => format!("KVM_CREATE_VM failed: {e}"),
        },
        Err(e) => format!("cannot open /dev/kvm: {e}"),
    };
    if std::env::var(REQUIRE_KVM_ENV).as_deref() == Ok("1") {
        panic!("{test}: KVM is required ({REQUIRE_KVM_ENV}=1) but unusable: {problem}");
    }
    eprintln!("SKIPPED {test}: {problem} (set {REQUIRE_KVM_ENV}=1 to make this a failure)");
    false
}

/// Returns from the calling test (after printing why) when KVM is unusable, unless
/// `VMKIT_REQUIRE_KVM=1`, in which case the test fails.
#[macro_export]
macro_rules! require_kvm {
    () => {
        if !$crate::kvm_usable(module_path!()) {
            return;
        }
    };
}

/// Anonymous, page-aligned, zero-filled host memory for a KVM memory slot (a vm-memory
/// `MmapRegion`, which owns the mapping).
#[derive(Debug)]
pub struct GuestRam {
    region: MmapRegion,
    len: usize,
}

impl GuestRam {
    /// Maps `len` bytes (rounded up to 4 KiB).
    pub fn new(len: usize) -> Self {
        let len = len.div_ceil(4096).max(1) * 4096;
        let region = MmapRegion::new(len).unwrap_or_else(|e| panic!("mmap of {len} bytes: {e}"));
        Self { region, len }
    }

    /// Host virtual address of the first byte (for a memory slot).
    pub fn host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: the mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The memory as bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.region.as_ptr(), self.len) }
    }

    /// The memory as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes owned by self, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.region.as_ptr(), self.len) }
    }

    /// Copies `bytes` to `offset`. Panics if they do not fit (a bug in the test).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        self.as_mut_slice()[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

/// Assembles a tiny guest for `bitness` (16, 32 or 64) placed at guest address `ip`.
/// Panics on an assembler error (a bug in the test).
pub fn assemble(
    bitness: u32,
    ip: u64,
    build: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut asm = CodeAssembler::new(bitness).expect("bitness must be 16, 32 or 64");
    build(&mut asm).expect("assembling the test guest");
    asm.assemble(ip).expect("encoding the test guest")
}

pub use iced_x86;
