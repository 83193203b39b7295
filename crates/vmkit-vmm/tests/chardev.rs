//! Character devices end to end: COM1 on a unix-socket chardev (both directions, nothing
//! lost through the UART's FIFO), and isa-debugcon on a file chardev.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// A guest that echoes every byte COM1 receives (polling LSR.DR).
fn echo_guest() -> Vec<u8> {
    real_mode_guest(|a| {
        let mut poll = a.create_label();
        a.set_label(&mut poll)?;
        a.mov(dx, 0x3fdu32)?;
        a.in_(al, dx)?;
        a.test(al, 1)?;
        a.jz(poll)?;
        a.mov(dx, 0x3f8u32)?;
        a.in_(al, dx)?;
        emit_putc(a)?;
        a.jmp(poll)
    })
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn com1_on_a_unix_socket_chardev_echoes_every_byte() {
    require_kvm!();
    let socket = std::env::temp_dir().join(format!("vmkit-chardev-{}.sock", std::process::id()));
    let _child = Child(
        vmkit()
            .arg("-flat")
            .arg(guest_file("chardev-echo", &echo_guest()))
            .arg("-chardev")
            .arg(format!(
                "socket,id=c0,path={},server=on,wait=off",
                socket.display()
            ))
            .args(["-serial", "chardev:c0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vmkit"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stream = loop {
        match UnixStream::connect(&socket) {
            Ok(stream) => break stream,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot connect to {}: {e}", socket.display()),
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // 4 KiB of every byte value, far more than the 16-byte FIFO holds at once.
    let sent: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let mut writer = stream.try_clone().unwrap();
    let to_send = sent.clone();
    let feeder = std::thread::spawn(move || writer.write_all(&to_send));
    let mut echoed = vec![0u8; sent.len()];
    stream.read_exact(&mut echoed).expect("the whole echo");
    feeder.join().unwrap().unwrap();
    assert!(echoed == sent, "the echo differs from what was sent");
}

#[test]
fn debugcon_option_writes_port_0xe9_to_its_backend() {
    require_kvm!();
    let log = guest_file("debugcon-log", b"");
    let guest = real_mode_guest(|a| {
        for byte in *b"dbg\n" {
            a.mov(al, u32::from(byte))?;
            a.out(0xe9u32, al)?;
        }
        a.in_(al, 0xe9u32)?; // readback: 0xe9
        a.mov(dx, 0x501u32)?;
        a.out(dx, al)?;
        let mut halt = a.create_label();
        a.set_label(&mut halt)?;
        a.hlt()?;
        a.jmp(halt)
    });
    let mut command = vmkit();
    command
        .arg("-flat")
        .arg(guest_file("debugcon", &guest))
        .arg("-debugcon")
        .arg(format!("file:{}", log.display()))
        .args([
            "-device",
            "isa-debug-exit,iobase=0x501,iosize=2",
            "-serial",
            "none",
        ]);
    let (output, _) = run(command, Duration::from_secs(20));
    assert_eq!(
        output.status.code(),
        Some((0xe9 << 1 | 1) & 0xff),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "dbg\n");
}
