//! The block backend trait and its two implementations: the raw image file (QEMU's
//! `file` protocol driver with `format=raw`) and an in-memory disk for tests and benches.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use crate::drive::{CacheMode, DiscardMode};
use crate::{Error, Result};

/// Bytes in one sector, the unit of virtio-blk addresses (and of QEMU's block layer).
pub const SECTOR_SIZE: u64 = 512;

/// Memory alignment of the bounce buffers used with `O_DIRECT` (a page: enough for every
/// Linux filesystem and block device).
pub const DIRECT_MEMORY_ALIGN: usize = 4096;

/// Largest piece a zero-writing fallback writes at once.
const ZERO_CHUNK: usize = 1 << 20;

/// Random-access storage behind a block device.
///
/// Methods take `&self`: a backend is shared by the worker threads that run requests
/// (positional I/O needs no seek position). Every access is checked against
/// [`size`](Self::size); a read-only backend refuses writes, discards and zero writes.
pub trait BlockBackend: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;

    /// Whether writes are refused (`readonly=on`).
    fn is_read_only(&self) -> bool;

    /// Fills `buf` from `offset`; the whole range must lie within the size.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;

    /// Writes `buf` at `offset`; the whole range must lie within the size. With the write
    /// cache off ([`write_cache`](Self::write_cache)) the data is on stable storage when
    /// this returns (QEMU's writethrough: a flush after each write).
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;

    /// Makes every completed write stable (`fdatasync`); a no-op under `cache=unsafe`.
    fn flush(&self) -> Result<()>;

    /// Tells the backend that `len` bytes at `offset` are no longer needed. Under
    /// `discard=ignore` it does nothing and succeeds (as QEMU); under `discard=unmap` the
    /// range is deallocated and reads back as zeros.
    fn discard(&self, offset: u64, len: u64) -> Result<()>;

    /// Writes zeros over `len` bytes at `offset`; with `may_unmap` the backend may
    /// deallocate the range instead (when discards are honoured).
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        let _ = may_unmap;
        check_range("write-zeroes", offset, len, self.size())?;
        let zeros = vec![0u8; ZERO_CHUNK.min(usize::try_from(len).unwrap_or(ZERO_CHUNK))];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Whether the write cache is on (writes may sit in a volatile cache until a flush).
    /// QEMU's `cache.writeback`; a virtio-blk driver reads it as `writeback` and may change
    /// it. Default: on.
    fn write_cache(&self) -> bool {
        true
    }

    /// Turns the write cache on or off (off: every write is followed by a flush).
    /// Default: ignored.
    fn set_write_cache(&self, on: bool) {
        let _ = on;
    }
}

impl<T: BlockBackend + ?Sized> BlockBackend for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }
    fn is_read_only(&self) -> bool {
        (**self).is_read_only()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        (**self).write_at(buf, offset)
    }
    fn flush(&self) -> Result<()> {
        (**self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        (**self).discard(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        (**self).write_zeroes(offset, len, may_unmap)
    }
    fn write_cache(&self) -> bool {
        (**self).write_cache()
    }
    fn set_write_cache(&self, on: bool) {
        (**self).set_write_cache(on)
    }
}

/// Checks that `len` bytes at `offset` lie within `size`.
pub fn check_range(op: &'static str, offset: u64, len: u64, size: u64) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfRange {
            op,
            offset,
            len,
            size,
        }),
    }
}

/// How a [`RawFile`] is opened: QEMU's `readonly=`, `cache=` and `discard=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawOptions {
    /// `readonly=on`: opened `O_RDONLY`, writes refused.
    pub read_only: bool,
    /// `cache=`.
    pub cache: CacheMode,
    /// `discard=`.
    pub discard: DiscardMode,
}

/// A raw disk image (or block device) file, as QEMU's `file` driver with `format=raw`.
///
/// - `cache=none` and `directsync` open it with `O_DIRECT`: every transfer goes through a
///   bounce buffer aligned to [`DIRECT_MEMORY_ALIGN`] covering whole blocks of the
///   probed request alignment (512 or 4096 bytes), with read-modify-write at unaligned
///   edges; the file's size must be a multiple of that alignment.
/// - The write cache is on for `none`, `writeback` and `unsafe`, off for `writethrough`
///   and `directsync` (each write then ends with `fdatasync`).
/// - [`flush`](BlockBackend::flush) is `fdatasync`, except under `unsafe`.
/// - `discard=unmap` punches holes (`fallocate(PUNCH_HOLE | KEEP_SIZE)`); a filesystem
///   without hole punching makes discard a successful no-op, as in QEMU.
/// - Dropping the file flushes it, as QEMU flushes every drive when it closes.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    size: u64,
    options: RawOptions,
    write_cache: AtomicBool,
    /// Request alignment under O_DIRECT (1 without it).
    align: u64,
    punch_supported: AtomicBool,
}

