//! Opened chardevs: the write side the guest's device drives and the input side the main
//! loop polls.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::terminal::Terminal;

use crate::spec::{Backend, ChardevSpec, SocketAddress, SocketSpec};
use crate::{pty, Error, Result};

/// How long one [`Chardev::write`] keeps retrying a full, non-blocking host fd before it
/// drops the rest. After a drop, writes try once only until one gets through again, so a
/// stalled reader slows the guest by at most this much once, not per byte.
pub const WRITE_PATIENCE: Duration = Duration::from_millis(50);

/// What one [`Chardev::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// `n` bytes of input, at the start of the buffer.
    Data(usize),
    /// Nothing to read now (spurious wake-up, or only part of an event was ready).
    WouldBlock,
    /// A socket client connected (a server chardev); input now comes from it.
    Connected,
    /// The socket peer went away. A server goes back to listening for the next client;
    /// a client chardev reports [`Input::Eof`] from now on.
    Disconnected,
    /// No more input ever (stdin at end of file, a client socket closed, or a backend
    /// without input).
    Eof,
}

/// A host-side connection event, as [`ChardevInput`](crate::ChardevInput) reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChardevEvent {
    /// A socket client connected.
    Connected,
    /// The socket peer disconnected.
    Disconnected,
    /// Input ended for good.
    Eof,
}

/// Write state shared by the backends whose host fd may be non-blocking.
#[derive(Debug, Default)]
struct Patience {
    stalled: AtomicBool,
}

