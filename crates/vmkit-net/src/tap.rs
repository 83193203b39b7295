//! A Linux tap device (`/dev/net/tun` with `IFF_TAP | IFF_NO_PI`, a 12-byte vnet header
//! when the kernel offers `IFF_VNET_HDR`), as QEMU's `net/tap-linux.c` opens it.

use std::ffi::CStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref, ioctl_with_val};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

use crate::backend::{offload, NetBackend, VNET_HDR_LEN};
use crate::{Error, Result};

/// Longest interface name (`IFNAMSIZ` 16 with its NUL).
pub const IFNAME_MAX: usize = 15;

const TUN_PATH: &str = "/dev/net/tun";
const IFF_TAP: u16 = 0x0002;
const IFF_NO_PI: u16 = 0x1000;
const IFF_VNET_HDR: u16 = 0x4000;
const TUNTAP_IOCTL: u32 = b'T' as u32;

ioctl_iow_nr!(TUNSETIFF, TUNTAP_IOCTL, 202, libc::c_int);
ioctl_ior_nr!(TUNGETFEATURES, TUNTAP_IOCTL, 207, libc::c_uint);
ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP_IOCTL, 208, libc::c_uint);
ioctl_ior_nr!(TUNGETIFF, TUNTAP_IOCTL, 210, libc::c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP_IOCTL, 216, libc::c_int);

