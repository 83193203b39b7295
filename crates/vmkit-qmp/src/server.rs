//! The Unix-socket server: accepts clients, runs their sessions, fans events out, and
//! plugs into an event-manager main loop.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempdir::TempDir;

use crate::backend::QmpBackend;
use crate::error::{Error, Result};
use crate::protocol::QmpEvent;
use crate::session::{encode_message, Output, QmpSession};
use crate::splitter::DEFAULT_MAX_MESSAGE;

/// The default cap on one client's unsent output: 4 MiB. A client that lets more pile
/// up (it stopped reading) is disconnected rather than slowing the main loop.
pub const DEFAULT_MAX_OUTPUT: usize = 4 << 20;

/// How much one client may read per readiness event before others get a turn.
const READ_CHUNK: usize = 64 << 10;
const READS_PER_EVENT: usize = 16;
/// Connections accepted per readiness event of the listener.
const ACCEPTS_PER_EVENT: usize = 64;
/// How long accepting stays paused after the process ran out of file descriptors, unless a
/// client closes first.
const ACCEPT_RETRY: Duration = Duration::from_secs(1);

/// Limits of a [`QmpServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QmpConfig {
    /// Largest accepted message; longer ones get QEMU's `JSON token size limit
    /// exceeded` error and are skipped. Default [`DEFAULT_MAX_MESSAGE`] (1 MiB).
    pub max_message_bytes: usize,
    /// Largest unsent output per client before it is disconnected. Default
    /// [`DEFAULT_MAX_OUTPUT`] (4 MiB).
    pub max_output_bytes: usize,
}

impl Default for QmpConfig {
    fn default() -> Self {
        QmpConfig {
            max_message_bytes: DEFAULT_MAX_MESSAGE,
            max_output_bytes: DEFAULT_MAX_OUTPUT,
        }
    }
}

struct Client {
    stream: UnixStream,
    session: QmpSession,
    out: Vec<u8>,
    /// The peer sent EOF: only unsent output remains to be written.
    read_closed: bool,
    /// Broken or over its output cap: to be dropped.
    dead: bool,
    /// What the client's fd is registered for in the event loop, if it is.
    registered: Option<EventSet>,
}

impl Client {
    fn interest(&self) -> EventSet {
        let out = if self.out.is_empty() {
            EventSet::empty()
        } else {
            EventSet::OUT
        };
        if self.read_closed {
            out
        } else {
            EventSet::IN | EventSet::READ_HANG_UP | out
        }
    }

    fn finished(&self) -> bool {
        self.dead || (self.read_closed && self.out.is_empty())
    }

    fn queue(&mut self, bytes: &[u8], cap: usize) {
        if self.dead {
            return;
        }
        if self.out.len().saturating_add(bytes.len()) > cap {
            self.dead = true;
            self.out = Vec::new();
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) {
        while !self.dead && !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => self.dead = true,
                Ok(written) => {
                    self.out.drain(..written.min(self.out.len()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // EPIPE / ECONNRESET: the peer is gone.
                Err(_) => self.dead = true,
            }
        }
    }
}

/// Delivers events to a [`QmpServer`] from any thread (a vCPU thread that saw the guest
/// reset, a signal handler thread) without locking the server: the event is queued and
/// the main loop is woken through an eventfd.
#[derive(Debug, Clone)]
pub struct QmpEventSender {
    queue: Sender<QmpEvent>,
    wake: Arc<EventFd>,
}

impl QmpEventSender {
    /// Queues `event` for every client in command mode.
    pub fn send(&self, event: QmpEvent) -> Result<()> {
        self.queue.send(event).map_err(|_| Error::ServerGone)?;
        self.wake.write(1).map_err(|source| Error::Io {
            operation: "waking the main loop",
            source,
        })
    }
}

/// A QMP server on a Unix socket; see the [crate docs](crate) for an example.
///
/// It is an event-manager [`MutEventSubscriber`]: add it (usually as
/// `Arc<Mutex<QmpServer>>` so the VMM keeps a handle) to the main loop's
/// `EventManager`; it registers its listening socket, an internal wake-up eventfd and
/// one fd per client, all non-blocking. Commands run on the main-loop thread, inside
/// `EventManager::run`.
///
/// Writes to a vanished client fail with `EPIPE`, which needs `SIGPIPE` ignored, as the
/// Rust runtime arranges for every Rust `main`; a VMM that restores the default
/// `SIGPIPE` disposition would be killed by a client that disconnects mid-reply.
pub struct QmpServer {
    path: PathBuf,
    /// Device and inode of the socket file, so drop removes only our own file.
    socket_id: (u64, u64),
    listener: UnixListener,
    wake: Arc<EventFd>,
    events_in: Sender<QmpEvent>,
    events_out: Receiver<QmpEvent>,
    backend: Box<dyn QmpBackend>,
    config: QmpConfig,
    clients: BTreeMap<RawFd, Client>,
    scratch: Vec<u8>,
    listener_registered: bool,
    /// Since when accepting is paused because the process is out of file descriptors: the
    /// listener stays readable, so watching it would spin the main loop.
    accept_paused: Option<Instant>,
    /// Whether the listener is watched for new connections (not while paused).
    listener_watched: bool,
    quit: bool,
}

impl std::fmt::Debug for QmpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QmpServer")
            .field("path", &self.path)
            .field("clients", &self.clients.len())
            .field("config", &self.config)
            .field("quit", &self.quit)
            .finish_non_exhaustive()
    }
}

