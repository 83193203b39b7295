//! The tap backend on a real tap, in a network namespace this test creates (nothing leaves
//! it). Without namespaces here (no CAP_SYS_ADMIN, no `ip`) it prints why and returns.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use vmkit_net::{offload, NetBackend, NetdevSpec, Tap, VNET_HDR_LEN};

/// Runs `body` on a thread in a new network namespace with `tap0` created (and IPv6 off).
fn in_netns<T: Send>(body: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare takes a flag word; it moves only this thread.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "unshare(CLONE_NEWNET): {}",
                        std::io::Error::last_os_error()
                    ));
                }
                let setup = "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null; \
                             ip tuntap add dev tap0 mode tap && ip link set tap0 up";
                let out = std::process::Command::new("sh")
                    .args(["-c", setup])
                    .output()
                    .map_err(|e| format!("sh: {e}"))?;
                if !out.status.success() {
                    return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
                }
                Ok(body())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A raw AF_PACKET socket on tap0 (all protocols).
fn packet_socket() -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(fd >= 0, "{}", std::io::Error::last_os_error());
    // SAFETY: fd is fresh and ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: the name is NUL-terminated and static.
    let index = unsafe { libc::if_nametoindex(c"tap0".as_ptr()) };
    // SAFETY: sockaddr_ll is plain data.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    fd
}

fn frame(seed: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, seed]);
    f.extend_from_slice(&0x88b5u16.to_be_bytes());
    f.resize(60, seed);
    f
}

#[test]
fn a_tap_with_vnet_header_sends_and_receives() {
    let result = in_netns(|| {
        let mut tap = Tap::open(Some("tap0"), None).expect("attach to tap0");
        assert_eq!(tap.name(), "tap0");
        assert!(tap.has_vnet_hdr(), "this kernel's tun has IFF_VNET_HDR");
        assert_eq!(tap.vnet_hdr_len(), VNET_HDR_LEN);
        let offloads = tap.supported_offloads();
        assert_ne!(offloads & offload::CSUM, 0, "{offloads:#x}");
        tap.set_offloads(offloads)
            .expect("TUNSETOFFLOAD with what it offered");
        tap.set_offloads(0).unwrap();

        let wire = packet_socket();
        // Host to tap: the frame arrives with a 12-byte header (no offload: all zero).
        let f = frame(1);
        // SAFETY: f is readable for its length.
        let n = unsafe { libc::send(wire.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
        assert_eq!(n, 60);
        let mut buf = vec![0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            match tap.recv(&mut buf) {
                Ok(n) => break buf[..n].to_vec(),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "no frame on the tap fd");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("tap read: {e}"),
            }
        };
        assert_eq!(&got[..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
        assert_eq!(&got[VNET_HDR_LEN..], &f[..]);
        // Tap to host: a header then the frame.
        let mut out = vec![0u8; VNET_HDR_LEN];
        out.extend_from_slice(&frame(2));
        tap.send(&out).expect("tap write");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                libc::recv(
                    wire.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n == 60 && buf[..60] == frame(2)[..] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the tap's frame never reached tap0"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // The same interface as an inherited fd (QEMU's fd=).
        let again = Tap::from_fd(tap.into_fd()).expect("fd=");
        assert_eq!(again.name(), "tap0");
        assert!(again.has_vnet_hdr());
        // A second attach while in use, and a -netdev naming a tun device that is busy.
        let err = NetdevSpec::parse("tap,id=n0,ifname=tap0")
            .unwrap()
            .open()
            .err()
            .map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("TUNSETIFF")),
            "{err:?}"
        );
    });
    if let Err(why) = result {
        eprintln!("tap: not run: no network namespace with a tap here ({why})");
    }
}
