//! Opened backends against real host objects: files, unix and loopback TCP sockets,
//! pseudo-terminals. Every wait is bounded.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vmkit_chardev::{Chardev, ChardevEvent, ChardevInput, ChardevSpec, Error, Input};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const TIMEOUT: Duration = Duration::from_secs(5);

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vmkit-chardev-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(text: &str) -> Chardev {
    Chardev::open(&ChardevSpec::parse(text).unwrap()).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Reads until something other than `WouldBlock` comes, within [`TIMEOUT`].
fn next_input(chardev: &Chardev, buf: &mut [u8]) -> Input {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match chardev.read(buf).unwrap() {
            Input::WouldBlock if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            other => return other,
        }
    }
}

/// Reads exactly `n` bytes of data from `chardev`, failing on any other event.
fn read_data(chardev: &Chardev, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < n {
        match next_input(chardev, &mut buf) {
            Input::Data(k) => got.extend_from_slice(&buf[..k]),
            other => panic!("expected data, got {other:?} after {got:?}"),
        }
    }
    got
}

fn client(path: &std::path::Path) -> UnixStream {
    let stream = UnixStream::connect(path).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

#[test]
fn file_backend_writes_bytes_exactly_and_honours_append() {
    let dir = temp_dir("file");
    let path = dir.join("out.bin");
    let all: Vec<u8> = (0..=255u8).collect();
    {
        let file = open(&format!("file,id=f,path={}", path.display()));
        assert!(!file.has_input());
        assert_eq!(file.read(&mut [0u8; 4]).unwrap(), Input::Eof);
        file.write(&all).unwrap();
        file.write(b"\r\n\x00").unwrap();
    }
    let mut expected = all.clone();
    expected.extend_from_slice(b"\r\n\x00");
    assert_eq!(std::fs::read(&path).unwrap(), expected);

    // append=on keeps what is there; append=off (the default) truncates.
    open(&format!("file,id=f,path={},append=on", path.display()))
        .write(b"more")
        .unwrap();
    expected.extend_from_slice(b"more");
    assert_eq!(std::fs::read(&path).unwrap(), expected);
    open(&format!("file,id=f,path={}", path.display()))
        .write(b"new")
        .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");

    let err = Chardev::open(
        &ChardevSpec::parse(&format!("file,id=f,path={}/no/such/dir/x", dir.display())).unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "chardev f: cannot open {}/no/such/dir/x:",
            dir.display()
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn null_drops_output_and_has_no_input() {
    let null = open("null,id=n");
    null.write(&[0u8; 100_000]).unwrap();
    assert!(!null.has_input());
    assert_eq!(null.input_fd(), None);
    assert_eq!(null.read(&mut [0u8; 8]).unwrap(), Input::Eof);
    assert_eq!(null.describe(), "null");
    assert!(null.is_connected());
}

#[test]
fn unix_server_talks_both_ways_and_takes_clients_one_at_a_time() {
    let dir = temp_dir("unix");
    let path = dir.join("s");
    let server = open(&format!(
        "socket,id=c0,path={},server=on,wait=off",
        path.display()
    ));
    assert!(path.exists(), "bound at open");
    assert!(!server.wants_wait());
    assert!(!server.is_connected());
    assert_eq!(
        server.describe(),
        format!("unix:{},server=on,wait=off", path.display())
    );
    // Output before any client is dropped, not queued.
    server.write(b"lost").unwrap();

    let mut a = client(&path);
    let mut buf = [0u8; 64];
    assert_eq!(next_input(&server, &mut buf), Input::Connected);
    assert!(server.is_connected());
    a.write_all(b"from a").unwrap();
    assert_eq!(read_data(&server, 6), b"from a");
    server.write(b"to a").unwrap();
    let mut got = [0u8; 4];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to a", "nothing from before the connection");

    // A second client waits in the backlog while the first is connected.
    let mut b = client(&path);
    b.write_all(b"from b").unwrap();
    server.write(b"still a").unwrap();
    let mut got = [0u8; 7];
    a.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still a");
    assert_eq!(server.connection_count(), 1);

    // The first leaves: disconnect, then the second is accepted and its bytes arrive.
    drop(a);
    assert_eq!(next_input(&server, &mut buf), Input::Disconnected);
    assert!(!server.is_connected());
    assert_eq!(next_input(&server, &mut buf), Input::Connected);
    assert_eq!(read_data(&server, 6), b"from b");
    server.write(b"to b").unwrap();
    let mut got = [0u8; 4];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"to b");
    assert_eq!(server.connection_count(), 2);

    // Reconnecting after a disconnect works again.
    drop(b);
    assert_eq!(next_input(&server, &mut buf), Input::Disconnected);
    let mut c = client(&path);
    assert_eq!(next_input(&server, &mut buf), Input::Connected);
    c.write_all(b"c").unwrap();
    assert_eq!(read_data(&server, 1), b"c");

    drop(server);
    assert!(!path.exists(), "the socket file is removed on drop");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wait_for_client_blocks_until_a_client_arrives() {
    let dir = temp_dir("wait");
    let path = dir.join("s");
    let server = open(&format!("socket,id=w,path={},server", path.display()));
    assert!(
        server.wants_wait(),
        "server defaults to wait=on, as in QEMU"
    );

    let err = server
        .wait_for_client(Some(Duration::from_millis(50)))
        .unwrap_err();
    assert!(matches!(err, Error::WaitTimeout { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "chardev w: no client connected to unix:{} within 50 ms",
            path.display()
        )
    );

    let connect_path = path.clone();
    let started = Instant::now();
    let connector = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        let mut stream = UnixStream::connect(&connect_path).unwrap();
        stream.write_all(b"hi").unwrap();
        stream
    });
    server.wait_for_client(Some(TIMEOUT)).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "returned before the client connected"
    );
    assert!(server.is_connected());
    assert_eq!(read_data(&server, 2), b"hi");
    // Already connected: returns at once.
    server.wait_for_client(Some(Duration::ZERO)).unwrap();
    drop(connector.join().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unix_server_replaces_a_stale_socket_but_not_a_file() {
    let dir = temp_dir("stale");
    let path = dir.join("s");
    let first = open(&format!(
        "socket,id=a,path={},server,nowait",
        path.display()
    ));
    // Leak the file: pretend a previous VMM died without cleaning up.
    std::mem::forget(first);
    assert!(path.exists());
    let second = open(&format!(
        "socket,id=b,path={},server,nowait",
        path.display()
    ));
    let _c = client(&path);
    let mut buf = [0u8; 8];
    assert_eq!(next_input(&second, &mut buf), Input::Connected);

    let plain = dir.join("plain");
    std::fs::write(&plain, b"keep me").unwrap();
    let err = Chardev::open(
        &ChardevSpec::parse(&format!(
            "socket,id=p,path={},server,nowait",
            plain.display()
        ))
        .unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "chardev p: cannot listen on unix:{}:",
            plain.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
    drop(second);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn client_sockets_connect_at_open_and_name_the_address_on_failure() {
    let dir = temp_dir("client");
    let path = dir.join("nobody");
    let err = Chardev::open(
        &ChardevSpec::parse(&format!("socket,id=c1,path={}", path.display())).unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "chardev c1: cannot connect to unix:{}:",
            path.display()
        )),
        "{err}"
    );

    // A unix client: bytes both ways, then the peer leaves for good.
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let chardev = open(&format!("socket,id=c1,path={}", path.display()));
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    assert!(chardev.is_connected());
    assert_eq!(chardev.connection_count(), 1);
    chardev.write(b"ping").unwrap();
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    peer.write_all(b"pong").unwrap();
    assert_eq!(read_data(&chardev, 4), b"pong");
    drop(peer);
    let mut buf = [0u8; 8];
    assert_eq!(next_input(&chardev, &mut buf), Input::Disconnected);
    assert_eq!(chardev.read(&mut buf).unwrap(), Input::Eof);
    chardev.write(b"dropped").unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tcp_loopback_server_and_client() {
    let server = open("socket,id=t,host=127.0.0.1,port=0,server=on,wait=off");
    let addr = server.tcp_addr().unwrap();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0, "an ephemeral port was chosen");
    assert_eq!(
        server.describe(),
        format!("tcp:127.0.0.1:{},server=on,wait=off", addr.port())
    );
    let mut peer = TcpStream::connect(addr).unwrap();
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(next_input(&server, &mut buf), Input::Connected);
    peer.write_all(b"tcp in").unwrap();
    assert_eq!(read_data(&server, 6), b"tcp in");
    server.write(b"tcp out").unwrap();
    let mut got = [0u8; 7];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"tcp out");
    drop(peer);
    assert_eq!(next_input(&server, &mut buf), Input::Disconnected);
    let _again = TcpStream::connect(addr).unwrap();
    assert_eq!(next_input(&server, &mut buf), Input::Connected);

    // Client mode against a loopback listener, via the -serial short form.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let vmkit_chardev::LegacyBackend::Chardev(spec) =
        vmkit_chardev::parse_legacy_backend(&format!("tcp:127.0.0.1:{port}")).unwrap()
    else {
        panic!("not a chardev");
    };
    let chardev = Chardev::open(&spec.with_id("serial0")).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(TIMEOUT)).unwrap();
    chardev.write(b"x").unwrap();
    let mut got = [0u8; 1];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"x");

    // Nobody listening: the error names the address.
    drop(listener);
    let err = Chardev::open(
        &ChardevSpec::parse(&format!("socket,id=t2,host=127.0.0.1,port={port}")).unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "chardev t2: cannot connect to tcp:127.0.0.1:{port}:"
        )),
        "{err}"
    );
}