impl QmpServer {
    /// [`bind_with`](Self::bind_with) and the default limits.
    pub fn bind(path: impl AsRef<Path>, backend: Box<dyn QmpBackend>) -> Result<Self> {
        Self::bind_with(path, backend, QmpConfig::default())
    }

    /// Creates the listening socket at `path`, readable and writable by the owner only
    /// (mode 0600), and a server that runs commands against `backend`.
    ///
    /// A stale socket file at `path` is replaced; a live one (something accepts
    /// connections) or a non-socket file is an error. The socket is created in a private
    /// 0700 directory next to `path`, restricted, then renamed into place, so it is never
    /// reachable with wider permissions (and the process umask is not touched, which
    /// would race with other threads). The file is removed when the server is dropped.
    pub fn bind_with(
        path: impl AsRef<Path>,
        backend: Box<dyn QmpBackend>,
        config: QmpConfig,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let (listener, socket_id) = create_socket(&path)?;
        let wake = EventFd::new(EFD_NONBLOCK).map_err(|source| Error::Io {
            operation: "creating the wake-up eventfd",
            source,
        })?;
        let (events_in, events_out) = channel();
        Ok(QmpServer {
            path,
            socket_id,
            listener,
            wake: Arc::new(wake),
            events_in,
            events_out,
            backend,
            config,
            clients: BTreeMap::new(),
            scratch: vec![0; READ_CHUNK],
            listener_registered: false,
            accept_paused: None,
            listener_watched: true,
            quit: false,
        })
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// The limits in force.
    pub fn config(&self) -> QmpConfig {
        self.config
    }

    /// Connected clients (negotiating or in command mode).
    pub fn client_count(&self) -> usize {
        self.clients.values().filter(|c| !c.dead).count()
    }

    /// Clients in command mode (those that receive events).
    pub fn negotiated_client_count(&self) -> usize {
        self.clients
            .values()
            .filter(|c| !c.dead && c.session.is_negotiated())
            .count()
    }

    /// Whether a client executed `quit` (the backend's `quit` has been called).
    pub fn quit_requested(&self) -> bool {
        self.quit
    }

    /// The backend.
    pub fn backend(&self) -> &dyn QmpBackend {
        self.backend.as_ref()
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut dyn QmpBackend {
        self.backend.as_mut()
    }

    /// A handle to send events from other threads.
    pub fn event_sender(&self) -> QmpEventSender {
        QmpEventSender {
            queue: self.events_in.clone(),
            wake: Arc::clone(&self.wake),
        }
    }

    /// Sends `event` to every client in command mode (clients still negotiating do not
    /// get events, as in QEMU). What a socket does not take at once is sent when it
    /// becomes writable; callable from inside or outside the event loop.
    pub fn broadcast_event(&mut self, event: &QmpEvent) {
        self.queue_event(event);
        self.flush_clients();
        self.kick();
    }

    /// QEMU's `wait=on`: blocks until a client connects (or `timeout` passes; `None`
    /// waits forever), greets it, and returns whether a client is connected. Returns at
    /// once if one already is. The VMM keeps the vCPUs in `prelaunch` until this returns
    /// `true`.
    pub fn wait_for_client(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let io_err = |operation| move |source| Error::Io { operation, source };
        let deadline = timeout.map(|t| Instant::now().checked_add(t));
        let epoll = Epoll::new().map_err(io_err("creating an epoll instance"))?;
        epoll
            .ctl(
                ControlOperation::Add,
                self.listener.as_raw_fd(),
                EpollEvent::new(EventSet::IN, 0),
            )
            .map_err(io_err("watching the listening socket"))?;
        let mut ready = [EpollEvent::default(); 1];
        loop {
            self.accept_pending();
            if self.accept_paused.take().is_some() {
                // Out of descriptors: the readable listener would wake epoll at once.
                std::thread::sleep(Duration::from_millis(100));
            }
            if self.client_count() > 0 {
                self.flush_clients();
                // Registered with the event loop on its next turn.
                self.kick();
                return Ok(true);
            }
            let wait_ms = match deadline {
                None | Some(None) => -1,
                Some(Some(deadline)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX)
                }
            };
            match epoll.wait(wait_ms, &mut ready) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(Error::Io {
                        operation: "waiting for a client",
                        source,
                    })
                }
            }
        }
    }

    /// Tries for up to `timeout` to write all pending output (e.g. the reply to `quit`
    /// before the VMM exits). Returns whether everything was written.
    pub fn flush(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.flush_clients();
            let pending = self.clients.values().any(|c| !c.dead && !c.out.is_empty());
            if !pending {
                return true;
            }
            if deadline.is_none_or(|d| Instant::now() >= d) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn kick(&self) {
        // Only fails if the counter would overflow, in which case a wake-up is pending.
        let _ = self.wake.write(1);
    }

    fn accept_pending(&mut self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) => {
                    // The connection waits in the backlog until a descriptor frees.
                    self.accept_paused = Some(Instant::now());
                    return;
                }
                // WouldBlock: all accepted.
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let session = QmpSession::new(self.config.max_message_bytes);
            let mut client = Client {
                stream,
                out: Vec::new(),
                read_closed: false,
                dead: false,
                registered: None,
                session,
            };
            client.queue(
                &encode_message(&client.session.greeting()),
                self.config.max_output_bytes,
            );
            client.flush();
            self.clients.insert(client.stream.as_raw_fd(), client);
        }
    }

    fn queue_event(&mut self, event: &QmpEvent) {
        let bytes = encode_message(&event.to_json());
        let cap = self.config.max_output_bytes;
        for client in self.clients.values_mut() {
            if client.session.is_negotiated() {
                client.queue(&bytes, cap);
            }
        }
    }

    fn flush_clients(&mut self) {
        for client in self.clients.values_mut() {
            client.flush();
        }
    }

    fn read_client(&mut self, fd: RawFd) {
        let mut outputs = Vec::new();
        for _ in 0..READS_PER_EVENT {
            let Some(client) = self.clients.get_mut(&fd) else {
                return;
            };
            if client.dead || client.read_closed {
                break;
            }
            match client.stream.read(&mut self.scratch) {
                Ok(0) => {
                    // EOF: a partial message is dropped; replies already queued still go
                    // out if the peer only shut down its writing side.
                    client.read_closed = true;
                }
                Ok(n) => {
                    let input = self.scratch.get(..n).unwrap_or_default();
                    client
                        .session
                        .handle_input(input, self.backend.as_mut(), &mut outputs);
                    self.deliver(fd, &mut outputs);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => client.dead = true,
            }
        }
    }

    /// Sends a session's outputs: replies to `origin`, events to all.
    fn deliver(&mut self, origin: RawFd, outputs: &mut Vec<Output>) {
        let cap = self.config.max_output_bytes;
        for output in outputs.drain(..) {
            match output {
                Output::Reply(message) => {
                    if let Some(client) = self.clients.get_mut(&origin) {
                        client.queue(&encode_message(&message), cap);
                    }
                }
                Output::Event(event) => self.queue_event(&event),
                Output::Quit => {
                    self.quit = true;
                    self.flush_clients();
                    self.backend.quit();
                }
            }
        }
    }

    fn drain_event_queue(&mut self) {
        // Reset the eventfd first so an event sent meanwhile wakes us again.
        let _ = self.wake.read();
        while let Ok(event) = self.events_out.try_recv() {
            self.queue_event(&event);
        }
    }

    /// Brings the event-loop registrations in line with the clients: adds new ones,
    /// switches `EPOLLOUT` on and off, and closes finished ones.
    fn sync_registrations(&mut self, ops: &mut EventOps) {
        let finished: Vec<RawFd> = self
            .clients
            .iter()
            .filter(|(_, c)| c.finished())
            .map(|(fd, _)| *fd)
            .collect();
        let closed_any = !finished.is_empty();
        for fd in finished {
            if let Some(client) = self.clients.remove(&fd) {
                if client.registered.is_some() {
                    // Must happen before the fd is closed: the event manager tracks fds.
                    let _ = ops.remove(Events::empty(&client.stream));
                }
            }
        }
        for client in self.clients.values_mut() {
            let wanted = client.interest();
            let result = match client.registered {
                Some(current) if current == wanted => continue,
                Some(_) => ops.modify(Events::new(&client.stream, wanted)),
                None => ops.add(Events::new(&client.stream, wanted)),
            };
            match result {
                Ok(()) => client.registered = Some(wanted),
                Err(_) if client.registered.is_none() => client.dead = true,
                Err(_) => {}
            }
        }
        // Clients that could not be registered are closed now rather than leaked.
        self.clients
            .retain(|_, c| !(c.dead && c.registered.is_none()));
        self.sync_listener(ops, closed_any);
    }

    /// Stops watching the listener while accepting is paused, and watches it again once a
    /// client closed or [`ACCEPT_RETRY`] passed.
    fn sync_listener(&mut self, ops: &mut EventOps, closed_any: bool) {
        if !self.listener_registered {
            return;
        }
        if let Some(since) = self.accept_paused {
            if closed_any || since.elapsed() >= ACCEPT_RETRY {
                self.accept_paused = None;
            }
        }
        let wanted = self.accept_paused.is_none();
        if wanted != self.listener_watched {
            let set = if wanted {
                EventSet::IN
            } else {
                EventSet::empty()
            };
            if ops.modify(Events::new(&self.listener, set)).is_ok() {
                self.listener_watched = wanted;
            }
        }
    }
}

