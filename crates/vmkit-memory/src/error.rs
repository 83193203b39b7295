//! The crate's error type.

use crate::region::RegionId;

/// Errors of the region tree, the address space and its listeners.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A region was created with size 0.
    #[error("region `{name}` has size 0; every region needs at least one byte")]
    ZeroSize {
        /// Name of the region.
        name: String,
    },
    /// A size or offset that must be a multiple of 4 KiB is not.
    #[error(
        "region `{name}`: {what} {value:#x} is not a multiple of 4 KiB (RAM, ROM, containers and \
         aliases of them are mapped in whole pages)"
    )]
    Unaligned {
        /// Name of the region.
        name: String,
        /// What was misaligned ("size", "offset in container", "alias offset").
        what: &'static str,
        /// The offending value.
        value: u64,
    },
    /// `offset + size` does not fit in the 64-bit address space.
    #[error(
        "region `{name}`: offset {offset:#x} + size {size:#x} overflows the 64-bit address space"
    )]
    Overflow {
        /// Name of the region.
        name: String,
        /// Offset of the region.
        offset: u64,
        /// Size of the region.
        size: u64,
    },
    /// A RAM or ROM region is larger than this host can map.
    #[error("region `{name}`: size {size:#x} is larger than this host can map")]
    TooLarge {
        /// Name of the region.
        name: String,
        /// Requested size.
        size: u64,
    },
    /// An alias window extends past the end of its target region.
    #[error(
        "alias `{name}`: window [{offset:#x}, +{size:#x}) goes past the end of target `{target}` \
         (size {target_size:#x})"
    )]
    AliasOutOfRange {
        /// Name of the alias.
        name: String,
        /// Name of the target region.
        target: String,
        /// Offset of the window in the target.
        offset: u64,
        /// Size of the window.
        size: u64,
        /// Size of the target.
        target_size: u64,
    },
    /// The region id does not name a live region of this address space.
    #[error("unknown region id {0} (destroyed, from an aborted transaction, or from another address space)")]
    UnknownRegion(RegionId),
    /// The operation needs a container region.
    #[error("region `{0}` is not a container; only containers hold subregions")]
    NotAContainer(String),
    /// The operation needs a RAM or ROM region (one with host memory).
    #[error("region `{0}` has no host memory; this operation needs a RAM or ROM region")]
    NotRam(String),
    /// The operation needs an alias region.
    #[error("region `{0}` is not an alias")]
    NotAnAlias(String),
    /// The operation does not apply to I/O regions.
    #[error("region `{0}` is an I/O region; read-only applies only to memory-backed regions")]
    IoRegion(String),
    /// ioeventfds go on I/O regions only (a write to RAM never reaches the VMM).
    #[error(
        "region `{0}` is not an I/O region; ioeventfds only catch guest writes to I/O regions"
    )]
    NotIoRegion(String),
    /// An ioeventfd request breaks KVM's rules or leaves the region.
    #[error("ioeventfd at offset {offset:#x} of region `{name}`: {reason}")]
    InvalidEventfd {
        /// Name of the region.
        name: String,
        /// Offset of the ioeventfd in the region.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// `del_eventfd` found no ioeventfd added with those arguments.
    #[error(
        "region `{name}` has no ioeventfd at offset {offset:#x} with size {size} and datamatch          {datamatch:?} on that eventfd"
    )]
    NoSuchEventfd {
        /// Name of the region.
        name: String,
        /// Requested offset.
        offset: u64,
        /// Requested size.
        size: u64,
        /// Requested datamatch.
        datamatch: Option<u64>,
    },
    /// The region is already a subregion of some container.
    #[error("region `{name}` is already mapped in container `{container}`; remove it first")]
    AlreadyMapped {
        /// Name of the region.
        name: String,
        /// Name of the container that holds it.
        container: String,
    },
    /// The region is not a subregion of the given container (or of any container).
    #[error("region `{name}` is not mapped in container `{container}`")]
    NotMapped {
        /// Name of the region.
        name: String,
        /// Name of the container (or "any container").
        container: String,
    },
    /// Adding the subregion would make a region contain itself.
    #[error(
        "adding `{child}` to `{container}` would make a cycle (`{container}` is inside `{child}` \
         or is reached through one of its aliases)"
    )]
    Cycle {
        /// Name of the container.
        container: String,
        /// Name of the subregion.
        child: String,
    },
    /// The root container cannot be added, removed, moved or destroyed.
    #[error("the root container of the address space cannot be used this way")]
    RootRegion,
    /// The region cannot be destroyed while it is mapped, aliased or holds subregions.
    #[error("region `{name}` is still in use: {reason}")]
    RegionInUse {
        /// Name of the region.
        name: String,
        /// Why it is in use.
        reason: String,
    },
    /// An access to a region's host memory falls outside the region.
    #[error("access [{offset:#x}, +{len:#x}) is outside region `{name}` (size {size:#x})")]
    AccessOutOfRange {
        /// Name of the region.
        name: String,
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: usize,
        /// Size of the region.
        size: u64,
    },
    /// Dirty logging is not enabled on the region.
    #[error("dirty logging is off for region `{0}`; call set_dirty_logging(region, true) first")]
    DirtyLogDisabled(String),
    /// `commit_transaction`/`abort_transaction` without a matching `begin_transaction`.
    #[error("no transaction is open")]
    NoTransaction,
    /// The listener id does not name a registered listener.
    #[error("no listener is registered with id {0}")]
    UnknownListener(u64),
    /// Host memory could not be mapped.
    #[error("cannot map host memory for region `{name}`: {source}")]
    Mmap {
        /// Name of the region.
        name: String,
        /// The mmap error.
        #[source]
        source: vm_memory::mmap::MmapRegionError,
    },
    /// Building the vm-memory snapshot of the flat view failed.
    #[error("cannot build the guest memory snapshot: {0}")]
    GuestMemory(String),
    /// A listener refused the change; the change was undone (tree, flat view and listeners are
    /// as before the change).
    #[error("memory listener `{listener}` refused the change (it was undone): {source}")]
    Listener {
        /// Name of the listener.
        listener: String,
        /// What the listener reported.
        #[source]
        source: ListenerError,
    },
    /// A listener refused the change and then also refused the undo: its state no longer
    /// matches the flat view. The address space itself kept its previous view.
    #[error(
        "memory listener `{listener}` refused the change and then the undo; its state is now \
         inconsistent with the flat view: {source}"
    )]
    ListenerRollback {
        /// Name of the listener.
        listener: String,
        /// The error of the failed undo.
        #[source]
        source: ListenerError,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// An error a [`MemoryListener`](crate::MemoryListener) callback reports (e.g. "no free KVM
/// memory slot").
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ListenerError {
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ListenerError {
    /// An error with a message only.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// An error with a message and an underlying cause (e.g. a `kvm_ioctls::Error`).
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Result type of listener callbacks.
pub type ListenerResult = std::result::Result<(), ListenerError>;