#[test]
fn a_client_that_never_reads_does_not_stall_output() {
    let dir = temp_dir("stall");
    let path = dir.join("s");
    let server = open(&format!(
        "socket,id=s,path={},server,nowait",
        path.display()
    ));
    let _lazy = client(&path);
    let mut buf = [0u8; 8];
    assert_eq!(next_input(&server, &mut buf), Input::Connected);
    let started = Instant::now();
    let chunk = [b'x'; 4096];
    for _ in 0..2048 {
        server.write(&chunk).unwrap(); // 8 MiB, far beyond the socket buffer
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "writes waited {elapsed:?}: at most one patience period should be spent"
    );
    assert!(server.is_connected(), "a slow reader is not a disconnect");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pty_reads_and_writes_through_the_slave() {
    let pty = open("pty,id=p0");
    let path = pty.pty_path().unwrap().to_path_buf();
    assert!(path.starts_with("/dev/pts"), "{}", path.display());
    assert_eq!(pty.describe(), format!("pty:{}", path.display()));
    assert!(pty.has_input());
    let mut slave = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();

    // Raw mode: bytes pass unchanged both ways (no echo, no CR/LF mapping).
    slave.write_all(b"typed\r\n\x03").unwrap();
    assert_eq!(read_data(&pty, 8), b"typed\r\n\x03");
    pty.write(b"guest\n").unwrap();
    let mut got = [0u8; 6];
    slave.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"guest\n");
    let mut buf = [0u8; 8];
    assert_eq!(
        pty.read(&mut buf).unwrap(),
        Input::WouldBlock,
        "no echo came back"
    );

    // The user closing the slave is not the end of input.
    drop(slave);
    assert_eq!(pty.read(&mut buf).unwrap(), Input::WouldBlock);
}

