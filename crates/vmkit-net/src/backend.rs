//! The host side of a network device: what a backend does, and a datagram-socket backend.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

/// Length of the vnet header vmkit's backends exchange frames with when they have one:
/// `struct virtio_net_hdr_v1` (the legacy 10-byte header plus `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// Offload flags of `TUNSETOFFLOAD` (`TUN_F_*`): the kind of packets the host may hand the
/// guest.
pub mod offload {
    /// Partial checksums (`VIRTIO_NET_F_GUEST_CSUM`).
    pub const CSUM: u32 = 0x01;
    /// TCPv4 segmentation (`VIRTIO_NET_F_GUEST_TSO4`).
    pub const TSO4: u32 = 0x02;
    /// TCPv6 segmentation (`VIRTIO_NET_F_GUEST_TSO6`).
    pub const TSO6: u32 = 0x04;
    /// TSO with ECN (`VIRTIO_NET_F_GUEST_ECN`).
    pub const TSO_ECN: u32 = 0x08;
}

/// A network backend: where a NIC's frames go and come from (QEMU's `NetClientState`
/// peer). Frames are Ethernet frames, each preceded by a [`VNET_HDR_LEN`]-byte
/// `virtio_net_hdr_v1` when [`vnet_hdr_len`](Self::vnet_hdr_len) says so.
///
/// The device polls [`as_raw_fd`](Self::as_raw_fd) for readability (and writability after
/// a send returned [`io::ErrorKind::WouldBlock`]); it never blocks in the backend.
pub trait NetBackend: Send {
    /// Sends one frame (header, if any, then the Ethernet frame). `WouldBlock`: nothing
    /// was sent, try again when the fd is writable.
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Receives one frame into `buf` without blocking and returns its length;
    /// `WouldBlock` when none is waiting.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// The fd to poll.
    fn as_raw_fd(&self) -> RawFd;

    /// 0 (plain frames) or [`VNET_HDR_LEN`] (frames carry a `virtio_net_hdr_v1`).
    fn vnet_hdr_len(&self) -> usize {
        0
    }

    /// The [`offload`] flags the backend can take (none by default; only with a vnet
    /// header).
    fn supported_offloads(&self) -> u32 {
        0
    }

    /// Tells the backend which [`offload`]s the guest accepts (a subset of
    /// [`supported_offloads`](Self::supported_offloads)).
    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        if flags == 0 {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this backend takes no offloads",
            ))
        }
    }

    /// A short description for messages (`tap0`, `socket`).
    fn describe(&self) -> String;
}

impl<T: NetBackend + ?Sized> NetBackend for Box<T> {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        (**self).send(frame)
    }
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).recv(buf)
    }
    fn as_raw_fd(&self) -> RawFd {
        (**self).as_raw_fd()
    }
    fn vnet_hdr_len(&self) -> usize {
        (**self).vnet_hdr_len()
    }
    fn supported_offloads(&self) -> u32 {
        (**self).supported_offloads()
    }
    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        (**self).set_offloads(flags)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// A backend on a Unix datagram socket: each datagram is one plain Ethernet frame (no
/// vnet header). The other end of a [`UnixDatagram::pair`] is a host-side "wire" for
/// tests and in-process switches.
#[derive(Debug)]
pub struct DatagramBackend {
    socket: UnixDatagram,
}

impl DatagramBackend {
    /// Takes `socket` (made nonblocking).
    pub fn new(socket: UnixDatagram) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self { socket })
    }
}

impl NetBackend for DatagramBackend {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.socket.send(frame).map(drop)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(buf)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    fn describe(&self) -> String {
        "socket".into()
    }
}
