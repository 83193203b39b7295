//! vmkit's end-to-end exit-dispatch benchmark: the same firmware guest run three ways on this
//! machine, and a report a person can read.
//!
//! - **raw**: a bare kvm-ioctls loop with no vmkit code ([`raw`]): what KVM itself costs.
//! - **vmkit**: the `vmkit` binary (`-bios IMAGE -device isa-debug-exit`), and vmkit as a
//!   library in this process ([`inprocess`]).
//! - **QEMU**: `qemu-system-x86_64 -accel kvm -bios IMAGE ...`, when it is installed.
//!
//! The guests ([`guest`]) are 64 KiB firmware images generated here with iced-x86: a reset
//! vector jumping to a real-mode loop of N port writes, N MMIO writes or N port reads, then a
//! debug-exit write. A figure per exit is `(T(N) - T(1)) / (N - 1)` ([`stats::per_exit_ns`]),
//! which removes start-up and teardown; each is the median of several runs, with min and
//! max. The report ([`mod@bench`]) also gives start-to-guest-exit time and peak RSS of each VMM
//! process, and exits per second with one and two vCPUs each hammering its own device.
//!
//! The binary is `cargo run --release -p vmkit-bench -- --help`; this library holds its
//! parts so that they can be tested.
//!
//! # Example
//!
//! The guest image's layout and the statistics, without KVM:
//!
//! ```
//! use std::time::Duration;
//! use vmkit_bench::guest::{workload_firmware, Workload, FIRMWARE_SIZE, RESET_VECTOR_OFFSET};
//! use vmkit_bench::stats::{per_exit_ns, Summary};
//!
//! let image = workload_firmware(Workload::PioWrite, 1000)?;
//! assert_eq!(image.len(), FIRMWARE_SIZE);
//! assert_eq!(image[RESET_VECTOR_OFFSET], 0xea); // jmp far f000:0000
//!
//! let per_exit = per_exit_ns(1, Duration::from_millis(20), 1001, Duration::from_millis(25));
//! assert_eq!(per_exit, Some(5000.0)); // 5 ms more for 1000 more exits
//! let s = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
//! assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
//! # Ok::<(), vmkit_bench::Error>(())
//! ```

pub mod bench;
pub mod blk;
pub mod blk_guest;
pub mod cli;
pub mod firmware;
pub mod guest;
mod host;
pub mod inprocess;
pub mod migrate;
pub mod process;
pub mod raw;
mod report;
mod scaling;
pub mod stats;
pub mod table;

/// What can go wrong while benchmarking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),
    /// The guest could not be assembled (a bug in the benchmark).
    #[error("assembling the guest: {0}")]
    Assemble(String),
    /// A piece of guest code does not fit where the image layout puts it.
    #[error("guest image: the {what} ({len} bytes at offset {offset:#x}) does not fit")]
    ImageLayout {
        /// Which piece.
        what: &'static str,
        /// Where it goes.
        offset: usize,
        /// Its size.
        len: usize,
    },
    /// A host operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A KVM ioctl of the raw loop failed.
    #[error("raw loop: {what} failed: {source} (is /dev/kvm usable?)")]
    Kvm {
        /// The ioctl.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// vmkit (as a library) failed.
    #[error("vmkit: {0}")]
    Vmkit(String),
    /// A guest run did not end as the guest should (wrong status, wrong exit count...).
    #[error("{0}")]
    Guest(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
