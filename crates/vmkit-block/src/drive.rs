//! QEMU's `-drive` option: `file=,format=raw,if=none|virtio,id=,readonly=on|off,cache=,
//! discard=,aio=threads,media=disk`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::backend::{RawFile, RawOptions};
use crate::{Error, Result};

/// QEMU's `cache=` modes (`bdrv_parse_cache_mode`), as three flags.
///
/// | mode | write cache (`cache.writeback`) | `O_DIRECT` (`cache.direct`) | flushes (`cache.no-flush`) |
/// |---|---|---|---|
/// | `writeback` (default) | on | off | honoured |
/// | `none` | on | on | honoured |
/// | `writethrough` | off | off | honoured |
/// | `directsync` | off | on | honoured |
/// | `unsafe` | on | off | ignored |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    /// Host page cache, guest flushes become `fdatasync`.
    #[default]
    Writeback,
    /// `O_DIRECT`, guest flushes become `fdatasync`.
    None,
    /// Host page cache, every write followed by `fdatasync`.
    Writethrough,
    /// `O_DIRECT`, every write followed by `fdatasync`.
    DirectSync,
    /// Host page cache, flushes ignored (data may be lost on a host crash).
    Unsafe,
}

impl CacheMode {
    /// Every mode, with its QEMU name.
    pub const ALL: [(&'static str, CacheMode); 5] = [
        ("none", CacheMode::None),
        ("writeback", CacheMode::Writeback),
        ("writethrough", CacheMode::Writethrough),
        ("directsync", CacheMode::DirectSync),
        ("unsafe", CacheMode::Unsafe),
    ];

    /// The write cache is on (`cache.writeback`).
    pub fn writeback(self) -> bool {
        matches!(
            self,
            CacheMode::Writeback | CacheMode::None | CacheMode::Unsafe
        )
    }

    /// The file is opened with `O_DIRECT` (`cache.direct`).
    pub fn direct(self) -> bool {
        matches!(self, CacheMode::None | CacheMode::DirectSync)
    }

    /// Flushes are ignored (`cache.no-flush`).
    pub fn no_flush(self) -> bool {
        self == CacheMode::Unsafe
    }

    /// QEMU's name.
    pub fn name(self) -> &'static str {
        CacheMode::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("writeback", |(n, _)| n)
    }
}

impl fmt::Display for CacheMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CacheMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        CacheMode::ALL
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, m)| *m)
            .ok_or_else(|| {
                Error::option(
                    "cache",
                    s,
                    "invalid cache option: use none, writeback, writethrough, directsync or unsafe",
                )
            })
    }
}

/// QEMU's `discard=`: what the guest's discard (TRIM/UNMAP) requests do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiscardMode {
    /// `ignore` / `off` (default): accepted and dropped.
    #[default]
    Ignore,
    /// `unmap` / `on`: the range is deallocated (a hole is punched in the file).
    Unmap,
}

impl FromStr for DiscardMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "ignore" | "off" => Ok(DiscardMode::Ignore),
            "unmap" | "on" => Ok(DiscardMode::Unmap),
            _ => Err(Error::option(
                "discard",
                s,
                "invalid discard option: use ignore (off) or unmap (on)",
            )),
        }
    }
}

/// QEMU's `if=`: which device the drive gets by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DriveInterface {
    /// `if=none`: no device; a `-device virtio-blk-pci,drive=ID` uses it.
    None,
    /// `if=virtio`: a `virtio-blk-pci` is created for it, as QEMU does.
    Virtio,
}

impl DriveInterface {
    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            DriveInterface::None => "none",
            DriveInterface::Virtio => "virtio",
        }
    }
}