impl Patience {
    /// Writes all of `bytes` to `w`, retrying `WouldBlock` for up to [`WRITE_PATIENCE`]
    /// (not at all while stalled), then dropping the rest.
    fn write_all(&self, mut w: impl Write, mut bytes: &[u8]) -> io::Result<()> {
        let mut deadline = None;
        while !bytes.is_empty() {
            match w.write(bytes) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    bytes = &bytes[n..];
                    self.stalled.store(false, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.stalled.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    let deadline = *deadline.get_or_insert_with(|| Instant::now() + WRITE_PATIENCE);
                    if Instant::now() >= deadline {
                        self.stalled.store(true, Ordering::Relaxed);
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        }
        w.flush()
    }
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl Listener {
    fn fd(&self) -> RawFd {
        match self {
            Listener::Unix(l) => l.as_raw_fd(),
            Listener::Tcp(l) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> io::Result<Stream> {
        let stream = match self {
            Listener::Unix(l) => Stream::Unix(l.accept()?.0),
            Listener::Tcp(l) => {
                let (s, _) = l.accept()?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
        };
        stream.set_nonblocking()?;
        Ok(stream)
    }
}

enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tcp(s) => s.as_raw_fd(),
        }
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Tcp(s) => s.set_nonblocking(true),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }

    fn writer(&self) -> SocketWriter {
        SocketWriter(self.fd())
    }
}

/// Writes to a socket fd with `MSG_NOSIGNAL` (see [`crate::sys::send_nosignal`]).
struct SocketWriter(RawFd);

impl Write for SocketWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        crate::sys::send_nosignal(self.0, bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Default)]
struct Connection {
    stream: Option<Stream>,
    /// A write failed (peer gone): drop output until the read side closes the stream.
    broken: bool,
    /// A client chardev whose peer went away.
    ended: bool,
}

const TOKEN_LISTENER: u64 = 0;
const TOKEN_STREAM: u64 = 1;

struct Socket {
    spec: SocketSpec,
    listener: Option<Listener>,
    connection: Mutex<Connection>,
    /// Holds the fd input comes from now (the listener or the client), so the main loop
    /// polls one fd that never changes.
    epoll: Epoll,
    local: Option<SocketAddr>,
    /// The unix socket file we bound (removed on drop).
    created: Option<PathBuf>,
    connections: AtomicU64,
    patience: Patience,
}

impl Socket {
    fn open(id: &str, spec: &SocketSpec) -> Result<Self> {
        let epoll = Epoll::new().map_err(|source| Error::Host {
            id: id.into(),
            what: "creating the socket's epoll",
            source,
        })?;
        let mut socket = Socket {
            spec: spec.clone(),
            listener: None,
            connection: Mutex::new(Connection::default()),
            epoll,
            local: None,
            created: None,
            connections: AtomicU64::new(0),
            patience: Patience::default(),
        };
        let open_err = |source| Error::Open {
            id: id.into(),
            what: if spec.server {
                format!("listen on {}", spec.address)
            } else {
                format!("connect to {}", spec.address)
            },
            source,
        };
        if spec.server {
            let listener = match &spec.address {
                SocketAddress::Unix(path) => {
                    remove_stale_socket(path).map_err(open_err)?;
                    let listener = UnixListener::bind(path).map_err(open_err)?;
                    socket.created = Some(path.clone());
                    Listener::Unix(listener)
                }
                SocketAddress::Tcp { host, port } => {
                    let host = if host.is_empty() { "0.0.0.0" } else { host };
                    let listener = TcpListener::bind((host, *port)).map_err(open_err)?;
                    socket.local = listener.local_addr().ok();
                    Listener::Tcp(listener)
                }
            };
            match &listener {
                Listener::Unix(l) => l.set_nonblocking(true),
                Listener::Tcp(l) => l.set_nonblocking(true),
            }
            .map_err(open_err)?;
            socket
                .epoll
                .ctl(
                    ControlOperation::Add,
                    listener.fd(),
                    EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
                )
                .map_err(open_err)?;
            socket.listener = Some(listener);
        } else {
            let stream = match &spec.address {
                SocketAddress::Unix(path) => {
                    Stream::Unix(UnixStream::connect(path).map_err(open_err)?)
                }
                SocketAddress::Tcp { host, port } => {
                    let host = if host.is_empty() { "localhost" } else { host };
                    let addrs: Vec<SocketAddr> =
                        (host, *port).to_socket_addrs().map_err(open_err)?.collect();
                    let stream = TcpStream::connect(&addrs[..]).map_err(open_err)?;
                    socket.local = stream.peer_addr().ok();
                    let _ = stream.set_nodelay(true);
                    Stream::Tcp(stream)
                }
            };
            stream.set_nonblocking().map_err(open_err)?;
            socket
                .epoll
                .ctl(
                    ControlOperation::Add,
                    stream.fd(),
                    EpollEvent::new(EventSet::IN, TOKEN_STREAM),
                )
                .map_err(open_err)?;
            socket.connections.store(1, Ordering::Relaxed);
            socket
                .connection
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .stream = Some(stream);
        }
        Ok(socket)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut conn = self.lock();
        if conn.broken {
            return Ok(());
        }
        let Some(stream) = &conn.stream else {
            // No client: output is dropped, as QEMU does while disconnected.
            return Ok(());
        };
        if self.patience.write_all(stream.writer(), bytes).is_err() {
            // The peer is gone; the read side will see it and close the stream.
            conn.broken = true;
        }
        Ok(())
    }

    /// Tries to accept the next client (server only); `Connected` or `WouldBlock`.
    fn try_accept(&self, conn: &mut Connection) -> io::Result<Input> {
        let Some(listener) = &self.listener else {
            return Ok(Input::Eof);
        };
        match listener.accept() {
            Ok(stream) => {
                // One client at a time: stop polling the listener until this one leaves.
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    listener.fd(),
                    EpollEvent::default(),
                );
                self.epoll.ctl(
                    ControlOperation::Add,
                    stream.fd(),
                    EpollEvent::new(EventSet::IN, TOKEN_STREAM),
                )?;
                conn.stream = Some(stream);
                conn.broken = false;
                self.patience.stalled.store(false, Ordering::Relaxed);
                self.connections.fetch_add(1, Ordering::Relaxed);
                Ok(Input::Connected)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Input::WouldBlock)
            }
            // A client that reset before we accepted it: nothing to do now.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(Input::WouldBlock),
            Err(e) => Err(e),
        }
    }