type Manager = EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>>;

/// Runs the loop until `done` or [`TIMEOUT`].
fn run_until(manager: &mut Manager, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        manager.run_with_timeout(50).unwrap();
    }
}

#[test]
fn main_loop_input_holds_back_until_room_and_reports_connections() {
    let dir = temp_dir("loop");
    let path = dir.join("s");
    let chardev = Arc::new(open(&format!(
        "socket,id=s,path={},server,nowait",
        path.display()
    )));
    let fifo = Arc::new(Mutex::new(Vec::<u8>::new()));
    let room_limit = Arc::new(Mutex::new(3usize));
    let room = EventFd::new(EFD_NONBLOCK).unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let (fifo, room_limit) = (fifo.clone(), room_limit.clone());
        move |bytes: &[u8]| {
            let mut fifo = fifo.lock().unwrap();
            let mut limit = room_limit.lock().unwrap();
            let n = bytes.len().min(*limit);
            *limit -= n;
            fifo.extend_from_slice(&bytes[..n]);
            n
        }
    };
    let input = Arc::new(Mutex::new(
        ChardevInput::new(chardev.clone(), sink, room.try_clone().unwrap()).with_observer({
            let events = events.clone();
            move |e| events.lock().unwrap().push(e)
        }),
    ));
    let mut manager: Manager = EventManager::new().unwrap();
    manager.add_subscriber(input.clone());

    let mut a = client(&path);
    run_until(&mut manager, || !events.lock().unwrap().is_empty());
    assert_eq!(*events.lock().unwrap(), [ChardevEvent::Connected]);
    a.write_all(b"0123456789").unwrap();
    run_until(&mut manager, || fifo.lock().unwrap().len() == 3);
    assert_eq!(input.lock().unwrap().backlog_len(), 7);
    assert!(!input.lock().unwrap().wants_input());
    // More input and a disconnect wait in the socket while the guest is behind.
    a.write_all(b"abc").unwrap();
    drop(a);
    manager.run_with_timeout(100).unwrap();
    assert_eq!(
        fifo.lock().unwrap().len(),
        3,
        "the socket is not read meanwhile"
    );
    assert_eq!(events.lock().unwrap().len(), 1);

    // Room comes back in steps; every byte arrives, in order.
    for _ in 0..10 {
        *room_limit.lock().unwrap() += 2;
        room.write(1).unwrap();
        manager.run_with_timeout(100).unwrap();
    }
    run_until(&mut manager, || {
        events.lock().unwrap().contains(&ChardevEvent::Disconnected)
    });
    assert_eq!(*fifo.lock().unwrap(), b"0123456789abc");
    assert_eq!(
        *events.lock().unwrap(),
        [ChardevEvent::Connected, ChardevEvent::Disconnected]
    );

    // The next client is served by the same registration.
    *room_limit.lock().unwrap() = 100;
    let mut b = client(&path);
    b.write_all(b"B").unwrap();
    run_until(&mut manager, || fifo.lock().unwrap().ends_with(b"B"));
    assert!(!input.lock().unwrap().is_eof());
    std::fs::remove_dir_all(&dir).unwrap();
}
