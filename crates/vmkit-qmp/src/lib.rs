//! A QMP-compatible control socket for Rust VMMs.
//!
//! QEMU is driven by the QEMU Machine Protocol: JSON messages over a socket, a greeting,
//! capabilities negotiation, `{"execute": ...}` commands answered by `{"return": ...}`
//! or `{"error": {"class", "desc"}}`, and asynchronous events (`STOP`, `RESET`...).
//! This crate speaks that protocol so existing QMP clients (`qmp-shell`, the
//! `qemu.qmp` Python package, `socat` scripts) can drive a vmkit VMM:
//!
//! - [`JsonSplitter`] cuts the input stream into messages (objects may span lines,
//!   several may share one), with a per-message cap (1 MiB by default) and
//!   resynchronisation after oversized input, so no client can make the VMM allocate
//!   without bound.
//! - [`QmpSession`] is one client's protocol state and the command layer: negotiation
//!   rules, argument checking, QEMU's error classes and texts, and the events that follow
//!   state changes. It runs commands against a [`QmpBackend`], the trait the VMM
//!   implements (run state, stop / cont / reset / quit, vCPU list, exit statistics and the
//!   `vmkit-object` tree for `qom-*`). It does no I/O, so other transports can use it.
//! - [`QmpServer`] is the Unix-socket server: an owner-only (0600) socket, any number of
//!   clients each with its own negotiation state, non-blocking reads and per-client output
//!   buffers with a cap (a client that stops reading is dropped, the main loop never
//!   blocks), event fan-out, and QEMU's `wait=on` ([`QmpServer::wait_for_client`]). It
//!   is an `event-manager` subscriber for the VMM's main loop; [`QmpEventSender`] lets
//!   other threads emit events without taking the server's lock.
//!
//! Commands: `qmp_capabilities`, `query-version`, `query-commands`, `query-status`,
//! `stop`, `cont`, `system_reset`, `system_powerdown`, `quit`, `query-cpus-fast`,
//! `qom-list-types`, `qom-list`, `qom-get`, `qom-set`, `set_link`, and vmkit's own
//! `query-exits`.
//! Out-of-band execution is not offered (as in QEMU without a monitor I/O thread), so
//! `exec-oob` gets QEMU's "QMP input member 'exec-oob' is unexpected".
//!
//! # Example
//!
//! A VMM backend, the server in an `EventManager`, and a client on the same thread:
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::os::unix::net::UnixStream;
//! use std::sync::{Arc, Mutex};
//!
//! use event_manager::{EventManager, SubscriberOps};
//! use serde_json::{json, Value};
//! use vmkit_qmp::{
//!     CpuInfoFast, QmpBackend, QmpError, QmpEvent, QmpServer, RunState, ShutdownCause,
//!     StatusInfo,
//! };
//!
//! /// The VMM side: here just a run state.
//! struct Vm { state: RunState }
//!
//! impl QmpBackend for Vm {
//!     fn query_status(&mut self) -> StatusInfo { StatusInfo::new(self.state) }
//!     fn stop(&mut self) -> Result<(), QmpError> { self.state = RunState::Paused; Ok(()) }
//!     fn cont(&mut self) -> Result<(), QmpError> { self.state = RunState::Running; Ok(()) }
//!     fn system_reset(&mut self) -> Result<(), QmpError> { Ok(()) }
//!     fn quit(&mut self) {}
//!     fn query_cpus_fast(&mut self) -> Vec<CpuInfoFast> { Vec::new() }
//! }
//!
//! let dir = vmm_sys_util::tempdir::TempDir::new_with_prefix("/tmp/vmkit-qmp-doc")?;
//! let path = dir.as_path().join("qmp.sock");
//! let vm = Vm { state: RunState::Running };
//! let server = Arc::new(Mutex::new(QmpServer::bind(&path, Box::new(vm))?));
//! let mut main_loop = EventManager::<Arc<Mutex<QmpServer>>>::new()?;
//! main_loop.add_subscriber(server.clone());
//!
//! // A few turns of the VMM's main loop.
//! let spin = |main_loop: &mut EventManager<Arc<Mutex<QmpServer>>>| {
//!     for _ in 0..3 {
//!         main_loop.run_with_timeout(20).expect("epoll");
//!     }
//! };
//! let mut client = UnixStream::connect(&path)?;
//! let mut replies = BufReader::new(client.try_clone()?);
//! let mut next = || -> Value {
//!     let mut line = String::new();
//!     replies.read_line(&mut line).expect("read");
//!     serde_json::from_str(&line).expect("one JSON message per line")
//! };
//!
//! spin(&mut main_loop);
//! assert_eq!(next()["QMP"]["version"]["package"], "vmkit 0.1.0");
//!
//! client.write_all(b"{\"execute\": \"qmp_capabilities\"}\n{\"execute\": \"stop\", \"id\": 7}\n")?;
//! spin(&mut main_loop);
//! assert_eq!(next(), json!({"return": {}}));
//! assert_eq!(next()["event"], "STOP"); // QEMU sends STOP before stop's reply
//! assert_eq!(next(), json!({"return": {}, "id": 7}));
//!
//! // The VMM saw the guest reset itself.
//! server.lock().unwrap().broadcast_event(&QmpEvent::Reset(ShutdownCause::GuestReset));
//! assert_eq!(next()["data"], json!({"guest": true, "reason": "guest-reset"}));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod backend;
mod error;
mod protocol;
mod server;
mod session;
mod splitter;

pub use backend::QmpBackend;
pub use error::{Error, Result};
pub use protocol::{
    greeting_json, version_json, CpuInfoFast, CpuProps, ErrorClass, MigrationParameters, QmpError,
    QmpEvent, RunState, ShutdownCause, StatusInfo, PACKAGE, QEMU_VERSION,
};
pub use server::{QmpConfig, QmpEventSender, QmpServer, DEFAULT_MAX_OUTPUT, MAX_SOCKET_PATH};
pub use session::{command_names, encode_message, error_response, Output, QmpSession};
pub use splitter::{Frame, JsonSplitter, DEFAULT_MAX_MESSAGE};
