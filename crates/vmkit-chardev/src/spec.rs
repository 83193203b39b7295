//! Parsing `-chardev` option text and the `-serial` / `-debugcon` short forms.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

/// The backends `-chardev` knows, as listed in errors.
pub const KNOWN_BACKENDS: &str = "null, stdio, file, socket, pty";

/// The short forms `-serial` / `-debugcon` know, as listed in errors.
pub const KNOWN_LEGACY_FORMS: &str =
    "stdio, null, none, pty, file:PATH, unix:PATH[,server,nowait], tcp:HOST:PORT[,server,nowait], chardev:ID";

/// One `-chardev` description: an id and what it connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChardevSpec {
    /// The `id=` (empty for a short form until [`with_id`](Self::with_id) names it).
    pub id: String,
    /// The backend and its options.
    pub backend: Backend,
}

/// A chardev backend and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// `null`: output discarded, no input.
    Null,
    /// `stdio`: the VMM's stdout and stdin.
    Stdio {
        /// `signal=on|off` (default on): whether Ctrl-C on the terminal signals the VMM
        /// (the caller's terminal setup honours it; see the crate docs).
        signal: bool,
    },
    /// `file`: output written to a file, no input.
    File {
        /// `path=`.
        path: PathBuf,
        /// `append=on|off` (default off: the file is truncated).
        append: bool,
    },
    /// `socket`: a unix or TCP stream socket, as server or client.
    Socket(SocketSpec),
    /// `pty`: a new pseudo-terminal; the guest talks to whoever opens the slave side.
    Pty,
}

impl Backend {
    /// The backend's name as `-chardev` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Null => "null",
            Backend::Stdio { .. } => "stdio",
            Backend::File { .. } => "file",
            Backend::Socket(_) => "socket",
            Backend::Pty => "pty",
        }
    }
}

/// The options of a `socket` chardev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    /// Where to listen or connect.
    pub address: SocketAddress,
    /// `server=on`: listen and accept one client at a time (default off: connect).
    pub server: bool,
    /// `wait=on` (the default for a server): start-up should block until a client connects
    /// (see [`Chardev::wait_for_client`](crate::Chardev::wait_for_client)).
    pub wait: bool,
}

/// A socket address as `-chardev socket` gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAddress {
    /// `path=`: a unix-domain stream socket.
    Unix(PathBuf),
    /// `host=` and `port=`: TCP. An empty host means all addresses for a server and
    /// `localhost` for a client, as in QEMU.
    Tcp {
        /// `host=` (may be empty).
        host: String,
        /// `port=`.
        port: u16,
    },
}

impl fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SocketAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            SocketAddress::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp:[{host}]:{port}")
            }
            SocketAddress::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
        }
    }
}

impl fmt::Display for SocketSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)?;
        if self.server {
            write!(f, ",server=on")?;
            if !self.wait {
                write!(f, ",wait=off")?;
            }
        }
        Ok(())
    }
}

/// What a `-serial` / `-debugcon` argument asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyBackend {
    /// A new chardev (its id is empty: name it with [`ChardevSpec::with_id`], QEMU uses
    /// `serial0`, `serial1`, ... and `debugcon`).
    Chardev(ChardevSpec),
    /// `chardev:ID`: an existing `-chardev id=ID`.
    Ref(String),
    /// `none`: no device at all.
    None,
}

/// Splits QEMU option text at commas, where `,,` stands for a literal comma.
fn split_options(text: &str) -> Vec<String> {
    vmkit_object::split_items(text)
}

/// Parses QEMU's boolean spellings.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "on" | "yes" | "true" | "y" => Some(true),
        "off" | "no" | "false" | "n" => Some(false),
        _ => None,
    }
}

const BOOL_KEYS: &[&str] = &["server", "wait", "append", "signal"];

/// Key/value options after the backend name, with QEMU's bare-flag forms (`server` means
/// `server=on`, `nowait` means `wait=off`).
struct Options<'a> {
    option: &'a str,
    text: &'a str,
    values: BTreeMap<String, String>,
}