impl MutEventSubscriber for QmpServer {
    fn init(&mut self, ops: &mut EventOps) {
        if !self.listener_registered {
            let listener = ops.add(Events::new(&self.listener, EventSet::IN));
            let wake = ops.add(Events::new(self.wake.as_ref(), EventSet::IN));
            self.listener_registered = listener.is_ok() && wake.is_ok();
        }
        self.sync_registrations(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        let set = events.event_set();
        if fd == self.listener.as_raw_fd() {
            self.accept_pending();
        } else if fd == self.wake.as_raw_fd() {
            self.drain_event_queue();
        } else if let Some(client) = self.clients.get_mut(&fd) {
            if set.contains(EventSet::ERROR) {
                client.dead = true;
            } else {
                if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP) {
                    self.read_client(fd);
                }
                if let Some(client) = self.clients.get_mut(&fd) {
                    if set.contains(EventSet::HANG_UP) {
                        // Both directions are gone: nothing more can be written.
                        client.dead = true;
                    }
                }
            }
        }
        self.flush_clients();
        self.sync_registrations(ops);
    }
}

impl Drop for QmpServer {
    fn drop(&mut self) {
        // Remove the socket file only if it is still the one we created.
        if let Ok(meta) = fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.socket_id {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// EMFILE/ENFILE and kin: accepting cannot succeed until a descriptor (or memory) frees.
fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The most bytes a Unix socket path may have: `sun_path` is 108 bytes with the final NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// What the private staging directory adds to the parent's path: "/.vq" + mkdtemp's six
/// characters + "/s".
const STAGING_OVERHEAD: usize = 4 + 6 + 2;

fn create_socket(path: &Path) -> Result<(UnixListener, (u64, u64))> {
    let bind_err = |source| Error::Bind {
        path: path.to_path_buf(),
        source,
    };
    match fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(Error::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Ok(_) if UnixStream::connect(path).is_ok() => {
            return Err(Error::SocketInUse {
                path: path.to_path_buf(),
            })
        }
        // A stale socket: the rename below replaces it atomically.
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if path.file_name().is_none() {
        return Err(bind_err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path names no file",
        )));
    }
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(Error::PathTooLong {
            path: path.to_path_buf(),
            len,
            limit: MAX_SOCKET_PATH,
        });
    }
    // The socket is bound in a private directory (mkdtemp: mode 0700) and renamed into
    // place, so it is never reachable with the umask's permissions and a stale socket is
    // replaced atomically. Where the staging path would not fit a socket address (a final
    // path within STAGING_OVERHEAD bytes of the limit), it is bound in place instead, after
    // removing the stale socket, and restricted right after.
    let staging_fits = parent.as_os_str().len() + STAGING_OVERHEAD <= MAX_SOCKET_PATH;
    let listener = if staging_fits {
        let private = TempDir::new_with_prefix(parent.join(".vq"))
            .map_err(|e| bind_err(io::Error::from_raw_os_error(e.errno())))?;
        let staging = private.as_path().join("s");
        let listener = UnixListener::bind(&staging).map_err(bind_err)?;
        fs::set_permissions(&staging, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        fs::rename(&staging, path).map_err(bind_err)?;
        listener
    } else {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind_err(e)),
        }
        let listener = UnixListener::bind(path).map_err(bind_err)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
        listener
    };
    listener.set_nonblocking(true).map_err(bind_err)?;
    let meta = fs::symlink_metadata(path).map_err(bind_err)?;
    Ok((listener, (meta.dev(), meta.ino())))
}