/// One `-drive`, parsed.
///
/// ```
/// use vmkit_block::{CacheMode, DriveInterface, DriveSpec};
/// let d: DriveSpec = "file=disk.img,format=raw,if=none,id=d0,cache=none,readonly=on".parse()?;
/// assert_eq!(d.file.to_str(), Some("disk.img"));
/// assert_eq!((d.interface, d.id.as_deref()), (DriveInterface::None, Some("d0")));
/// assert_eq!(d.cache, CacheMode::None);
/// assert!(d.read_only);
///
/// let err = "file=disk.qcow2,format=qcow2,if=virtio".parse::<DriveSpec>().unwrap_err();
/// assert!(err.to_string().contains("qcow2") && err.to_string().contains("raw"));
/// # Ok::<(), vmkit_block::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveSpec {
    /// `file=`: the image (QEMU's `,,` escapes a comma in it).
    pub file: PathBuf,
    /// `format=`: `raw`, or not given (then an image that looks like qcow2 is refused
    /// when opened, instead of being exposed raw).
    pub format: Option<String>,
    /// `if=`.
    pub interface: DriveInterface,
    /// `id=` (the machine assigns QEMU's default, `virtio0`..., when absent).
    pub id: Option<String>,
    /// `readonly=`.
    pub read_only: bool,
    /// `cache=`.
    pub cache: CacheMode,
    /// `discard=`.
    pub discard: DiscardMode,
}

/// The qcow2 magic, `QFI\xfb`.
const QCOW2_MAGIC: [u8; 4] = *b"QFI\xfb";