impl<'a> Options<'a> {
    fn parse(
        option: &'a str,
        text: &'a str,
        parts: &[String],
        known: &'static str,
    ) -> Result<Self> {
        let mut values = BTreeMap::new();
        for part in parts {
            let (key, value) = match part.split_once('=') {
                Some((key, value)) => (key.to_string(), value.to_string()),
                None => match part.strip_prefix("no") {
                    Some(rest) if BOOL_KEYS.contains(&rest) => (rest.to_string(), "off".into()),
                    _ => (part.clone(), "on".into()),
                },
            };
            if key.is_empty() {
                return Err(Error::EmptyOption {
                    option: option.into(),
                    text: text.into(),
                });
            }
            if !known.split(", ").any(|k| k == key) {
                return Err(Error::UnknownOption {
                    option: option.into(),
                    text: text.into(),
                    key,
                    known,
                });
            }
            if values.insert(key.clone(), value).is_some() {
                return Err(Error::DuplicateOption {
                    option: option.into(),
                    text: text.into(),
                    key,
                });
            }
        }
        Ok(Self {
            option,
            text,
            values,
        })
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    fn bad(&self, key: &'static str, value: String, expected: &'static str) -> Error {
        Error::BadValue {
            option: self.option.into(),
            text: self.text.into(),
            key,
            value,
            expected,
        }
    }

    fn take_bool(&mut self, key: &'static str) -> Result<Option<bool>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) => match parse_bool(&value) {
                Some(b) => Ok(Some(b)),
                None => Err(self.bad(key, value, "on or off")),
            },
        }
    }

    fn take_path(&mut self, key: &'static str) -> Result<Option<PathBuf>> {
        match self.take(key) {
            None => Ok(None),
            Some(value) if value.is_empty() => Err(self.bad(key, value, "a non-empty path")),
            Some(value) => Ok(Some(PathBuf::from(value))),
        }
    }

    fn missing(&self, what: &'static str) -> Error {
        Error::Missing {
            option: self.option.into(),
            text: self.text.into(),
            what,
        }
    }

    fn conflict(&self, what: &'static str) -> Error {
        Error::Conflict {
            option: self.option.into(),
            text: self.text.into(),
            what,
        }
    }

    /// Socket options: `path=` or `host=`/`port=`, `server`, `wait`.
    fn socket(&mut self) -> Result<SocketSpec> {
        let path = self.take_path("path")?;
        let host = self.take("host");
        let port = self.take("port");
        let address = match (path, port) {
            (Some(_), Some(_)) => return Err(self.conflict("both path= and port= given")),
            (Some(_), None) if host.is_some() => {
                return Err(self.conflict("host= given with path= (host= is for TCP)"))
            }
            (Some(path), None) => SocketAddress::Unix(path),
            (None, Some(port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| self.bad("port", port, "a TCP port number 0..=65535"))?;
                SocketAddress::Tcp {
                    host: host.unwrap_or_default(),
                    port,
                }
            }
            (None, None) => return Err(self.missing("path= or port=")),
        };
        let server = self.take_bool("server")?.unwrap_or(false);
        let wait = self.take_bool("wait")?;
        if !server && wait.is_some() {
            return Err(
                self.conflict("wait= is only for server=on (client sockets connect at start)")
            );
        }
        Ok(SocketSpec {
            address,
            server,
            wait: server && wait.unwrap_or(true),
        })
    }
}

/// A QEMU-style id: a letter, then letters, digits, `-`, `.`, `_`.
fn valid_id(id: &str) -> bool {
    vmkit_object::check_id(id).is_ok()
}

impl ChardevSpec {
    /// Parses `-chardev` text: `BACKEND,id=ID[,OPTION=VALUE...]`.
    ///
    /// Backends and options: `null`; `stdio[,signal=on|off]`; `file,path=P[,append=on|off]`;
    /// `socket,path=P` or `socket,host=H,port=N` with `server=on|off` and `wait=on|off`
    /// (the short forms `server`, `nowait` work too); `pty`.
    ///
    /// # Errors
    /// An [`Error`] naming the option and the bad value: unknown backend (listing the
    /// known ones), unknown or duplicate option, bad boolean or port, missing `id=`,
    /// `path=` or address.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_for("-chardev", text)
    }

    fn parse_for(option: &str, text: &str) -> Result<Self> {
        let parts = split_options(text);
        let backend_name = parts[0].as_str();
        let rest = &parts[1..];
        let known = match backend_name {
            "null" | "pty" => "id",
            "stdio" => "id, signal",
            "file" => "id, path, append",
            "socket" => "id, path, host, port, server, wait",
            "" => {
                return Err(Error::Missing {
                    option: option.into(),
                    text: text.into(),
                    what: "a backend name",
                })
            }
            other => {
                return Err(Error::UnknownBackend {
                    option: option.into(),
                    backend: other.into(),
                    known: KNOWN_BACKENDS,
                })
            }
        };
        let mut opts = Options::parse(option, text, rest, known)?;
        let id = opts.take("id").ok_or_else(|| opts.missing("id="))?;
        if !valid_id(&id) {
            return Err(opts.bad(
                "id",
                id,
                "a letter followed by letters, digits, '-', '.' or '_'",
            ));
        }
        let backend = match backend_name {
            "null" => Backend::Null,
            "pty" => Backend::Pty,
            "stdio" => Backend::Stdio {
                signal: opts.take_bool("signal")?.unwrap_or(true),
            },
            "file" => {
                let path = opts
                    .take_path("path")?
                    .ok_or_else(|| opts.missing("path="))?;
                let append = opts.take_bool("append")?.unwrap_or(false);
                Backend::File { path, append }
            }
            _ => Backend::Socket(opts.socket()?),
        };
        Ok(Self { id, backend })
    }

    /// The same spec under another id.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }
}

