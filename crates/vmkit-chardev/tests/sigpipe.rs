//! A peer that leaves while the guest writes must not kill the VMM, even with `SIGPIPE`
//! at its default disposition (its own test binary, so no other test sees the change).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use vmkit_chardev::{Chardev, ChardevSpec, Input};

#[test]
fn writing_to_a_vanished_client_drops_output_without_sigpipe() {
    // SAFETY: restoring the default disposition of one signal; no handler is involved.
    #[allow(unsafe_code)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let dir = std::env::temp_dir().join(format!("vmkit-chardev-{}-sigpipe", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s");
    let server = Chardev::open(
        &ChardevSpec::parse(&format!(
            "socket,id=s,path={},server,nowait",
            path.display()
        ))
        .unwrap(),
    )
    .unwrap();
    let mut peer = UnixStream::connect(&path).unwrap();
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.read(&mut buf).unwrap() != Input::Connected {
        assert!(Instant::now() < deadline, "no connection");
        std::thread::sleep(Duration::from_millis(2));
    }
    server.write(b"one").unwrap();
    let mut got = [0u8; 3];
    peer.read_exact(&mut got).unwrap();
    drop(peer);
    // The first write after the close may still succeed (the peer answers with a reset);
    // later ones hit EPIPE. None may raise SIGPIPE.
    for _ in 0..10 {
        server.write(b"into the void").unwrap();
    }
    assert!(
        !server.is_connected(),
        "a failed write marks the client gone"
    );
    assert_eq!(server.read(&mut buf).unwrap(), Input::Disconnected);
    std::fs::remove_dir_all(&dir).unwrap();
}
