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

/// Anonymous, page-aligned, zero-filled host memory for a KVM memory slot.
#[derive(Debug)]
pub struct GuestRam {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value; access goes through &self/&mut self (and, for
// the guest, through KVM, which tests synchronise by running the vCPU on one thread).
unsafe impl Send for GuestRam {}
// SAFETY: as above.
unsafe impl Sync for GuestRam {}

impl GuestRam {
    /// Maps `len` bytes (rounded up to 4 KiB).
    pub fn new(len: usize) -> Self {
        let len = len.div_ceil(4096).max(1) * 4096;
        // SAFETY: a fresh anonymous private mapping with no address hint.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(ptr, libc::MAP_FAILED, "mmap of {len} bytes failed");
        Self {
            ptr: ptr.cast(),
            len,
        }
    }

    /// Host virtual address of the first byte (for a memory slot).
    pub fn host_addr(&self) -> u64 {
        self.ptr as u64
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
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The memory as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is `len` writable bytes owned by self, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Copies `bytes` to `offset`. Panics if they do not fit (a bug in the test).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        self.as_mut_slice()[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
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