/// `struct ifreq` with the `ifr_flags` member of its union (40 bytes on x86-64).
#[repr(C)]
#[derive(Clone, Copy)]
struct IfReq {
    name: [u8; 16],
    flags: u16,
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: u16) -> Self {
        let mut req = IfReq {
            name: [0; 16],
            flags,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }

    fn name(&self) -> String {
        CStr::from_bytes_until_nul(&self.name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Whether `name` can be a Linux interface name: 1 to [`IFNAME_MAX`] bytes, no `/`, NUL,
/// whitespace or `:`, not `.` or `..`.
pub fn check_ifname(name: &str) -> Result<()> {
    let bad = |reason: &'static str| {
        Err(Error::Ifname {
            name: name.into(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > IFNAME_MAX {
        return bad("it is longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not interface names");
    }
    if name
        .bytes()
        .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace())
    {
        return bad("'/', ':', NUL and whitespace are not allowed");
    }
    Ok(())
}

/// A tap device: frames in and out of a host network interface.
///
/// [`open`](Self::open) creates or attaches to the interface named (or lets the kernel
/// name one, `tapN`) with `IFF_TAP | IFF_NO_PI`, plus `IFF_VNET_HDR` with a 12-byte header
/// (`TUNSETVNETHDRSZ`) when the kernel offers it; [`from_fd`](Self::from_fd) takes a tap
/// fd someone else opened (QEMU's `fd=`). The fd is nonblocking. Offloads start off and
/// follow what the guest negotiates ([`NetBackend::set_offloads`], `TUNSETOFFLOAD`).
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    vnet_hdr: bool,
    offloads: u32,
}

impl Tap {
    /// Opens `/dev/net/tun` and attaches to interface `ifname` (`None`: a new `tapN`).
    /// `vnet_hdr`: `None` uses the vnet header if the kernel has it, `Some(true)` requires
    /// it, `Some(false)` goes without.
    pub fn open(ifname: Option<&str>, vnet_hdr: Option<bool>) -> Result<Self> {
        if let Some(name) = ifname {
            check_ifname(name)?;
        }
        let shown = ifname.unwrap_or("tap%d").to_string();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_PATH)
            .map_err(|source| Error::Tap {
                ifname: shown.clone(),
                what: "could not open /dev/net/tun",
                source,
            })?;
        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one c_uint to the reference we pass, which lives
        // across the call; the fd is a tun device we own.
        let have_vnet_hdr = unsafe { ioctl_with_mut_ref(&file, TUNGETFEATURES(), &mut features) }
            >= 0
            && features & libc::c_uint::from(IFF_VNET_HDR) != 0;
        let use_vnet_hdr = match vnet_hdr {
            Some(true) if !have_vnet_hdr => {
                return Err(Error::Tap {
                    ifname: shown,
                    what: "vnet_hdr=on: the kernel's tun driver has no IFF_VNET_HDR",
                    source: io::Error::from(io::ErrorKind::Unsupported),
                })
            }
            Some(on) => on,
            None => have_vnet_hdr,
        };
        let mut flags = IFF_TAP | IFF_NO_PI;
        if use_vnet_hdr {
            flags |= IFF_VNET_HDR;
        }
        let mut req = IfReq::new(ifname.unwrap_or(""), flags);
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq` (40 bytes, `IfReq`'s layout)
        // through the reference, valid for the call.
        if unsafe { ioctl_with_mut_ref(&file, TUNSETIFF(), &mut req) } < 0 {
            return Err(Error::Tap {
                ifname: shown,
                what: "could not configure /dev/net/tun (TUNSETIFF: is the interface in use \
                       by another process or of another type, or is CAP_NET_ADMIN missing?)",
                source: io::Error::last_os_error(),
            });
        }
        Self::finish(file, req.name(), use_vnet_hdr)
    }

    /// Takes an open tap fd (QEMU's `fd=`): its name and whether it has `IFF_VNET_HDR`
    /// come from `TUNGETIFF`; it is made nonblocking.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        let raw = fd.as_raw_fd();
        let file = File::from(fd);
        let mut req = IfReq::new("", 0);
        // SAFETY: TUNGETIFF fills a `struct ifreq` through the reference, valid for the call.
        if unsafe { ioctl_with_mut_ref(&file, TUNGETIFF(), &mut req) } < 0 {
            return Err(Error::Tap {
                ifname: format!("fd={raw}"),
                what: "fd is not a tap device (TUNGETIFF failed)",
                source: io::Error::last_os_error(),
            });
        }
        if req.flags & IFF_TAP == 0 {
            return Err(Error::Tap {
                ifname: format!("fd={raw}"),
                what: "fd is a tun (layer 3) device, not a tap",
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        // SAFETY: F_GETFL/F_SETFL on an fd we own take and return plain integers.
        let ok = unsafe {
            let fl = libc::fcntl(raw, libc::F_GETFL);
            fl >= 0 && libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) >= 0
        };
        if !ok {
            return Err(Error::Tap {
                ifname: format!("fd={raw}"),
                what: "could not make the tap fd nonblocking",
                source: io::Error::last_os_error(),
            });
        }
        Self::finish(file, req.name(), req.flags & IFF_VNET_HDR != 0)
    }

    fn finish(file: File, name: String, vnet_hdr: bool) -> Result<Self> {
        let mut tap = Tap {
            file,
            name,
            vnet_hdr,
            offloads: 0,
        };
        if vnet_hdr {
            let len = VNET_HDR_LEN as libc::c_int;
            // SAFETY: TUNSETVNETHDRSZ reads one c_int through the reference.
            if unsafe { ioctl_with_ref(&tap.file, TUNSETVNETHDRSZ(), &len) } < 0 {
                return Err(Error::Tap {
                    ifname: tap.name,
                    what: "TUNSETVNETHDRSZ 12 failed",
                    source: io::Error::last_os_error(),
                });
            }
            // Probe what the kernel takes, then start with none (until the guest says).
            let all = offload::CSUM | offload::TSO4 | offload::TSO6 | offload::TSO_ECN;
            if tap.set_offload_flags(all).is_ok() {
                tap.offloads = all;
            } else if tap.set_offload_flags(offload::CSUM).is_ok() {
                tap.offloads = offload::CSUM;
            }
            let _ = tap.set_offload_flags(0);
        }
        Ok(tap)
    }

    fn set_offload_flags(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its flags by value.
        if unsafe { ioctl_with_val(&self.file, TUNSETOFFLOAD(), libc::c_ulong::from(flags)) } < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// The interface name (as the kernel reports it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether frames carry the 12-byte vnet header.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Gives up the fd.
    pub fn into_fd(self) -> OwnedFd {
        OwnedFd::from(self.file)
    }

    /// Takes a raw fd number (QEMU's `fd=N`).
    ///
    /// # Safety
    ///
    /// `fd` must be an open fd that nothing else owns or closes.
    pub unsafe fn from_raw_fd(fd: RawFd) -> Result<Self> {
        // SAFETY: the caller hands over ownership of an open fd.
        Self::from_fd(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

impl NetBackend for Tap {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.file.write(frame).map(drop)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn vnet_hdr_len(&self) -> usize {
        if self.vnet_hdr {
            VNET_HDR_LEN
        } else {
            0
        }
    }

    fn supported_offloads(&self) -> u32 {
        self.offloads
    }

    fn set_offloads(&mut self, flags: u32) -> io::Result<()> {
        self.set_offload_flags(flags & self.offloads)
    }

    fn describe(&self) -> String {
        format!("tap {}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_is_the_kernels_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        assert_eq!(IfReq::new("tap0", 0).name(), "tap0");
    }

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("tap0").is_ok());
        assert!(check_ifname("a23456789012345").is_ok());
        for bad in ["", "a234567890123456", "a/b", "a b", "a:1", ".."] {
            let err = check_ifname(bad).unwrap_err().to_string();
            assert!(err.contains("ifname"), "{bad}: {err}");
        }
    }

    #[test]
    fn an_fd_that_is_not_a_tap_is_refused() {
        let file = File::open("/dev/null").unwrap();
        let err = Tap::from_fd(OwnedFd::from(file)).unwrap_err().to_string();
        assert!(err.contains("not a tap"), "{err}");
    }
}