    fn disconnect(&self, conn: &mut Connection) {
        if let Some(stream) = conn.stream.take() {
            let _ = self
                .epoll
                .ctl(ControlOperation::Delete, stream.fd(), EpollEvent::default());
        }
        conn.broken = false;
        match &self.listener {
            Some(listener) => {
                let _ = self.epoll.ctl(
                    ControlOperation::Add,
                    listener.fd(),
                    EpollEvent::new(EventSet::IN, TOKEN_LISTENER),
                );
            }
            None => conn.ended = true,
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<Input> {
        let mut conn = self.lock();
        if conn.ended {
            return Ok(Input::Eof);
        }
        let Some(stream) = &conn.stream else {
            return self.try_accept(&mut conn);
        };
        match stream.read(buf) {
            Ok(0) => {
                self.disconnect(&mut conn);
                Ok(Input::Disconnected)
            }
            Ok(n) => Ok(Input::Data(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(Input::WouldBlock)
            }
            Err(_) => {
                // Reset by the peer or similar: the connection is over.
                self.disconnect(&mut conn);
                Ok(Input::Disconnected)
            }
        }
    }

    fn wait_for_client(&self, id: &str, timeout: Option<Duration>) -> Result<()> {
        if self.listener.is_none() {
            return Ok(());
        }
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            {
                let mut conn = self.lock();
                if conn.stream.is_some() {
                    return Ok(());
                }
                match self.try_accept(&mut conn) {
                    Ok(Input::Connected) => return Ok(()),
                    Ok(_) => {}
                    Err(source) => {
                        return Err(Error::Host {
                            id: id.into(),
                            what: "accepting a client",
                            source,
                        })
                    }
                }
            }
            let slice = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::WaitTimeout {
                            id: id.into(),
                            address: self.spec.address.to_string(),
                            timeout_ms: timeout.unwrap_or_default().as_millis(),
                        });
                    }
                    left.min(Duration::from_millis(100))
                }
                None => Duration::from_millis(100),
            };
            let mut events = [EpollEvent::default()];
            let ms = i32::try_from(slice.as_millis().max(1)).unwrap_or(100);
            let _ = self.epoll.wait(ms, &mut events);
        }
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// QEMU removes an old socket file before binding; anything else at the path is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )),
        Err(_) => Ok(()),
    }
}

enum Kind {
    Null,
    Stdio {
        signal: bool,
        patience: Patience,
        eof: AtomicBool,
    },
    File(File),
    Pty(pty::Pty, Patience),
    Socket(Socket),
}

/// An opened chardev. Share it as `Arc<Chardev>`: the device's thread writes, the main
/// loop reads. See the [crate docs](crate) for the wiring.
pub struct Chardev {
    id: String,
    kind: Kind,
}

impl std::fmt::Debug for Chardev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chardev")
            .field("id", &self.id)
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

impl Chardev {
    /// Opens the backend `spec` describes. Never blocks on a client: a `wait=on` server
    /// needs [`wait_for_client`](Self::wait_for_client). A `pty` prints
    /// `char device redirected to /dev/pts/N (label ID)` on stderr, as QEMU does.
    ///
    /// # Errors
    /// [`Error::Open`] naming the file, address or device that could not be opened (for a
    /// client socket: the address it could not connect to).
    pub fn open(spec: &ChardevSpec) -> Result<Self> {
        let id = spec.id.clone();
        let kind = match &spec.backend {
            Backend::Null => Kind::Null,
            Backend::Stdio { signal } => Kind::Stdio {
                signal: *signal,
                patience: Patience::default(),
                eof: AtomicBool::new(false),
            },
            Backend::File { path, append } => {
                let mut options = OpenOptions::new();
                options.create(true);
                if *append {
                    options.append(true);
                } else {
                    options.write(true).truncate(true);
                }
                Kind::File(options.open(path).map_err(|source| Error::Open {
                    id: id.clone(),
                    what: format!("open {}", path.display()),
                    source,
                })?)
            }
            Backend::Pty => {
                let pty = pty::Pty::open().map_err(|source| Error::Open {
                    id: id.clone(),
                    what: "open a pseudo-terminal".into(),
                    source,
                })?;
                eprintln!(
                    "char device redirected to {} (label {id})",
                    pty.slave_path().display()
                );
                Kind::Pty(pty, Patience::default())
            }
            Backend::Socket(socket) => Kind::Socket(Socket::open(&id, socket)?),
        };
        Ok(Self { id, kind })
    }

