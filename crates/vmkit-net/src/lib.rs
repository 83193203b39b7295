//! Networking for KVM VMMs, shaped after QEMU's `net/` and `hw/net/virtio-net.c`.
//!
//! - [`NetBackend`]: what a NIC's host side does (send a frame, receive one without
//!   blocking, an fd to poll, an optional vnet header with offloads).
//! - [`Tap`]: a Linux tap interface (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`, `IFF_VNET_HDR`
//!   with a 12-byte header and `TUNSETOFFLOAD` when the kernel has them), by name or as an
//!   inherited fd; [`DatagramBackend`]: frames over a Unix datagram socket.
//! - [`NetdevSpec`] / [`NicSpec`]: QEMU's `-netdev tap,id=,ifname=,script=no,downscript=no
//!   [,fd=][,vhost=off]` and `-nic tap,...` text, refusing what vmkit cannot do with the
//!   reason (`script=` other than `no`, `-netdev user` and the other backend types).
//! - [`VirtioNet`]: the virtio-net device (type 1) on vmkit-virtio's [`VirtioDevice`](vmkit_virtio::VirtioDevice)
//!   trait: MAC, link status ([`NetLink`], QMP's `set_link`), `MRG_RXBUF`, offloads,
//!   receive back-pressure. Put it on a transport with `vmkit_virtio::VirtioPciBuilder`.
//!
//! No KVM here.
//!
//! # Example: a frame from the guest's transmit queue to the backend
//!
//! ```
//! use std::os::unix::net::UnixDatagram;
//! use std::sync::Arc;
//! use std::time::Duration;
//! use virtio_queue::desc::{split::Descriptor, RawDescriptor};
//! use virtio_queue::mock::MockSplitQueue;
//! use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
//! use vmkit_net::{DatagramBackend, VirtioNet, DEFAULT_MAC};
//! use vmkit_pci::{PciDevice, RegionIndex};
//! use vmkit_virtio::{common, VirtioPciBuilder};
//!
//! let (wire, host) = UnixDatagram::pair()?;
//! let net = VirtioNet::new(Box::new(DatagramBackend::new(wire)?), DEFAULT_MAC)?;
//! let mem = Arc::new(GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)])?);
//! let mut dev = VirtioPciBuilder::new().disable_legacy(true).vectors(0)
//!     .build(Box::new(net), mem.clone())?;
//!
//! // Queue 1 (transmit) holds one chain: the 12-byte header, then a 60-byte frame.
//! let rxq = MockSplitQueue::create(&*mem, GuestAddress(0x1000), 16);
//! let txq = MockSplitQueue::create(&*mem, GuestAddress(0x4000), 16);
//! mem.write_slice(&[0u8; 12], GuestAddress(0x8000))?;
//! mem.write_slice(&[0xab; 60], GuestAddress(0x800c))?;
//! txq.add_desc_chains(&[RawDescriptor::from(Descriptor::new(0x8000, 72, 0, 0))], 0)?;
//!
//! let bar4 = RegionIndex::Bar(4);
//! let mut w = |off: u64, v: u64, len: usize| dev.region_write(bar4, off, &v.to_le_bytes()[..len]);
//! w(common::DEVICE_STATUS, 1 | 2, 1);
//! w(common::DRIVER_FEATURE_SELECT, 1, 4);
//! w(common::DRIVER_FEATURE, 1, 4);                  // VIRTIO_F_VERSION_1 only
//! w(common::DEVICE_STATUS, 1 | 2 | 8, 1);
//! for (q, vq) in [(0, &rxq), (1, &txq)] {
//!     w(common::QUEUE_SELECT, q, 2);
//!     w(common::QUEUE_SIZE, 16, 2);
//!     w(common::QUEUE_DESC_LO, vq.desc_table_addr().0, 4);
//!     w(common::QUEUE_DRIVER_LO, vq.avail_addr().0, 4);
//!     w(common::QUEUE_DEVICE_LO, vq.used_addr().0, 4);
//!     w(common::QUEUE_ENABLE, 1, 2);
//! }
//! w(common::DEVICE_STATUS, 1 | 2 | 8 | 4, 1);       // DRIVER_OK: the worker sends it
//!
//! host.set_read_timeout(Some(Duration::from_secs(10)))?;
//! let mut frame = [0u8; 100];
//! assert_eq!(host.recv(&mut frame)?, 60);
//! assert!(frame[..60].iter().all(|&b| b == 0xab));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod backend;
mod device;
mod spec;
mod tap;

pub use backend::{offload, DatagramBackend, NetBackend, VNET_HDR_LEN};
pub use device::{
    NetLink, NetStats, VirtioNet, LEGACY_HDR_LEN, MAX_FRAME, NET_CONFIG_LEN, NET_CONFIG_STATUS,
    NET_QUEUE_SIZE,
};
pub use spec::{
    default_mac, format_mac, parse_mac, NetdevKind, NetdevSpec, NicSpec, TapOptions, DEFAULT_MAC,
};
pub use tap::{check_ifname, Tap, IFNAME_MAX};

/// Errors of parsing netdev options and opening backends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An option or value is not accepted.
    #[error("{option}={value}: {reason}")]
    Option {
        /// The parameter (`ifname`, `script`, `type`, ...).
        option: String,
        /// The value given.
        value: String,
        /// Why, and what is accepted.
        reason: String,
    },
    /// An interface name the kernel would refuse.
    #[error("ifname={name}: {reason}")]
    Ifname {
        /// The name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// Opening or configuring a tap failed.
    #[error("tap {ifname}: {what}: {source}")]
    Tap {
        /// The interface (or `fd=N`).
        ifname: String,
        /// The step that failed.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An OS resource (eventfd, epoll, thread) could not be created.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Result of this crate's fallible operations.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests;