impl RawFile {
    /// Opens `path` with `options`. A missing file, an unsupported `O_DIRECT`, or a size
    /// that is not a multiple of the `O_DIRECT` alignment is an error naming the file.
    pub fn open(path: impl AsRef<Path>, options: RawOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut open = OpenOptions::new();
        open.read(true).write(!options.read_only);
        if options.cache.direct() {
            open.custom_flags(libc::O_DIRECT);
        }
        let file = open.open(&path).map_err(|source| {
            if options.cache.direct() && source.raw_os_error() == Some(libc::EINVAL) {
                Error::DirectUnsupported {
                    path: path.clone(),
                    cache: options.cache,
                    source,
                }
            } else {
                Error::Open {
                    path: path.clone(),
                    source,
                }
            }
        })?;
        let meta = file.metadata().map_err(|source| Error::Io {
            op: "stat",
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            return Err(Error::Open {
                path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "is a directory"),
            });
        }
        // A block device's size is where its end is.
        let size = if meta.file_type().is_file() {
            meta.len()
        } else {
            use std::io::Seek;
            (&file)
                .seek(io::SeekFrom::End(0))
                .map_err(|source| Error::Io {
                    op: "seek to the end",
                    path: path.clone(),
                    source,
                })?
        };
        let mut raw = RawFile {
            file,
            path,
            size,
            options,
            write_cache: AtomicBool::new(options.cache.writeback()),
            align: 1,
            punch_supported: AtomicBool::new(true),
        };
        if options.cache.direct() {
            raw.align = raw.probe_direct_alignment()?;
            if raw.size % raw.align != 0 {
                return Err(Error::Unaligned {
                    path: raw.path.clone(),
                    size: raw.size,
                    align: raw.align,
                    cache: options.cache,
                });
            }
        }
        Ok(raw)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The options it was opened with.
    pub fn options(&self) -> RawOptions {
        self.options
    }

    /// The request alignment in force: 1 without `O_DIRECT`, else 512 or 4096.
    pub fn alignment(&self) -> u64 {
        self.align
    }

    /// As QEMU's raw_probe_alignment: the smallest of 512 and 4096 an `O_DIRECT` read
    /// accepts.
    fn probe_direct_alignment(&self) -> Result<u64> {
        let mut bounce = AlignedBuf::new(4096);
        for align in [512u64, 4096] {
            match self.file.read_at(&mut bounce.as_mut()[..align as usize], 0) {
                Ok(_) => return Ok(align),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => continue,
                Err(source) => {
                    return Err(Error::Io {
                        op: "probe the O_DIRECT alignment of",
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
        Err(Error::DirectUnsupported {
            path: self.path.clone(),
            cache: self.options.cache,
            source: io::Error::from_raw_os_error(libc::EINVAL),
        })
    }

    fn io_error(&self, op: &'static str) -> impl FnOnce(io::Error) -> Error + '_ {
        move |source| Error::Io {
            op,
            path: self.path.clone(),
            source,
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let mut done = 0usize;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                // The file shrank under us: what is past its end reads as zeros.
                Ok(0) => {
                    buf[done..].fill(0);
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error("read")(e)),
            }
        }
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(self.io_error("write"))
    }

    /// An O_DIRECT transfer of whole aligned blocks around `[offset, offset + len)`.
    fn aligned_span(&self, offset: u64, len: usize) -> (u64, usize) {
        let start = offset - offset % self.align;
        let end = offset + len as u64;
        let end = end.div_ceil(self.align) * self.align;
        (start, (end - start) as usize)
    }

    fn direct_read(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let (start, span) = self.aligned_span(offset, buf.len());
        let mut bounce = AlignedBuf::new(span);
        self.read_exact_at(bounce.as_mut(), start)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&bounce.as_mut()[skip..skip + buf.len()]);
        Ok(())
    }

    fn direct_write(&self, buf: &[u8], offset: u64) -> Result<()> {
        let (start, span) = self.aligned_span(offset, buf.len());
        let mut bounce = AlignedBuf::new(span);
        let skip = (offset - start) as usize;
        if skip != 0 || span != buf.len() {
            // Read-modify-write of the partial blocks at the edges (all of them, simply).
            self.read_exact_at(bounce.as_mut(), start)?;
        }
        bounce.as_mut()[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_all_at(bounce.as_mut(), start)
    }

    fn refuse_read_only(&self, op: &'static str) -> Result<()> {
        if self.options.read_only {
            Err(Error::ReadOnly {
                op,
                path: Some(self.path.clone()),
            })
        } else {
            Ok(())
        }
    }

    fn punch_hole(&self, offset: u64, len: u64) -> Result<bool> {
        if len == 0 || !self.punch_supported.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let (Ok(off), Ok(length)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Ok(false);
        };
        // SAFETY: fallocate on a file descriptor this struct owns and keeps open; the
        // arguments are plain integers and the call touches no memory of ours.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                length,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                self.punch_supported.store(false, Ordering::Relaxed);
                Ok(false)
            }
            _ => Err(self.io_error("punch a hole in")(err)),
        }
    }
}

impl BlockBackend for RawFile {
    fn size(&self) -> u64 {
        self.size
    }

    fn is_read_only(&self) -> bool {
        self.options.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len() as u64, self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.align > 1 {
            self.direct_read(buf, offset)
        } else {
            self.read_exact_at(buf, offset)
        }
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.refuse_read_only("write")?;
        check_range("write", offset, buf.len() as u64, self.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.align > 1 {
            self.direct_write(buf, offset)?;
        } else {
            self.write_all_at(buf, offset)?;
        }
        if !self.write_cache.load(Ordering::Acquire) {
            // Writethrough: QEMU's FUA emulation, a flush after the write.
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        if self.options.cache.no_flush() || self.options.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(self.io_error("fdatasync"))
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        self.refuse_read_only("discard")?;
        check_range("discard", offset, len, self.size)?;
        if self.options.discard == DiscardMode::Unmap {
            self.punch_hole(offset, len)?;
        }
        Ok(())
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool) -> Result<()> {
        self.refuse_read_only("write-zeroes")?;
        check_range("write-zeroes", offset, len, self.size)?;
        let aligned = offset % self.align == 0 && len % self.align == 0;
        if may_unmap && aligned && self.options.discard == DiscardMode::Unmap {
            // A punched hole reads back as zeros.
            if self.punch_hole(offset, len)? {
                if !self.write_cache.load(Ordering::Acquire) {
                    self.flush()?;
                }
                return Ok(());
            }
        }
        let chunk = ZERO_CHUNK.min(usize::try_from(len).unwrap_or(ZERO_CHUNK));
        let zeros = vec![0u8; chunk];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeros.len() as u64) as usize;
            self.write_at(&zeros[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn write_cache(&self) -> bool {
        self.write_cache.load(Ordering::Acquire)
    }

    fn set_write_cache(&self, on: bool) {
        self.write_cache.store(on, Ordering::Release);
    }
}

impl Drop for RawFile {
    fn drop(&mut self) {
        // QEMU flushes each drive as it closes it (bdrv_close); nothing written is lost
        // on quit even with the write cache on.
        let _ = self.flush();
    }
}

/// A byte buffer whose usable part starts at a [`DIRECT_MEMORY_ALIGN`] boundary, for
/// `O_DIRECT` transfers (over-allocated and offset: no unsafe code).
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + DIRECT_MEMORY_ALIGN];
        let addr = storage.as_ptr() as usize;
        let start = (DIRECT_MEMORY_ALIGN - addr % DIRECT_MEMORY_ALIGN) % DIRECT_MEMORY_ALIGN;
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A disk in host memory (for tests, benchmarks and scratch drives).
#[derive(Debug)]
pub struct MemoryBackend {
    data: RwLock<Vec<u8>>,
    read_only: bool,
    write_cache: AtomicBool,
    flushes: std::sync::atomic::AtomicU64,
}

impl MemoryBackend {
    /// A zero-filled disk of `size` bytes.
    pub fn new(size: usize) -> Self {
        Self::from_bytes(vec![0; size])
    }

    /// A disk holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        MemoryBackend {
            data: RwLock::new(bytes),
            read_only: false,
            write_cache: AtomicBool::new(true),
            flushes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Makes it read-only.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// A copy of the contents.
    pub fn contents(&self) -> Vec<u8> {
        self.data.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many flushes it has seen (explicit ones and writethrough ones).
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(Ordering::Acquire)
    }
}

impl BlockBackend for MemoryBackend {
    fn size(&self) -> u64 {
        self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        check_range("read", offset, buf.len() as u64, data.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&data[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                op: "write",
                path: None,
            });
        }
        {
            let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
            check_range("write", offset, buf.len() as u64, data.len() as u64)?;
            let start = offset as usize;
            data[start..start + buf.len()].copy_from_slice(buf);
        }
        if !self.write_cache() {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.flushes.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                op: "discard",
                path: None,
            });
        }
        check_range("discard", offset, len, self.size())
    }

    fn write_cache(&self) -> bool {
        self.write_cache.load(Ordering::Acquire)
    }

    fn set_write_cache(&self, on: bool) {
        self.write_cache.store(on, Ordering::Release);
    }
}