    /// Opens `spec` and wraps it for sharing.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub fn open_shared(spec: &ChardevSpec) -> Result<Arc<Self>> {
        Self::open(spec).map(Arc::new)
    }

    /// The `id=`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The backend's name (`null`, `stdio`, `file`, `socket`, `pty`).
    pub fn backend_name(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Stdio { .. } => "stdio",
            Kind::File(_) => "file",
            Kind::Pty(..) => "pty",
            Kind::Socket(_) => "socket",
        }
    }

    /// Sends guest output to the host. Never blocks for long: a full non-blocking fd is
    /// retried for at most [`WRITE_PATIENCE`], then the rest is dropped; a socket without
    /// a client (or whose client went away) drops everything; `null` drops everything.
    ///
    /// # Errors
    /// Only a file's or stdout's own write errors (disk full, closed stdout).
    pub fn write(&self, bytes: &[u8]) -> io::Result<()> {
        match &self.kind {
            Kind::Null => Ok(()),
            Kind::Stdio { patience, .. } => patience.write_all(io::stdout().lock(), bytes),
            Kind::File(file) => {
                let mut file = file;
                file.write_all(bytes)
            }
            Kind::Pty(pty, patience) => patience.write_all(pty.master(), bytes),
            Kind::Socket(socket) => socket.write(bytes),
        }
    }

    /// A [`Write`] for this chardev (for a UART's output, e.g. vmkit-isa's
    /// `SerialBackend::new(chardev.writer())`).
    pub fn writer(self: &Arc<Self>) -> ChardevWriter {
        ChardevWriter(Arc::clone(self))
    }

    /// Whether the backend has an input side at all (`file` and `null` do not).
    pub fn has_input(&self) -> bool {
        self.input_fd().is_some()
    }

    /// The fd the main loop should poll for input (`EPOLLIN`); it stays the same for the
    /// chardev's life. For a socket it is an internal epoll that turns readable on a new
    /// client as well as on data, so [`read`](Self::read) also reports connections.
    /// `None` for backends without input.
    pub fn input_fd(&self) -> Option<RawFd> {
        match &self.kind {
            Kind::Null | Kind::File(_) => None,
            Kind::Stdio { .. } => Some(libc::STDIN_FILENO),
            Kind::Pty(pty, _) => Some(pty.master().as_raw_fd()),
            Kind::Socket(socket) => Some(socket.epoll.as_raw_fd()),
        }
    }

    /// Reads host input into `buf` once, without blocking (call it when
    /// [`input_fd`](Self::input_fd) is readable).
    ///
    /// # Errors
    /// Unexpected host errors (for example a failing `accept`); end of input and
    /// disconnection are [`Input`] values, not errors.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Input> {
        match &self.kind {
            Kind::Null | Kind::File(_) => Ok(Input::Eof),
            Kind::Stdio { eof, .. } => {
                if eof.load(Ordering::Relaxed) {
                    return Ok(Input::Eof);
                }
                // Unbuffered, so epoll's view of stdin stays true.
                match io::stdin().lock().read_raw(buf) {
                    Ok(0) => {
                        eof.store(true, Ordering::Relaxed);
                        Ok(Input::Eof)
                    }
                    Ok(n) => Ok(Input::Data(n)),
                    Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => {
                        Ok(Input::WouldBlock)
                    }
                    Err(_) => {
                        eof.store(true, Ordering::Relaxed);
                        Ok(Input::Eof)
                    }
                }
            }
            Kind::Pty(pty, _) => match pty.master().read(buf) {
                Ok(n) if n > 0 => Ok(Input::Data(n)),
                // The slave is held open, so 0 or EIO would only be transient.
                Ok(_) => Ok(Input::WouldBlock),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    Ok(Input::WouldBlock)
                }
                Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(Input::WouldBlock),
                Err(e) => Err(e),
            },
            Kind::Socket(socket) => socket.read(buf),
        }
    }

    /// Whether output currently reaches someone: always for `null`/`stdio`/`file`/`pty`;
    /// for a socket, while a client (or, for a client chardev, the server) is connected.
    pub fn is_connected(&self) -> bool {
        match &self.kind {
            Kind::Socket(socket) => {
                let conn = socket.lock();
                conn.stream.is_some() && !conn.broken
            }
            _ => true,
        }
    }

    /// How many connections a socket chardev has had (accepted clients, or 1 for a
    /// client chardev); 0 for other backends.
    pub fn connection_count(&self) -> u64 {
        match &self.kind {
            Kind::Socket(socket) => socket.connections.load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// Whether start-up should call [`wait_for_client`](Self::wait_for_client): a socket
    /// server with `wait=on`.
    pub fn wants_wait(&self) -> bool {
        matches!(&self.kind, Kind::Socket(s) if s.spec.server && s.spec.wait)
    }

    /// Blocks until a client connects to a socket server (at most `timeout`, `None` for
    /// ever); returns at once for other backends or when a client is already there. The
    /// VMM calls this before starting vCPUs for `wait=on`, after printing QEMU's
    /// `waiting for connection on: disconnected:ADDRESS,server=on` (see
    /// [`describe`](Self::describe)).
    ///
    /// # Errors
    /// [`Error::WaitTimeout`] naming the address when `timeout` passes first,
    /// [`Error::Host`] if accepting fails.
    pub fn wait_for_client(&self, timeout: Option<Duration>) -> Result<()> {
        match &self.kind {
            Kind::Socket(socket) => socket.wait_for_client(&self.id, timeout),
            _ => Ok(()),
        }
    }

    /// The bound (server) or connected-to (client) TCP address: the port chosen for
    /// `port=0`. `None` for non-TCP backends.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        match &self.kind {
            Kind::Socket(socket) => socket.local,
            _ => None,
        }
    }

    /// The pseudo-terminal's slave path (`/dev/pts/N`) for a `pty`.
    pub fn pty_path(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Pty(pty, _) => Some(pty.slave_path()),
            _ => None,
        }
    }

    /// `stdio`'s `signal=` (true for other backends, which have no terminal).
    pub fn stdio_signal(&self) -> bool {
        match &self.kind {
            Kind::Stdio { signal, .. } => *signal,
            _ => true,
        }
    }

    /// QEMU's label for the backend as `info chardev` shows it, e.g.
    /// `unix:/tmp/s,server=on`, `pty:/dev/pts/3`, `file`, `stdio`, `null`.
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Socket(socket) => {
                let mut spec = socket.spec.clone();
                if let (Some(addr), SocketAddress::Tcp { .. }) = (socket.local, &spec.address) {
                    spec.address = SocketAddress::Tcp {
                        host: addr.ip().to_string(),
                        port: addr.port(),
                    };
                }
                spec.to_string()
            }
            Kind::Pty(pty, _) => format!("pty:{}", pty.slave_path().display()),
            _ => self.backend_name().into(),
        }
    }
}

/// [`Write`] into an `Arc<Chardev>`: plugs a chardev in wherever a device takes a writer.
#[derive(Debug, Clone)]
pub struct ChardevWriter(pub Arc<Chardev>);

impl Write for ChardevWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
