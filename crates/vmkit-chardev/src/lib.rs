//! QEMU-style character-device backends for a vmkit VMM: what `-chardev`, `-serial` and
//! `-debugcon` connect a guest's serial port or debug console to.
//!
//! | piece | what it does |
//! |---|---|
//! | [`ChardevSpec::parse`] | `-chardev null / stdio / file / socket / pty` option text |
//! | [`parse_legacy_backend`] | `-serial` / `-debugcon` short forms: `stdio`, `file:P`, `unix:P,server,nowait`, `tcp:H:P`, `pty`, `chardev:ID`, `none` |
//! | [`ChardevSet`] | the machine's chardevs by id: duplicates refused, `chardev:ID` resolved |
//! | [`Chardev`] | an opened backend: [`write`](Chardev::write) for guest output, [`input_fd`](Chardev::input_fd) + [`read`](Chardev::read) for host input, connection events, [`wait_for_client`](Chardev::wait_for_client) |
//! | [`ChardevInput`] | an event-manager subscriber feeding a chardev's input to a UART without losing bytes |
//!
//! **Output** never blocks a vCPU for long: a socket without a client drops output (as
//! QEMU does while disconnected), and a full non-blocking fd is retried for at most
//! [`WRITE_PATIENCE`] before the rest is dropped. Plug a chardev into a UART with
//! [`Chardev::writer`] (a [`std::io::Write`]).
//!
//! **Input** is read in the main loop. [`ChardevInput`] polls the chardev's fd only while
//! the device has taken everything read so far; what the UART's FIFO refuses waits in a
//! backlog, the fd leaves the loop, and the device's rx-room line (an eventfd written on
//! rising edges) brings it back — the flow control vmkit-vmm's stdin console uses. A
//! socket server's input fd is stable across clients (an internal epoll), so a new client
//! needs no re-registration; it accepts one client at a time and takes the next only
//! after the current one disconnects, like QEMU.
//!
//! **stdio**: this crate does no terminal setup. Raw mode, restoring the terminal, and
//! the Ctrl-A escapes stay with the caller (vmkit-vmm's `console::StdinConsole`), which
//! should honour [`Chardev::stdio_signal`] (`signal=off`: Ctrl-C goes to the guest).
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
//! use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
//! use vmkit_chardev::{parse_legacy_backend, Chardev, ChardevInput, ChardevSet, LegacyBackend};
//!
//! let dir = std::env::temp_dir().join(format!("vmkit-chardev-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let sock = dir.join("serial.sock");
//!
//! // -chardev socket,id=ser0,path=...,server=on,wait=off  -serial chardev:ser0
//! // -debugcon file:debug.log
//! let mut set = ChardevSet::new();
//! set.add_text(&format!("socket,id=ser0,path={},server=on,wait=off", sock.display())).unwrap();
//! let serial = set.resolve("-serial", parse_legacy_backend("chardev:ser0").unwrap(), "serial0").unwrap();
//! let debugcon = vmkit_chardev::parse_legacy_backend_for(
//!     "-debugcon", &format!("file:{}", dir.join("debug.log").display())).unwrap();
//! let debugcon = set.resolve("-debugcon", debugcon, "debugcon").unwrap();
//! assert_eq!((serial.as_deref(), debugcon.as_deref()), (Some("ser0"), Some("debugcon")));
//!
//! let ser0 = Chardev::open_shared(set.get("ser0").unwrap()).unwrap();
//! let dbg = Chardev::open_shared(set.get("debugcon").unwrap()).unwrap();
//!
//! // A device's output goes to its chardev through `writer()` (any `std::io::Write` sink:
//! // vmkit's isa-debugcon and UART models take one).
//! let mut out = dbg.writer();
//! out.write_all(b"boot\n").unwrap();
//! assert_eq!(std::fs::read(dir.join("debug.log")).unwrap(), b"boot\n");
//!
//! // Serial input: a UART FIFO with room for 4 bytes, and its rx-room eventfd.
//! let fifo = Arc::new(Mutex::new(Vec::new()));
//! let room = EventFd::new(EFD_NONBLOCK).unwrap();
//! let sink = { let fifo = fifo.clone(); move |b: &[u8]| {
//!     let mut f = fifo.lock().unwrap(); let n = b.len().min(4 - f.len()); f.extend_from_slice(&b[..n]); n } };
//! let input = Arc::new(Mutex::new(ChardevInput::new(ser0.clone(), sink, room.try_clone().unwrap())));
//! let mut manager: EventManager<Arc<Mutex<dyn MutEventSubscriber + Send>>> = EventManager::new().unwrap();
//! manager.add_subscriber(input.clone());
//!
//! let mut client = UnixStream::connect(&sock).unwrap();
//! client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
//! while ser0.connection_count() == 0 { manager.run_with_timeout(1000).unwrap(); }
//! client.write_all(b"hello").unwrap();
//! while fifo.lock().unwrap().len() < 4 { manager.run_with_timeout(1000).unwrap(); }
//! assert_eq!(input.lock().unwrap().backlog_len(), 1, "the 'o' waits; the socket is not read meanwhile");
//! fifo.lock().unwrap().clear();  // the guest drained the FIFO ...
//! room.write(1).unwrap();        // ... and the rx-room line rose
//! while fifo.lock().unwrap().is_empty() { manager.run_with_timeout(1000).unwrap(); }
//! assert_eq!(*fifo.lock().unwrap(), b"o");
//!
//! // Serial output goes to the connected client.
//! ser0.writer().write_all(b"login: ").unwrap();
//! let mut got = [0u8; 7];
//! client.read_exact(&mut got).unwrap();
//! assert_eq!(&got, b"login: ");
//! drop((manager, input, ser0));
//! assert!(!sock.exists(), "the socket file we created is removed");
//! std::fs::remove_dir_all(&dir).unwrap();
//! ```
#![deny(unsafe_code)]

