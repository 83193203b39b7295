//! virtio-net-pci on a tap, driven by a tiny real-mode legacy virtio-net driver. Every test
//! that needs a tap runs in a network namespace it creates (`unshare(CLONE_NEWNET)` on a
//! thread of its own, then `ip tuntap add dev tap0 mode tap`): no frame leaves it.
//!
//! If the namespace cannot be created (no CAP_SYS_ADMIN / CAP_NET_ADMIN, no `ip`), those
//! tests print why and return: the cause is the host's namespaces, not KVM, so
//! `VMKIT_REQUIRE_KVM=1` does not turn it into a failure (a missing KVM does).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::legacy_driver::*;
use common::*;

/// The ethertype of the test's frames (IEEE local experimental): the namespace's kernel
/// ignores them.
const ETHERTYPE: u16 = 0x88b5;
const RX_RING: u32 = 0x1_0000;
const RX_BUF: u32 = 0x2_0000;
const RX_BUF_LEN: u32 = 1600;
const TX_RING: u32 = 0x3_0000;
const TX_BUF: u32 = 0x4_0000;
/// Where the guest keeps the frame it expects from the host.
const EXPECT: u32 = 0x5_0000;
/// A legacy driver without MRG_RXBUF: 10-byte virtio_net_hdr.
const HDR: u32 = 10;
/// vmkit's default MAC for the first NIC, as QEMU's.
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];

fn ethernet(dst: [u8; 6], src: [u8; 6], payload: &[u8], len: usize) -> Vec<u8> {
    let mut frame = Vec::with_capacity(len);
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    frame.extend_from_slice(&ETHERTYPE.to_be_bytes());
    frame.extend_from_slice(payload);
    frame.resize(len, 0xa5);
    frame
}

/// What the guest sends: broadcast, its own MAC (read from the device configuration) as
/// the source.
fn guest_frame() -> Vec<u8> {
    ethernet(
        [0xff; 6],
        GUEST_MAC,
        b"vmkit-net: a frame from the guest",
        60,
    )
}

/// What the host sends the guest.
fn host_frame() -> Vec<u8> {
    ethernet(
        GUEST_MAC,
        HOST_MAC,
        b"vmkit-net: a frame from the host",
        100,
    )
}