impl fmt::Display for ChardevSpec {
    /// The spec as `-chardev` text (parses back to the same spec).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = &self.id;
        let escape = |p: &PathBuf| p.display().to_string().replace(',', ",,");
        match &self.backend {
            Backend::Null => write!(f, "null,id={id}"),
            Backend::Pty => write!(f, "pty,id={id}"),
            Backend::Stdio { signal } => {
                write!(
                    f,
                    "stdio,id={id},signal={}",
                    if *signal { "on" } else { "off" }
                )
            }
            Backend::File { path, append } => write!(
                f,
                "file,id={id},path={},append={}",
                escape(path),
                if *append { "on" } else { "off" }
            ),
            Backend::Socket(socket) => {
                write!(f, "socket,id={id},")?;
                match &socket.address {
                    SocketAddress::Unix(path) => write!(f, "path={}", escape(path))?,
                    SocketAddress::Tcp { host, port } => {
                        write!(f, "host={},port={port}", host.replace(',', ",,"))?
                    }
                }
                if socket.server {
                    write!(
                        f,
                        ",server=on,wait={}",
                        if socket.wait { "on" } else { "off" }
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Parses a `-serial` short form (see [`parse_legacy_backend_for`]).
///
/// # Errors
/// As [`parse_legacy_backend_for`], with errors naming `-serial`.
pub fn parse_legacy_backend(text: &str) -> Result<LegacyBackend> {
    parse_legacy_backend_for("-serial", text)
}

/// Parses the short forms QEMU's `-serial`, `-debugcon` (and `-monitor`) accept: `stdio`,
/// `null`, `none`, `pty`, `file:PATH`, `unix:PATH[,server][,nowait]`,
/// `tcp:HOST:PORT[,server][,nowait]` (HOST may be empty or `[v6]`), `chardev:ID`.
/// `option` names the command-line option in errors.
///
/// # Errors
/// An [`Error`] naming `option` and the bad text; an unknown form lists the known ones.
pub fn parse_legacy_backend_for(option: &str, text: &str) -> Result<LegacyBackend> {
    let backend = |backend| {
        Ok(LegacyBackend::Chardev(ChardevSpec {
            id: String::new(),
            backend,
        }))
    };
    match text {
        "none" => return Ok(LegacyBackend::None),
        "null" => return backend(Backend::Null),
        "stdio" => return backend(Backend::Stdio { signal: true }),
        "pty" => return backend(Backend::Pty),
        _ => {}
    }
    let bad = |what: &'static str| Error::Missing {
        option: option.into(),
        text: text.into(),
        what,
    };
    if let Some(id) = text.strip_prefix("chardev:") {
        if !valid_id(id) {
            return Err(Error::BadValue {
                option: option.into(),
                text: text.into(),
                key: "chardev",
                value: id.into(),
                expected: "a chardev id",
            });
        }
        return Ok(LegacyBackend::Ref(id.into()));
    }
    if let Some(path) = text.strip_prefix("file:") {
        if path.is_empty() {
            return Err(bad("a path after file:"));
        }
        return backend(Backend::File {
            path: PathBuf::from(path),
            append: false,
        });
    }
    let socket_opts = |address: SocketAddress, rest: &[String]| -> Result<LegacyBackend> {
        let mut opts = Options::parse(option, text, rest, "server, wait")?;
        let server = opts.take_bool("server")?.unwrap_or(false);
        let wait = opts.take_bool("wait")?;
        if !server && wait.is_some() {
            return Err(
                opts.conflict("wait= is only for server=on (client sockets connect at start)")
            );
        }
        backend(Backend::Socket(SocketSpec {
            address,
            server,
            wait: server && wait.unwrap_or(true),
        }))
    };
    if let Some(rest) = text.strip_prefix("unix:") {
        let parts = split_options(rest);
        if parts[0].is_empty() {
            return Err(bad("a path after unix:"));
        }
        return socket_opts(SocketAddress::Unix(PathBuf::from(&parts[0])), &parts[1..]);
    }
    if let Some(rest) = text.strip_prefix("tcp:") {
        let parts = split_options(rest);
        let Some((host, port)) = parts[0].rsplit_once(':') else {
            return Err(bad("HOST:PORT after tcp:"));
        };
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port.parse::<u16>().map_err(|_| Error::BadValue {
            option: option.into(),
            text: text.into(),
            key: "port",
            value: port.into(),
            expected: "a TCP port number 0..=65535",
        })?;
        return socket_opts(
            SocketAddress::Tcp {
                host: host.into(),
                port,
            },
            &parts[1..],
        );
    }
    Err(Error::UnknownBackend {
        option: option.into(),
        backend: text.into(),
        known: KNOWN_LEGACY_FORMS,
    })
}

/// The `-chardev`s of a machine by id: refuses duplicate ids and resolves `chardev:ID`.
#[derive(Debug, Clone, Default)]
pub struct ChardevSet {
    specs: Vec<ChardevSpec>,
}

impl ChardevSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `spec`.
    ///
    /// # Errors
    /// [`Error::DuplicateId`] if its id is taken, [`Error::Missing`] if the id is empty.
    pub fn add(&mut self, spec: ChardevSpec) -> Result<()> {
        if spec.id.is_empty() {
            return Err(Error::Missing {
                option: "-chardev".into(),
                text: spec.to_string(),
                what: "id=",
            });
        }
        if self.get(&spec.id).is_some() {
            return Err(Error::DuplicateId { id: spec.id });
        }
        self.specs.push(spec);
        Ok(())
    }

    /// Parses `-chardev` text and adds it; returns the id.
    ///
    /// # Errors
    /// As [`ChardevSpec::parse`] and [`add`](Self::add).
    pub fn add_text(&mut self, text: &str) -> Result<String> {
        let spec = ChardevSpec::parse(text)?;
        let id = spec.id.clone();
        self.add(spec)?;
        Ok(id)
    }

    /// The spec with `id`.
    pub fn get(&self, id: &str) -> Option<&ChardevSpec> {
        self.specs.iter().find(|spec| spec.id == id)
    }

    /// Resolves a short form for `option`: a new chardev is added under `default_id`
    /// (e.g. `serial0`), `chardev:ID` must name one already added. Returns the id to
    /// use, or `None` for `none`.
    ///
    /// # Errors
    /// [`Error::UnknownId`] for a reference to a missing id, [`Error::DuplicateId`] if
    /// `default_id` is taken.
    pub fn resolve(
        &mut self,
        option: &str,
        legacy: LegacyBackend,
        default_id: &str,
    ) -> Result<Option<String>> {
        match legacy {
            LegacyBackend::None => Ok(None),
            LegacyBackend::Ref(id) => match self.get(&id) {
                Some(_) => Ok(Some(id)),
                None => Err(Error::UnknownId {
                    option: option.into(),
                    id,
                }),
            },
            LegacyBackend::Chardev(spec) => {
                self.add(spec.with_id(default_id))?;
                Ok(Some(default_id.into()))
            }
        }
    }

    /// All specs, in the order added.
    pub fn iter(&self) -> impl Iterator<Item = &ChardevSpec> {
        self.specs.iter()
    }

    /// How many specs there are.
    pub fn len(&self) -> usize {
        self.specs.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(path: &str, server: bool, wait: bool) -> Backend {
        Backend::Socket(SocketSpec {
            address: SocketAddress::Unix(path.into()),
            server,
            wait,
        })
    }

    #[test]
    fn every_backend_parses() {
        let cases: Vec<(&str, Backend)> = vec![
            ("null,id=n", Backend::Null),
            ("pty,id=n", Backend::Pty),
            ("stdio,id=n", Backend::Stdio { signal: true }),
            ("stdio,id=n,signal=off", Backend::Stdio { signal: false }),
            ("stdio,id=n,nosignal", Backend::Stdio { signal: false }),
            (
                "file,id=n,path=/tmp/a",
                Backend::File {
                    path: "/tmp/a".into(),
                    append: false,
                },
            ),
            (
                "file,path=/tmp/a,,b,id=n,append=on",
                Backend::File {
                    path: "/tmp/a,b".into(),
                    append: true,
                },
            ),
            ("socket,id=n,path=/tmp/s", unix("/tmp/s", false, false)),
            (
                "socket,id=n,path=/tmp/s,server=on",
                unix("/tmp/s", true, true),
            ),
            (
                "socket,id=n,path=/tmp/s,server=on,wait=off",
                unix("/tmp/s", true, false),
            ),
            (
                "socket,id=n,path=/tmp/s,server,nowait",
                unix("/tmp/s", true, false),
            ),
            (
                "socket,id=n,path=/tmp/s,server=yes,wait=no",
                unix("/tmp/s", true, false),
            ),
            (
                "socket,id=n,path=/tmp/s,noserver",
                unix("/tmp/s", false, false),
            ),
            (
                "socket,id=n,host=127.0.0.1,port=4444,server=on,wait=off",
                Backend::Socket(SocketSpec {
                    address: SocketAddress::Tcp {
                        host: "127.0.0.1".into(),
                        port: 4444,
                    },
                    server: true,
                    wait: false,
                }),
            ),
            (
                "socket,id=n,port=0",
                Backend::Socket(SocketSpec {
                    address: SocketAddress::Tcp {
                        host: String::new(),
                        port: 0,
                    },
                    server: false,
                    wait: false,
                }),
            ),
        ];
        for (text, backend) in cases {
            let spec = ChardevSpec::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(spec.id, "n", "{text}");
            assert_eq!(spec.backend, backend, "{text}");
            // Display gives text that parses back to the same spec.
            assert_eq!(
                ChardevSpec::parse(&spec.to_string()).unwrap(),
                spec,
                "{text}"
            );
        }
    }

    #[test]
    fn the_briefs_example() {
        let spec = ChardevSpec::parse("socket,id=c0,path=/tmp/s,server=on,wait=off").unwrap();
        assert_eq!(spec.id, "c0");
        assert_eq!(spec.backend, unix("/tmp/s", true, false));
    }

    #[test]
    fn errors_name_the_option_and_value() {
        let cases = [
            ("socket,id=c0", "-chardev socket,id=c0: missing path= or port="),
            (
                "serial,id=c0",
                "-chardev: unknown backend 'serial' (known: null, stdio, file, socket, pty)",
            ),
            ("null", "-chardev null: missing id="),
            ("", "-chardev : missing a backend name"),
            ("file,id=f", "-chardev file,id=f: missing path="),
            ("file,id=f,path=", "-chardev file,id=f,path=: bad value '' for path= (expected a non-empty path)"),
            (
                "file,id=f,path=/x,append=maybe",
                "-chardev file,id=f,path=/x,append=maybe: bad value 'maybe' for append= (expected on or off)",
            ),
            (
                "socket,id=c,port=70000",
                "-chardev socket,id=c,port=70000: bad value '70000' for port= (expected a TCP port number 0..=65535)",
            ),
            (
                "socket,id=c,port=1,path=/s",
                "-chardev socket,id=c,port=1,path=/s: both path= and port= given",
            ),
            (
                "socket,id=c,path=/s,wait=off",
                "-chardev socket,id=c,path=/s,wait=off: wait= is only for server=on (client sockets connect at start)",
            ),
            (
                "null,id=n,mux=on",
                "-chardev null,id=n,mux=on: unknown option 'mux' (known: id)",
            ),
            (
                "null,id=n,id=m",
                "-chardev null,id=n,id=m: option id= given twice",
            ),
            (
                "null,id=9n",
                "-chardev null,id=9n: bad value '9n' for id= (expected a letter followed by letters, digits, '-', '.' or '_')",
            ),
            ("null,id=n,", "-chardev null,id=n,: an empty option (stray comma?)"),
        ];
        for (text, message) in cases {
            let err = ChardevSpec::parse(text).expect_err(text);
            assert_eq!(err.to_string(), message, "{text}");
        }
    }

    #[test]
    fn legacy_forms() {
        let ok = |text: &str| parse_legacy_backend(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        let chardev = |backend| {
            LegacyBackend::Chardev(ChardevSpec {
                id: String::new(),
                backend,
            })
        };
        assert_eq!(ok("none"), LegacyBackend::None);
        assert_eq!(ok("null"), chardev(Backend::Null));
        assert_eq!(ok("stdio"), chardev(Backend::Stdio { signal: true }));
        assert_eq!(ok("pty"), chardev(Backend::Pty));
        assert_eq!(ok("chardev:c0"), LegacyBackend::Ref("c0".into()));
        assert_eq!(
            ok("file:/tmp/out"),
            chardev(Backend::File {
                path: "/tmp/out".into(),
                append: false
            })
        );
        assert_eq!(ok("unix:/tmp/s"), chardev(unix("/tmp/s", false, false)));
        assert_eq!(
            ok("unix:/tmp/s,server"),
            chardev(unix("/tmp/s", true, true))
        );
        assert_eq!(
            ok("unix:/tmp/s,server,nowait"),
            chardev(unix("/tmp/s", true, false))
        );
        assert_eq!(
            ok("unix:/tmp/s,server=on,wait=off"),
            chardev(unix("/tmp/s", true, false))
        );
        let tcp = |host: &str, port, server, wait| {
            chardev(Backend::Socket(SocketSpec {
                address: SocketAddress::Tcp {
                    host: host.into(),
                    port,
                },
                server,
                wait,
            }))
        };
        assert_eq!(
            ok("tcp:localhost:4444"),
            tcp("localhost", 4444, false, false)
        );
        assert_eq!(ok("tcp::4444,server,nowait"), tcp("", 4444, true, false));
        assert_eq!(ok("tcp:[::1]:4444,server"), tcp("::1", 4444, true, true));
    }

    #[test]
    fn legacy_errors() {
        let cases = [
            (
                "vc",
                "-serial: unknown backend 'vc' (known: stdio, null, none, pty, file:PATH, unix:PATH[,server,nowait], tcp:HOST:PORT[,server,nowait], chardev:ID)",
            ),
            ("file:", "-serial file:: missing a path after file:"),
            ("unix:", "-serial unix:: missing a path after unix:"),
            ("tcp:4444", "-serial tcp:4444: missing HOST:PORT after tcp:"),
            (
                "tcp:h:http",
                "-serial tcp:h:http: bad value 'http' for port= (expected a TCP port number 0..=65535)",
            ),
            (
                "unix:/s,server,bogus",
                "-serial unix:/s,server,bogus: unknown option 'bogus' (known: server, wait)",
            ),
            (
                "chardev:",
                "-serial chardev:: bad value '' for chardev= (expected a chardev id)",
            ),
        ];
        for (text, message) in cases {
            let err = parse_legacy_backend(text).expect_err(text);
            assert_eq!(err.to_string(), message, "{text}");
        }
        let err = parse_legacy_backend_for("-debugcon", "bogus").unwrap_err();
        assert!(err
            .to_string()
            .starts_with("-debugcon: unknown backend 'bogus'"));
    }

    #[test]
    fn set_refuses_duplicates_and_resolves_references() {
        let mut set = ChardevSet::new();
        assert_eq!(set.add_text("null,id=c0").unwrap(), "c0");
        let err = set.add_text("pty,id=c0").unwrap_err();
        assert_eq!(err.to_string(), "-chardev id=c0: duplicate chardev id");
        assert_eq!(
            set.resolve(
                "-serial",
                parse_legacy_backend("chardev:c0").unwrap(),
                "serial0"
            )
            .unwrap(),
            Some("c0".into())
        );
        let err = set
            .resolve("-serial", LegacyBackend::Ref("nope".into()), "serial0")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "-serial chardev:nope: no -chardev with id=nope"
        );
        assert_eq!(
            set.resolve("-serial", parse_legacy_backend("stdio").unwrap(), "serial0")
                .unwrap(),
            Some("serial0".into())
        );
        assert_eq!(
            set.get("serial0").unwrap().backend,
            Backend::Stdio { signal: true }
        );
        assert_eq!(
            set.resolve("-serial", LegacyBackend::None, "serial1")
                .unwrap(),
            None
        );
        assert_eq!(set.len(), 2);
        let err = set
            .add(ChardevSpec {
                id: String::new(),
                backend: Backend::Null,
            })
            .unwrap_err();
        assert!(err.to_string().contains("missing id="), "{err}");
    }
}