mod backend;
mod input;
mod pty;
mod spec;
mod sys;

pub use backend::{Chardev, ChardevEvent, ChardevWriter, Input, WRITE_PATIENCE};
pub use input::{ChardevInput, ChardevSink};
pub use spec::{
    parse_legacy_backend, parse_legacy_backend_for, Backend, ChardevSet, ChardevSpec,
    LegacyBackend, SocketAddress, SocketSpec, KNOWN_BACKENDS, KNOWN_LEGACY_FORMS,
};

/// Errors from parsing chardev options and opening backends.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend (or short form) is not one this crate knows.
    #[error("{option}: unknown backend '{backend}' (known: {known})")]
    UnknownBackend {
        /// The command-line option (`-chardev`, `-serial`, ...).
        option: String,
        /// What was given.
        backend: String,
        /// The known ones.
        known: &'static str,
    },
    /// An option the backend does not have.
    #[error("{option} {text}: unknown option '{key}' (known: {known})")]
    UnknownOption {
        /// The command-line option.
        option: String,
        /// The whole option text.
        text: String,
        /// The unknown key.
        key: String,
        /// The backend's options.
        known: &'static str,
    },
    /// The same option twice.
    #[error("{option} {text}: option {key}= given twice")]
    DuplicateOption {
        /// The command-line option.
        option: String,
        /// The whole option text.
        text: String,
        /// The repeated key.
        key: String,
    },
    /// An empty element between commas.
    #[error("{option} {text}: an empty option (stray comma?)")]
    EmptyOption {
        /// The command-line option.
        option: String,
        /// The whole option text.
        text: String,
    },
    /// An option value that does not parse.
    #[error("{option} {text}: bad value '{value}' for {key}= (expected {expected})")]
    BadValue {
        /// The command-line option.
        option: String,
        /// The whole option text.
        text: String,
        /// The key.
        key: &'static str,
        /// The bad value.
        value: String,
        /// What would do.
        expected: &'static str,
    },
    /// A required option is missing.
    #[error("{option} {text}: missing {what}")]
    Missing {
        /// The command-line option.
        option: String,
        /// The whole option text.
        text: String,
        /// What is missing (`id=`, `path=`, `path= or port=`).
        what: &'static str,
    },
    /// Options that do not go together.
    #[error("{option} {text}: {what}")]
    Conflict {
        /// The command-line option.
        option: String,
        /// The whole option text.
        text: String,
        /// The conflict.
        what: &'static str,
    },
    /// A second chardev with an id already taken.
    #[error("-chardev id={id}: duplicate chardev id")]
    DuplicateId {
        /// The id.
        id: String,
    },
    /// `chardev:ID` naming no chardev.
    #[error("{option} chardev:{id}: no -chardev with id={id}")]
    UnknownId {
        /// The command-line option.
        option: String,
        /// The id.
        id: String,
    },
    /// Opening a backend failed.
    #[error("chardev {id}: cannot {what}: {source}")]
    Open {
        /// The chardev id.
        id: String,
        /// What failed, naming the file or address (`connect to unix:/tmp/s`).
        what: String,
        /// The host error.
        #[source]
        source: std::io::Error,
    },
    /// [`Chardev::wait_for_client`] timed out.
    #[error("chardev {id}: no client connected to {address} within {timeout_ms} ms")]
    WaitTimeout {
        /// The chardev id.
        id: String,
        /// The listening address.
        address: String,
        /// The timeout.
        timeout_ms: u128,
    },
    /// Another host call failed.
    #[error("chardev {id}: {what}: {source}")]
    Host {
        /// The chardev id.
        id: String,
        /// What was being done.
        what: &'static str,
        /// The host error.
        #[source]
        source: std::io::Error,
    },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