/// Runs `body` on a thread in a fresh network namespace holding `tap0` (up, IPv6 off so the
/// kernel sends nothing on its own). `Err`: why the namespace could not be made.
fn in_netns<T: Send>(body: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: unshare takes a flag word; CLONE_NEWNET moves only this thread (and
                // the processes it spawns) into a new network namespace.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(format!(
                        "unshare(CLONE_NEWNET) failed: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                let setup = "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6 2>/dev/null; \
                             echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6 2>/dev/null; \
                             ip tuntap add dev tap0 mode tap && ip link set tap0 up";
                let out = Command::new("sh")
                    .args(["-c", setup])
                    .output()
                    .map_err(|e| format!("running sh for `ip tuntap add`: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "`{setup}` failed in the new namespace: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                Ok(body())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// `require_kvm!` first, then the namespace; prints why when there is none.
macro_rules! in_netns_or_return {
    ($body:expr) => {{
        require_kvm!();
        match in_netns($body) {
            Ok(value) => value,
            Err(why) => {
                eprintln!(
                    "virtio_net: not run: cannot create a network namespace with a tap here \
                     ({why}); this is not a KVM problem"
                );
                return;
            }
        }
    }};
}

/// An AF_PACKET socket on `tap0` for the test's ethertype: the host end of the wire.
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open(ifname: &str) -> Self {
        let proto = ETHERTYPE.to_be();
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is a fresh socket nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: name is a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert!(index > 0, "if_nametoindex({ifname})");
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid start.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: addr is a sockaddr_ll of the size passed, valid for the call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
        let timeout = libc::timeval {
            tv_sec: 30,
            tv_usec: 0,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(rc, 0);
        PacketSocket(fd)
    }

    /// The next frame of our ethertype that arrives on the tap (None after 30 s).
    fn recv(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2048];
        // SAFETY: buf is writable for its length during the call.
        let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let n = usize::try_from(n).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: frame is readable for its length during the call.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Emits: write `bytes` at `segment:offset` with ES.
fn emit_bytes(
    a: &mut CodeAssembler,
    segment: u32,
    offset: u32,
    bytes: &[u8],
) -> Result<(), IcedError> {
    a.mov(ax, segment >> 4)?;
    a.mov(es, ax)?;
    for (i, &byte) in bytes.iter().enumerate() {
        a.mov(byte_ptr(offset + i as u32).es(), u32::from(byte))?;
    }
    Ok(())
}

/// The driver for virtio-net at `slot`.0: prints 'V' (1af4:1000), 'L' (link up in
/// `status`), posts a receive buffer, transmits [`guest_frame`] with its source MAC read
/// from the configuration, prints 'T' when it went and 'R' when a frame came in; then exits
/// through isa-debug-exit with 0x10 (status 33) if the frame is [`host_frame`] (after the
/// 10-byte header, used length 10 + 100; with `mrg_rxbuf` the driver accepts
/// VIRTIO_NET_F_MRG_RXBUF and the header is 12 bytes with num_buffers 1), 1 (status 3) if
/// its bytes differ, 2 (status 5) if its length (or num_buffers) does.
fn net_driver(slot: u32, mrg_rxbuf: bool) -> Vec<u8> {
    // With MRG_RXBUF the header has num_buffers: 12 bytes.
    let hdr: u32 = if mrg_rxbuf { 12 } else { HDR };
    let sent = guest_frame();
    let expected = host_frame();
    real_mode_guest(|a| {
        let mut no_link = a.create_label();
        let mut bad_len = a.create_label();
        let mut mismatch = a.create_label();
        a.cli()?;
        // Header (zero) and frame with a zero source MAC for now.
        let mut template = vec![0u8; hdr as usize];
        template.extend_from_slice(&sent);
        template[hdr as usize + 6..hdr as usize + 12].fill(0);
        emit_bytes(a, TX_BUF, 0, &template)?;
        emit_bytes(a, EXPECT, 0, &expected)?;
        emit_probe(a, slot, 0x1000)?;
        if mrg_rxbuf {
            // GUEST_FEATURES: VIRTIO_NET_F_MRG_RXBUF (bit 15), taking effect at DRIVER_OK.
            a.mov(dx, IO_BASE + 0x04)?;
            a.mov(eax, 1u32 << 15)?;
            a.out(dx, eax)?;
        }
        // The MAC from the configuration (at 0x14: no MSI-X) as the source address.
        a.mov(ax, TX_BUF >> 4)?;
        a.mov(es, ax)?;
        for i in 0..6u32 {
            a.mov(dx, IO_BASE + 0x14 + i)?;
            a.in_(al, dx)?;
            a.mov(byte_ptr(hdr + 6 + i).es(), al)?;
        }
        a.mov(dx, IO_BASE + 0x1a)?;
        a.in_(ax, dx)?;
        a.test(ax, 1u32)?;
        a.jz(no_link)?;
        a.mov(al, b'L' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut no_link)?;
        emit_queue_with_one_buffer(a, 0, RX_RING, RX_BUF, RX_BUF_LEN, 2 /* WRITE */)?;
        emit_queue_with_one_buffer(a, 1, TX_RING, TX_BUF, hdr + sent.len() as u32, 0)?;
        emit_driver_ok(a, &[1, 0])?;
        emit_wait_used(a, TX_RING)?;
        a.mov(al, b'T' as u32)?;
        emit_putc(a)?;
        emit_wait_used(a, RX_RING)?;
        a.mov(al, b'R' as u32)?;
        emit_putc(a)?;
        a.mov(ax, RX_RING >> 4)?;
        a.mov(ds, ax)?;
        a.cmp(dword_ptr(used_offset() + 8), hdr + expected.len() as u32)?;
        a.jne(bad_len)?;
        a.mov(ax, RX_BUF >> 4)?;
        a.mov(ds, ax)?;
        a.mov(ax, EXPECT >> 4)?;
        a.mov(es, ax)?;
        a.mov(si, hdr)?;
        a.xor(di, di)?;
        a.mov(cx, expected.len() as u32)?;
        a.cld()?;
        a.repe().cmpsb()?;
        a.jne(mismatch)?;
        if mrg_rxbuf {
            // num_buffers: the frame took one buffer.
            a.cmp(word_ptr(10), 1u32)?;
            a.jne(bad_len)?;
        }
        a.mov(al, 0x10u32)?;
        emit_debug_exit(a)?;
        a.set_label(&mut bad_len)?;
        a.mov(al, 2u32)?;
        emit_debug_exit(a)?;
        a.set_label(&mut mismatch)?;
        a.mov(al, 1u32)?;
        emit_debug_exit(a)
    })
}

/// How the test hands vmkit its tap.
#[derive(Debug, Clone, Copy)]
enum TapBy {
    /// `-netdev tap,ifname=tap0 -device virtio-net-pci,netdev=n0`.
    Ifname,
    /// `-nic tap,ifname=tap0`.
    Nic,
    /// The test opens tap0 and passes it as fd 3: `-netdev tap,id=n0,fd=3`.
    Fd,
    /// As `Ifname`, with a driver that accepts `VIRTIO_NET_F_MRG_RXBUF`.
    Mergeable,
}

/// Runs the frames driver with the tap given `by`; returns vmkit's output and the frame the
/// host read from tap0.
fn exchange_frames(by: TapBy) -> (std::process::Output, Option<Vec<u8>>) {
    // Open the host end before the guest runs, so its frame cannot be missed.
    let wire = PacketSocket::open("tap0");
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(guest_file(
            "virtio-net",
            &net_driver(2, matches!(by, TapBy::Mergeable)),
        ))
        .args(["-device", "isa-debug-exit,iobase=0x501,iosize=2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match by {
        TapBy::Ifname | TapBy::Mergeable => {
            command
                .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
                .args(["-device", "virtio-net-pci,netdev=n0"]);
        }
        TapBy::Nic => {
            command.args(["-nic", "tap,ifname=tap0,script=no,downscript=no"]);
        }
        TapBy::Fd => {
            let tap = vmkit_net::Tap::open(Some("tap0"), None).expect("open tap0");
            let fd = tap.into_fd();
            let raw = fd.as_raw_fd();
            command.args([
                "-netdev",
                "tap,id=n0,fd=3",
                "-device",
                "virtio-net-pci,netdev=n0",
            ]);
            // SAFETY: the closure runs in the child between fork and exec and only calls
            // dup2, which is async-signal-safe; `raw` stays open in the parent until spawn
            // returns (fd lives to the end of this function).
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if libc::dup2(raw, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command.spawn().expect("start vmkit");
            drop(fd);
            return finish_exchange(&wire, child);
        }
    }
    let child = command.spawn().expect("start vmkit");
    finish_exchange(&wire, child)
}

fn finish_exchange(
    wire: &PacketSocket,
    child: std::process::Child,
) -> (std::process::Output, Option<Vec<u8>>) {
    let received = wire.recv();
    if received.is_some() {
        wire.send(&host_frame());
    }
    (wait_child(child, Duration::from_secs(60)), received)
}

#[test]
fn frames_go_out_and_come_in_through_a_tap() {
    let runs = in_netns_or_return!(|| {
        [TapBy::Ifname, TapBy::Nic, TapBy::Fd, TapBy::Mergeable].map(|by| (by, exchange_frames(by)))
    });
    for (by, (output, received)) in runs {
        let err = stderr(&output);
        assert_eq!(
            received.as_deref(),
            Some(&guest_frame()[..]),
            "{by:?}: the guest's frame on tap0; guest said {:?}, stderr: {err}",
            stdout(&output)
        );
        assert_eq!(stdout(&output), "VLTR", "{by:?}: stderr: {err}");
        assert_eq!(
            output.status.code(),
            Some(33),
            "{by:?}: guest verdict (3: bytes differ, 5: length differs); stderr: {err}"
        );
    }
}

/// The link driver: 'V', queues, DRIVER_OK, 'L' if the link is up, then waits for it to
/// go down ('D', and 'C' if the ISR shows a configuration interrupt) and up again ('U'),
/// and powers off.
fn link_driver(slot: u32) -> Vec<u8> {
    real_mode_guest(|a| {
        let mut wait_down = a.create_label();
        let mut wait_isr = a.create_label();
        let mut wait_up = a.create_label();
        let mut off = a.create_label();
        a.cli()?;
        emit_probe(a, slot, 0x1000)?;
        emit_queue_with_one_buffer(a, 0, RX_RING, RX_BUF, RX_BUF_LEN, 2)?;
        emit_queue(a, 1, TX_RING)?;
        emit_driver_ok(a, &[0])?;
        a.mov(dx, IO_BASE + 0x1a)?;
        a.in_(ax, dx)?;
        a.test(ax, 1u32)?;
        a.jz(wait_down)?;
        a.mov(al, b'L' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut wait_down)?;
        a.pause()?;
        a.mov(dx, IO_BASE + 0x1a)?;
        a.in_(ax, dx)?;
        a.test(ax, 1u32)?;
        a.jnz(wait_down)?;
        a.mov(al, b'D' as u32)?;
        emit_putc(a)?;
        // The configuration interrupt follows the status change (two registers: a driver
        // may see the new status first), so poll the ISR until it shows it.
        a.set_label(&mut wait_isr)?;
        a.pause()?;
        a.mov(dx, IO_BASE + 0x13)?;
        a.in_(al, dx)?;
        a.test(al, 2u32)?;
        a.jz(wait_isr)?;
        a.mov(al, b'C' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut wait_up)?;
        a.pause()?;
        a.mov(dx, IO_BASE + 0x1a)?;
        a.in_(ax, dx)?;
        a.test(ax, 1u32)?;
        a.jz(wait_up)?;
        a.mov(al, b'U' as u32)?;
        emit_putc(a)?;
        a.set_label(&mut off)?;
        a.mov(ax, 0x2000u32)?;
        a.mov(dx, 0x604u32)?;
        a.out(dx, ax)?;
        a.hlt()?;
        a.jmp(off)
    })
}

/// A QMP client: greeting and capabilities done.
struct Qmp(BufReader<UnixStream>);

impl Qmp {
    fn connect(path: &Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("QMP connect {}: {e}", path.display()),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut qmp = Qmp(BufReader::new(stream));
        let mut greeting = String::new();
        qmp.0.read_line(&mut greeting).unwrap();
        assert!(greeting.contains("QMP"), "{greeting}");
        assert!(qmp
            .cmd(r#"{"execute": "qmp_capabilities"}"#)
            .contains("return"));
        qmp
    }

    /// Sends `command` and returns the reply line (events skipped).
    fn cmd(&mut self, command: &str) -> String {
        writeln!(self.0.get_mut(), "{command}").unwrap();
        loop {
            let mut line = String::new();
            assert!(self.0.read_line(&mut line).unwrap() > 0, "QMP closed");
            if !line.contains("\"event\"") {
                return line;
            }
        }
    }
}

/// Waits until `file` holds `text` (the guest's COM1 output).
fn wait_for_output(file: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = std::fs::read_to_string(file).unwrap_or_default();
        if got.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "guest printed {got:?}, not {text:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn qmp_set_link_toggles_the_status_the_guest_sees() {
    let com1 = guest_file("virtio-net-link-com1", b"");
    let socket = guest_file("virtio-net-link-qmp", b"").with_extension("sock");
    let _ = std::fs::remove_file(&socket);
    let (output, replies) = in_netns_or_return!(|| {
        let mut command = vmkit();
        command
            .arg("-flat")
            .arg(guest_file("virtio-net-link", &link_driver(3)))
            .args(["-serial", &format!("file:{}", com1.display())])
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(["-device", "virtio-net-pci,id=nic0,netdev=n0,addr=3"])
            .args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", socket.display()),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = command.spawn().expect("start vmkit");
        let mut qmp = Qmp::connect(&socket);
        wait_for_output(&com1, "VL");
        let mut replies =
            vec![qmp.cmd(r#"{"execute": "set_link", "arguments": {"name": "n0", "up": false}}"#)];
        wait_for_output(&com1, "VLD");
        replies
            .push(qmp.cmd(r#"{"execute": "set_link", "arguments": {"name": "nope", "up": true}}"#));
        // By the NIC's id this time.
        replies
            .push(qmp.cmd(r#"{"execute": "set_link", "arguments": {"name": "nic0", "up": true}}"#));
        (wait_child(child, Duration::from_secs(60)), replies)
    });
    let err = stderr(&output);
    assert_eq!(replies[0].trim(), r#"{"return": {}}"#);
    assert_eq!(
        replies[1].trim(),
        r#"{"error": {"class": "DeviceNotFound", "desc": "Device 'nope' not found"}}"#
    );
    assert_eq!(replies[2].trim(), r#"{"return": {}}"#);
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert_eq!(std::fs::read_to_string(&com1).unwrap(), "VLDCU");
}

#[test]
fn bad_netdev_options_are_refused_by_name() {
    // Refused on the command line, before any tap or KVM is touched.
    for (args, needle) in [
        (
            &["-netdev", "tap,id=n0,ifname=averyveryverylongtap"][..],
            "longer than 15 bytes",
        ),
        (
            &["-netdev", "user,id=n0"][..],
            "the backend vmkit has is tap",
        ),
        (
            &["-netdev", "tap,id=n0,script=/etc/qemu-ifup"][..],
            "runs no interface scripts",
        ),
        (&["-netdev", "tap,ifname=tap0"][..], "needs id=ID"),
        (
            &["-netdev", "tap,id=n0", "-netdev", "tap,id=n0"][..],
            "Duplicate ID 'n0'",
        ),
    ] {
        let mut command = vmkit();
        command.args(["-flat", "/dev/null"]).args(args);
        let (output, _) = run(command, Duration::from_secs(20));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
    }
}

#[test]
fn a_nic_needs_an_existing_netdev() {
    require_kvm!();
    for (device, needle) in [
        ("virtio-net-pci", "needs netdev=ID"),
        (
            "virtio-net-pci,netdev=nope",
            "netdev 'nope' is not a -netdev",
        ),
        ("virtio-net-pci,netdev=n0,mac=52:54:00", "mac=52:54:00"),
    ] {
        let mut command = vmkit();
        command
            .arg("-flat")
            .arg(guest_file("virtio-net-bad", &[0xf4]))
            .args(["-device", device]);
        let (output, _) = run(command, Duration::from_secs(20));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{device}: {err}");
        assert!(err.contains(needle), "{device}: '{needle}' not in {err}");
    }
}

/// Frames of the back-pressure test: sequence number `seq` first in the payload.
fn burst_frame(seq: u8) -> Vec<u8> {
    ethernet(
        GUEST_MAC,
        HOST_MAC,
        &[seq, b'b', b'u', b'r', b's', b't'],
        60,
    )
}

const BURST: u8 = 3;

/// The back-pressure driver: gives the receive queue its ring but no buffer, sends
/// [`guest_frame`] ('T', after the probe's 'V'), waits for a byte on COM1 (the host has sent [`BURST`] frames by
/// then), and only then posts one buffer at a time, printing '0', '1', ... for each frame
/// that arrives in order with the right length; exits with 0x10 (status 33) when all did,
/// 1 (status 3) on a wrong sequence number, 2 (status 5) on a wrong length.
fn burst_driver(slot: u32) -> Vec<u8> {
    let mut sent = guest_frame();
    sent[6..12].copy_from_slice(&GUEST_MAC);
    real_mode_guest(|a| {
        let mut wait_go = a.create_label();
        let mut bad_seq = a.create_label();
        let mut bad_len = a.create_label();
        a.cli()?;
        let mut template = vec![0u8; HDR as usize];
        template.extend_from_slice(&sent);
        emit_bytes(a, TX_BUF, 0, &template)?;
        emit_probe(a, slot, 0x1000)?;
        // Receive descriptor 0, never yet in the avail ring.
        a.mov(ax, RX_RING >> 4)?;
        a.mov(ds, ax)?;
        a.mov(dword_ptr(0), RX_BUF)?;
        a.mov(dword_ptr(4), 0u32)?;
        a.mov(dword_ptr(8), RX_BUF_LEN)?;
        a.mov(word_ptr(12), 2u32)?;
        a.xor(ax, ax)?;
        a.mov(ds, ax)?;
        emit_queue(a, 0, RX_RING)?;
        emit_queue_with_one_buffer(a, 1, TX_RING, TX_BUF, HDR + sent.len() as u32, 0)?;
        emit_driver_ok(a, &[1, 0])?;
        emit_wait_used(a, TX_RING)?;
        a.mov(al, b'T' as u32)?;
        emit_putc(a)?;
        // Wait for the host's go (COM1 data ready), and take the byte.
        a.set_label(&mut wait_go)?;
        a.pause()?;
        a.mov(dx, 0x3fdu32)?;
        a.in_(al, dx)?;
        a.test(al, 1u32)?;
        a.jz(wait_go)?;
        a.mov(dx, 0x3f8u32)?;
        a.in_(al, dx)?;
        let avail = 16 * QUEUE_SIZE;
        for seq in 0..u32::from(BURST) {
            let mut poll = a.create_label();
            // Post descriptor 0 as avail entry `seq` and notify.
            a.mov(ax, RX_RING >> 4)?;
            a.mov(ds, ax)?;
            a.mov(word_ptr(avail + 4 + 2 * seq), 0u32)?;
            a.mov(word_ptr(avail + 2), seq + 1)?;
            a.mov(dx, IO_BASE + 0x10)?;
            a.xor(ax, ax)?;
            a.out(dx, ax)?;
            a.set_label(&mut poll)?;
            a.pause()?;
            a.cmp(word_ptr(used_offset() + 2), seq + 1)?;
            a.jne(poll)?;
            a.cmp(dword_ptr(used_offset() + 4 + 8 * seq + 4), HDR + 60)?;
            a.jne(bad_len)?;
            a.mov(ax, RX_BUF >> 4)?;
            a.mov(ds, ax)?;
            a.cmp(byte_ptr(HDR + 14), seq)?;
            a.jne(bad_seq)?;
            a.mov(al, b'0' as u32 + seq)?;
            emit_putc(a)?;
        }
        a.mov(al, 0x10u32)?;
        emit_debug_exit(a)?;
        a.set_label(&mut bad_len)?;
        a.mov(al, 2u32)?;
        emit_debug_exit(a)?;
        a.set_label(&mut bad_seq)?;
        a.mov(al, 1u32)?;
        emit_debug_exit(a)
    })
}

#[test]
fn frames_wait_for_receive_buffers_and_none_is_lost() {
    let output = in_netns_or_return!(|| {
        let wire = PacketSocket::open("tap0");
        let mut command = vmkit();
        command
            .arg("-flat")
            .arg(guest_file("virtio-net-burst", &burst_driver(2)))
            .args(["-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"])
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .args(["-device", "isa-debug-exit,iobase=0x501,iosize=2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start vmkit");
        let mut stdin = child.stdin.take().unwrap();
        if wire.recv().is_some() {
            for seq in 0..BURST {
                wire.send(&burst_frame(seq));
            }
            // Give the device time to read what it can before any buffer exists (an
            // ordering aid, not a timed assertion: a device that reads and drops would
            // lose frames here).
            std::thread::sleep(Duration::from_millis(200));
            let _ = stdin.write_all(b"g");
        }
        let output = wait_child(child, Duration::from_secs(60));
        drop(stdin);
        output
    });
    let err = stderr(&output);
    assert_eq!(stdout(&output), "VT012", "stderr: {err}");
    assert_eq!(
        output.status.code(),
        Some(33),
        "guest verdict (3: wrong frame order, 5: wrong length); stderr: {err}"
    );
}