/// Splits QEMU option text on `,` with `,,` as a literal comma.
fn split_options(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

fn parse_bool(option: &'static str, value: &str) -> Result<bool> {
    match value {
        "on" | "yes" | "true" | "y" => Ok(true),
        "off" | "no" | "false" | "n" => Ok(false),
        _ => Err(Error::option(option, value, "expected on or off")),
    }
}

/// QEMU's id rule: a letter, then letters, digits, `-`, `.` and `_`.
pub fn valid_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

impl DriveSpec {
    /// Parses `-drive` text.
    pub fn parse(text: &str) -> Result<Self> {
        let mut file = None;
        let mut format = None;
        let mut interface = None;
        let mut id = None;
        let mut read_only = false;
        let mut cache = CacheMode::default();
        let mut discard = DiscardMode::default();
        for part in split_options(text) {
            if part.is_empty() {
                continue;
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(Error::option(
                    "-drive",
                    &part,
                    "expected key=value (e.g. file=disk.img)",
                ));
            };
            match key {
                "file" => {
                    if value.is_empty() {
                        return Err(Error::option("file", value, "needs a file name"));
                    }
                    file = Some(PathBuf::from(value));
                }
                "format" => {
                    if value != "raw" {
                        return Err(Error::Format {
                            format: value.to_string(),
                            path: None,
                        });
                    }
                    format = Some(value.to_string());
                }
                "if" => {
                    interface = Some(match value {
                        "none" => DriveInterface::None,
                        "virtio" => DriveInterface::Virtio,
                        _ => {
                            return Err(Error::option(
                                "if",
                                value,
                                "unsupported interface: vmkit has virtio-blk only (if=virtio, \
                                 or if=none with -device virtio-blk-pci,drive=ID)",
                            ))
                        }
                    })
                }
                "id" => {
                    if !valid_id(value) {
                        return Err(Error::option(
                            "id",
                            value,
                            "identifiers start with a letter and contain only letters, \
                             digits, '-', '.' and '_'",
                        ));
                    }
                    id = Some(value.to_string());
                }
                "readonly" => read_only = parse_bool("readonly", value)?,
                "cache" => cache = value.parse()?,
                "discard" => discard = value.parse()?,
                "aio" => {
                    if value != "threads" {
                        return Err(Error::option(
                            "aio",
                            value,
                            "only aio=threads (the worker-thread pool) is available",
                        ));
                    }
                }
                "media" => {
                    if value != "disk" {
                        return Err(Error::option(
                            "media",
                            value,
                            "only media=disk is available",
                        ));
                    }
                }
                _ => {
                    return Err(Error::option(
                        "-drive",
                        key,
                        "unknown parameter (known: file, format, if, id, readonly, cache, \
                         discard, aio, media)",
                    ))
                }
            }
        }
        let file = file.ok_or_else(|| Error::option("-drive", text, "needs file=IMAGE"))?;
        let interface = interface.ok_or_else(|| {
            Error::option(
                "if",
                "ide",
                "IDE (QEMU's default for the pc machine) is not available: give if=virtio, \
                 or if=none,id=ID with -device virtio-blk-pci,drive=ID",
            )
        })?;
        Ok(DriveSpec {
            file,
            format,
            interface,
            id,
            read_only,
            cache,
            discard,
        })
    }

    /// The backend options this drive asks for.
    pub fn raw_options(&self) -> RawOptions {
        RawOptions {
            read_only: self.read_only,
            cache: self.cache,
            discard: self.discard,
        }
    }

    /// Opens the image. Without `format=`, an image with the qcow2 magic is refused (QEMU
    /// would probe it as qcow2; vmkit reads raw images only).
    pub fn open(&self) -> Result<RawFile> {
        let raw = RawFile::open(&self.file, self.raw_options())?;
        if self.format.is_none() && crate::BlockBackend::size(&raw) >= 4 {
            let mut magic = [0u8; 4];
            crate::BlockBackend::read_at(&raw, &mut magic, 0)?;
            if magic == QCOW2_MAGIC {
                return Err(Error::Format {
                    format: "qcow2".into(),
                    path: Some(self.file.clone()),
                });
            }
        }
        Ok(raw)
    }
}

impl FromStr for DriveSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DriveSpec::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_are_escaped_by_doubling() {
        let d = DriveSpec::parse("file=a,,b.img,if=virtio").unwrap();
        assert_eq!(d.file, PathBuf::from("a,b.img"));
        assert_eq!(d.interface, DriveInterface::Virtio);
        assert_eq!(d.id, None);
        assert_eq!(d.cache, CacheMode::Writeback);
        assert_eq!(d.discard, DiscardMode::Ignore);
    }

    #[test]
    fn cache_modes_map_to_qemus_flags() {
        let flags = |m: CacheMode| (m.writeback(), m.direct(), m.no_flush());
        assert_eq!(flags(CacheMode::Writeback), (true, false, false));
        assert_eq!(flags(CacheMode::None), (true, true, false));
        assert_eq!(flags(CacheMode::Writethrough), (false, false, false));
        assert_eq!(flags(CacheMode::DirectSync), (false, true, false));
        assert_eq!(flags(CacheMode::Unsafe), (true, false, true));
        for (name, mode) in CacheMode::ALL {
            assert_eq!(name.parse::<CacheMode>().unwrap(), mode);
            assert_eq!(mode.to_string(), name);
        }
    }

    #[test]
    fn errors_name_the_option_and_value() {
        for (text, needles) in [
            (
                "file=x,if=virtio,cache=fast",
                &["cache", "fast", "writeback"][..],
            ),
            (
                "file=x,if=virtio,discard=maybe",
                &["discard", "maybe", "unmap"],
            ),
            (
                "file=x,if=virtio,readonly=perhaps",
                &["readonly", "perhaps"],
            ),
            ("file=x,if=ide", &["if", "ide", "virtio"]),
            ("file=x", &["if", "ide", "if=virtio"]),
            ("if=virtio", &["file="]),
            ("file=x,if=virtio,format=qcow2", &["qcow2", "raw"]),
            ("file=x,if=virtio,format=vmdk", &["vmdk", "raw"]),
            ("file=x,if=virtio,aio=native", &["aio", "native", "threads"]),
            ("file=x,if=virtio,snapshot=on", &["snapshot", "unknown"]),
            ("file=x,if=none,id=0bad", &["id", "0bad"]),
            ("file=x,if=none,media=cdrom", &["media", "cdrom"]),
            ("file=x,if=none,junk", &["junk", "key=value"]),
        ] {
            let err = DriveSpec::parse(text).unwrap_err().to_string();
            for needle in needles {
                assert!(err.contains(needle), "{text}: '{needle}' not in: {err}");
            }
        }
    }
}
