//! Save, restore and migrate a running machine, as QEMU's `migrate` / `-incoming`.
//!
//! # The stream (version 1)
//!
//! ```text
//! header   "VMKITMIG" (8 bytes)  version: u32 LE (1)
//! section  kind: u8  length: u32 LE  payload: length bytes  crc32(kind, length, payload): u32 LE
//! ...
//! ```
//!
//! Sections, in the order a source writes them:
//!
//! | kind | name    | payload |
//! |------|---------|---------|
//! | 1    | config  | JSON `{"ram-size", "smp", "irqchip"}`; the destination must match |
//! | 2    | ram     | repeated `gpa: u64 LE` + 4096 bytes: the non-zero pages (zero pages are skipped); during pre-copy a page may come again (the later copy wins) |
//! | 3    | devices | JSON array of `VmStateSection`s, one per object path (vmkit-object) |
//! | 4    | kvm-vm  | JSON `vmkit_kvm::state::VmState` (irqchip, PIT2, KVM clock) |
//! | 5    | vcpu    | JSON `vmkit_kvm::state::VcpuState`, one section per vCPU |
//! | 6    | shadow  | repeated `offset: u64 LE` + 4096 bytes: non-zero pages of `pc.ram` at 0xC0000-0xFFFFF (the shadow RAM behind the PAM segments) |
//! | 255  | end     | empty |
//!
//! A section is at most [`MAX_SECTION`] bytes. A stream with another magic, another version,
//! a bad checksum, an unknown section kind or no end section is refused with an error that
//! says which; the destination applies device and vCPU state only after the end section
//! arrived intact, and it never runs a guest whose load failed (it ends with the error).
//! RAM of a running guest goes by pre-copy: with KVM's dirty log on `pc.ram`
//! (`KVM_MEM_LOG_DIRTY_PAGES`, read with `KVM_GET_DIRTY_LOG` through the memory listener)
//! the whole RAM is sent while the guest runs, then the pages it dirtied, round after
//! round, until what is left would go within `downtime-limit` at the measured bandwidth;
//! then the guest stops and the rest goes with the device and vCPU state. Virtio devices
//! are paused from the start (their writes to guest RAM are not in KVM's log; requests
//! wait in their rings), and pages vmkit writes for the guest (finished instructions) are
//! noted separately. A paused guest goes by stop-and-copy. The stream is paced to
//! `max-bandwidth`. The source stays paused afterwards (`postmigrate`); on any failure
//! it resumes.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use vm_memory::{Bytes, GuestAddress, GuestAddressSpace, GuestMemoryBackend};
use vmkit_kvm::state::{StateContext, VcpuState, VmState};
use vmkit_kvm::Vm;
use vmkit_object::{VmStateHandler, VmStateRegistry, VmStateSection};
use vmkit_qmp::{QmpEvent, QmpEventSender};

use crate::control::{Controller, ExitReason, RunState};
use crate::error::{Error, Result};

/// The stream's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"VMKITMIG";
/// The stream version this build writes and reads.
pub const STREAM_VERSION: u32 = 1;
/// The largest section accepted.
pub const MAX_SECTION: u32 = 16 << 20;

/// Section kind: the machine's configuration (JSON).
pub const SECTION_CONFIG: u8 = 1;
/// Section kind: RAM pages (`gpa: u64 LE` + 4096 bytes each).
pub const SECTION_RAM: u8 = 2;
/// Section kind: device state (JSON array of `VmStateSection`s).
pub const SECTION_DEVICES: u8 = 3;
/// Section kind: KVM VM state (JSON).
pub const SECTION_KVM_VM: u8 = 4;
/// Section kind: one vCPU's state (JSON).
pub const SECTION_VCPU: u8 = 5;
/// Section kind: shadow RAM pages (`offset: u64 LE` in 0xC0000-0xFFFFF + 4096 bytes each).
pub const SECTION_SHADOW: u8 = 6;
/// Section kind: the end (empty).
pub const SECTION_END: u8 = 255;

/// `pc.ram` offsets behind the PAM segments (0xC0000-0xFFFFF): shadow RAM, reached only
/// through the i440FX's aliases, outside every RAM range.
const SHADOW: std::ops::Range<u64> = 0xc_0000..0x10_0000;
/// Marks a pending page as a shadow-RAM offset rather than a guest address.
const SHADOW_FLAG: u64 = 1 << 63;

const PAGE: usize = 4096;
/// Compared with `==` (memcmp, fast even in debug builds).
static ZERO_PAGE: [u8; PAGE] = [0; PAGE];
/// Pages per RAM section.
const PAGES_PER_SECTION: usize = 256;

fn fail(text: impl Into<String>) -> Error {
    Error::Machine(format!("migration: {}", text.into()))
}

/// Where a migration goes or comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationUri {
    /// `-incoming defer`: wait for `migrate-incoming`.
    Defer,
    /// `file:PATH`.
    File(PathBuf),
    /// `unix:PATH`: the destination listens, the source connects.
    Unix(PathBuf),
    /// `tcp:HOST:PORT`: the destination listens, the source connects.
    Tcp(String),
    /// `exec:CMD`: the source writes the stream to the command's stdin, the destination
    /// reads it from the command's stdout (`sh -c CMD`).
    Exec(String),
}

impl MigrationUri {
    /// Parses QEMU's URI syntax; `tcp:` and `exec:` are named as not supported yet.
    pub fn parse(text: &str) -> Result<Self> {
        if text == "defer" {
            return Ok(Self::Defer);
        }
        let (scheme, rest) = text.split_once(':').unwrap_or((text, ""));
        match scheme {
            "file" | "unix" if rest.is_empty() => {
                Err(fail(format!("'{text}': {scheme}: needs a path")))
            }
            "file" => Ok(Self::File(rest.into())),
            "unix" => Ok(Self::Unix(rest.into())),
            "tcp" if !rest.contains(':') => Err(fail(format!("'{text}': tcp: needs HOST:PORT"))),
            "tcp" => Ok(Self::Tcp(rest.to_string())),
            "exec" if rest.is_empty() => Err(fail(format!("'{text}': exec: needs a command"))),
            "exec" => Ok(Self::Exec(rest.to_string())),
            "fd" | "rdma" => Err(fail(format!(
                "'{text}': the {scheme}: transport is not supported yet (use file:, unix:, \
                 tcp: or exec:)"
            ))),
            _ => Err(fail(format!(
                "'{text}': unknown migration protocol (use file:PATH, unix:PATH, \
                 tcp:HOST:PORT or exec:CMD)"
            ))),
        }
    }
}

/// Most pre-copy rounds after the first full pass before the guest is stopped anyway.
pub const MAX_PRECOPY_ROUNDS: u64 = 30;

fn io_fail(e: std::io::Error) -> Error {
    fail(format!("writing the stream: {e}"))
}

/// `count` per `elapsed`, per second (`count` itself for no measurable time).
fn rate(count: u64, elapsed: std::time::Duration) -> u64 {
    let us = elapsed.as_micros().max(1);
    u64::try_from(u128::from(count) * 1_000_000 / us).unwrap_or(u64::MAX)
}

/// Guest pages vmkit itself wrote for the guest (instructions the emulate module
/// finished, a debugger's writes) while a pre-copy runs: KVM's dirty log sees only the
/// guest's own writes. `None` while no pre-copy runs.
static VMM_WRITES: Mutex<Option<Vec<u64>>> = Mutex::new(None);

/// Notes that vmkit wrote `len` bytes of guest memory at `gpa` (for pre-copy).
pub(crate) fn note_vmm_write(gpa: u64, len: usize) {
    if let Some(pages) = lock(&VMM_WRITES).as_mut() {
        let first = gpa / PAGE as u64;
        let last = (gpa + len.max(1) as u64 - 1) / PAGE as u64;
        pages.extend((first..=last).map(|p| p * PAGE as u64));
    }
}

fn set_vmm_write_log(on: bool) {
    *lock(&VMM_WRITES) = on.then(Vec::new);
}

fn take_vmm_writes() -> Vec<u64> {
    lock(&VMM_WRITES)
        .as_mut()
        .map(std::mem::take)
        .unwrap_or_default()
}

/// QEMU's default `downtime-limit` (ms).
pub const DEFAULT_DOWNTIME_LIMIT_MS: u64 = 300;
/// QEMU's default `max-bandwidth` (bytes/s: 128 MiB/s).
pub const DEFAULT_MAX_BANDWIDTH: u64 = 128 << 20;
/// QEMU's largest `downtime-limit` (`MAX_MIGRATE_DOWNTIME`, 2000 s in ms).
pub const MAX_DOWNTIME_LIMIT_MS: u64 = 2000 * 1000;

/// A writer that keeps the stream at or under `rate` bytes per second (read at every
/// write, so a new `max-bandwidth` applies to a migration under way, as in QEMU): after
/// each piece of at most 64 KiB it sleeps until the bytes so far are due. A rate of 0
/// sends nothing (QEMU's `max-bandwidth` 0 stalls the migration as well).
struct Throttled<W> {
    inner: W,
    rate: Arc<std::sync::atomic::AtomicU64>,
    start: Instant,
    /// Bytes accounted since `start` (restarted when the rate changes).
    sent: u64,
    at_rate: u64,
    cancel: Arc<AtomicBool>,
}

impl<W: Write> Throttled<W> {
    fn new(inner: W, rate: Arc<std::sync::atomic::AtomicU64>, cancel: Arc<AtomicBool>) -> Self {
        let at_rate = rate.load(Ordering::Relaxed);
        Self {
            inner,
            rate,
            start: Instant::now(),
            sent: 0,
            at_rate,
            cancel,
        }
    }

    /// Sleeps until `sent` bytes are due at the current rate.
    fn pace(&mut self) -> std::io::Result<()> {
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("migration cancelled"));
            }
            let rate = self.rate.load(Ordering::Relaxed);
            if rate != self.at_rate {
                self.at_rate = rate;
                self.start = Instant::now();
                self.sent = 0;
            }
            if rate == 0 {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let due = std::time::Duration::from_secs_f64(self.sent as f64 / rate as f64);
            let elapsed = self.start.elapsed();
            if elapsed >= due {
                return Ok(());
            }
            // Short sleeps: a rate change or a cancel is seen within 50 ms.
            std::thread::sleep((due - elapsed).min(std::time::Duration::from_millis(50)));
        }
    }
}

impl<W: Write> Write for Throttled<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pace()?;
        let n = self.inner.write(&buf[..buf.len().min(64 << 10)])?;
        self.sent += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes sections with their checksums, counting bytes.
struct SectionWriter<W: Write> {
    out: W,
    bytes: u64,
}

impl<W: Write> SectionWriter<W> {
    fn header(&mut self) -> std::io::Result<()> {
        self.out.write_all(MAGIC)?;
        self.out.write_all(&STREAM_VERSION.to_le_bytes())?;
        self.bytes += 12;
        Ok(())
    }

    fn section(&mut self, kind: u8, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[kind]);
        crc.update(&len.to_le_bytes());
        crc.update(payload);
        self.out.write_all(&[kind])?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(payload)?;
        self.out.write_all(&crc.finalize().to_le_bytes())?;
        self.bytes += 9 + u64::from(len);
        Ok(())
    }
}

/// Reads and checks one section; `None` at a clean end of input before any byte of it.
fn read_section(input: &mut impl Read, index: usize) -> Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match input.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => {
                return Err(fail(format!(
                    "stream truncated in the header of section {index}"
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(format!("reading section {index}: {e}"))),
        }
    }
    let kind = head[0];
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_SECTION {
        return Err(fail(format!(
            "section {index} (kind {kind}) claims {len} bytes, over the {MAX_SECTION}-byte limit: \
             a corrupt stream"
        )));
    }
    let mut payload = vec![0u8; len as usize + 4];
    input.read_exact(&mut payload).map_err(|e| {
        fail(format!(
            "stream truncated in section {index} (kind {kind}, {len} bytes): {e}"
        ))
    })?;
    let stored = u32::from_le_bytes(payload[len as usize..].try_into().unwrap_or([0; 4]));
    payload.truncate(len as usize);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind]);
    crc.update(&len.to_le_bytes());
    crc.update(&payload);
    let computed = crc.finalize();
    if computed != stored {
        return Err(fail(format!(
            "section {index} (kind {kind}) fails its checksum (crc32 {computed:#010x}, stream \
             says {stored:#010x}): a corrupt stream"
        )));
    }
    Ok(Some((kind, payload)))
}

/// The machine state a stream carries besides RAM (see [`decode_stream`]).
#[derive(Debug)]
pub struct DecodedStream {
    /// The devices section.
    pub devices: Vec<VmStateSection>,
    /// The KVM VM section.
    pub vm: VmState,
    /// The vCPU sections, in order.
    pub vcpus: Vec<VcpuState>,
}

/// Where a page of the stream goes (see [`decode_stream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageTarget {
    /// Guest RAM at this guest-physical address.
    Ram(u64),
    /// Shadow RAM behind the PAM segments, at this page-aligned `pc.ram` offset in
    /// 0xC0000-0xFFFFF.
    Shadow(u64),
}

/// Reads and checks a whole stream (header, each section's length limit and checksum,
/// the section order, every JSON payload, shadow-RAM offsets) up to its end section.
/// `on_config` gets the config section (first, before anything else is accepted);
/// `on_page` each RAM or shadow-RAM page (where it goes, its 4096 bytes) as it arrives, so
/// RAM is never held whole. The first error, theirs or the stream's, ends the read.
pub fn decode_stream(
    mut input: impl Read,
    mut on_config: impl FnMut(&Value) -> Result<()>,
    mut on_page: impl FnMut(PageTarget, &[u8]) -> Result<()>,
) -> Result<DecodedStream> {
    let mut header = [0u8; 12];
    input
        .read_exact(&mut header)
        .map_err(|e| fail(format!("stream too short for its header: {e}")))?;
    if &header[..8] != MAGIC {
        return Err(fail(format!(
            "not a vmkit migration stream (magic {:02x?}, expected \"VMKITMIG\")",
            &header[..8]
        )));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != STREAM_VERSION {
        return Err(fail(format!(
            "stream version {version} is not supported (this build reads version \
             {STREAM_VERSION})"
        )));
    }
    let mut devices: Option<Vec<VmStateSection>> = None;
    let mut vm: Option<VmState> = None;
    let mut vcpus: Vec<VcpuState> = Vec::new();
    let mut index = 0;
    let mut configured = false;
    loop {
        let Some((kind, payload)) = read_section(&mut input, index)? else {
            return Err(fail(format!(
                "stream ends after section {index} without its end section (truncated)"
            )));
        };
        index += 1;
        if kind != SECTION_CONFIG && !configured {
            return Err(fail("the stream does not start with its config section"));
        }
        match kind {
            SECTION_CONFIG => {
                let theirs: Value = serde_json::from_slice(&payload)
                    .map_err(|e| fail(format!("config section: {e}")))?;
                on_config(&theirs)?;
                configured = true;
            }
            SECTION_RAM => {
                if payload.len() % (PAGE + 8) != 0 {
                    return Err(fail(format!(
                        "RAM section {index} has {} bytes, not whole pages",
                        payload.len()
                    )));
                }
                for page in payload.chunks(PAGE + 8) {
                    let gpa = u64::from_le_bytes(page[..8].try_into().unwrap_or([0; 8]));
                    on_page(PageTarget::Ram(gpa), &page[8..])?;
                }
            }
            SECTION_SHADOW => {
                if payload.len() % (PAGE + 8) != 0 {
                    return Err(fail(format!(
                        "shadow RAM section {index} has {} bytes, not whole pages",
                        payload.len()
                    )));
                }
                for page in payload.chunks(PAGE + 8) {
                    let offset = u64::from_le_bytes(page[..8].try_into().unwrap_or([0; 8]));
                    if !SHADOW.contains(&offset) || offset % PAGE as u64 != 0 {
                        return Err(fail(format!(
                            "shadow RAM page at {offset:#x} is outside 0xc0000-0xfffff"
                        )));
                    }
                    on_page(PageTarget::Shadow(offset), &page[8..])?;
                }
            }
            SECTION_DEVICES => {
                devices = Some(
                    serde_json::from_slice(&payload)
                        .map_err(|e| fail(format!("devices section: {e}")))?,
                );
            }
            SECTION_KVM_VM => {
                vm = Some(
                    serde_json::from_slice(&payload)
                        .map_err(|e| fail(format!("KVM VM section: {e}")))?,
                );
            }
            SECTION_VCPU => vcpus.push(
                serde_json::from_slice(&payload)
                    .map_err(|e| fail(format!("vCPU section {}: {e}", vcpus.len())))?,
            ),
            SECTION_END => break,
            other => {
                return Err(fail(format!(
                    "unknown section kind {other} (section {index})"
                )))
            }
        }
    }
    Ok(DecodedStream {
        devices: devices.ok_or_else(|| fail("the stream has no devices section"))?,
        vm: vm.ok_or_else(|| fail("the stream has no KVM VM section"))?,
        vcpus,
    })
}

/// Writes a stream of the given sections (kind, payload) after the header, each with its
/// checksum: for tests and fuzz seeds (a real source writes with [`MachineMigration::save`]).
pub fn encode_sections(sections: &[(u8, &[u8])]) -> Vec<u8> {
    let mut w = SectionWriter {
        out: Vec::new(),
        bytes: 0,
    };
    let _ = w.header();
    for &(kind, payload) in sections {
        let _ = w.section(kind, payload);
    }
    w.out
}

/// What `query-migrate` reports.
#[derive(Debug, Clone, Default)]
pub struct MigrationInfo {
    /// QEMU's status: none, setup, active, completed, failed, cancelled.
    pub status: String,
    /// Milliseconds from start to end (or to now while active).
    pub total_time_ms: u64,
    /// Milliseconds the guest was stopped.
    pub downtime_ms: Option<u64>,
    /// RAM bytes sent (the non-zero pages).
    pub ram_transferred: u64,
    /// Pages sent.
    pub ram_pages: u64,
    /// Zero pages skipped.
    pub zero_pages: u64,
    /// RAM size.
    pub ram_total: u64,
    /// The whole stream's size.
    pub stream_bytes: u64,
    /// CRC-32 of the whole RAM as sent (source) or as loaded (destination).
    pub ram_crc32: Option<u32>,
    /// RAM bytes still to send (the dirty pages of the last sync, during pre-copy).
    pub ram_remaining: u64,
    /// Dirty-log syncs so far (1 for a stop-and-copy).
    pub dirty_sync_count: u64,
    /// Pages per second the guest dirtied during pre-copy (pages found dirty at the syncs
    /// over the time dirty logging was on).
    pub dirty_pages_rate: u64,
    /// What the downtime would be if the guest stopped now (ms), during pre-copy.
    pub expected_downtime_ms: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl MigrationInfo {
    /// The JSON `query-migrate` returns.
    pub fn to_json(&self) -> Value {
        if self.status.is_empty() {
            return json!({});
        }
        let mut v = json!({ "status": self.status });
        if self.status != "setup" {
            v["total-time"] = json!(self.total_time_ms);
            v["ram"] = json!({
                "transferred": self.ram_transferred,
                "total": self.ram_total,
                "remaining": self.ram_remaining,
                "duplicate": self.zero_pages,
                "normal": self.ram_pages,
                "normal-bytes": self.ram_transferred,
                "dirty-sync-count": self.dirty_sync_count.max(1),
                "dirty-pages-rate": self.dirty_pages_rate,
            });
            if self.status == "active" {
                if let Some(e) = self.expected_downtime_ms {
                    v["expected-downtime"] = json!(e);
                }
            }
        }
        if let Some(d) = self.downtime_ms {
            v["downtime"] = json!(d);
        }
        if let Some(e) = &self.error {
            v["error-desc"] = json!(e);
        }
        if let Some(crc) = self.ram_crc32 {
            v["x-vmkit-ram-crc32"] = json!(crc);
        }
        v
    }
}

/// A machine's migration endpoint: what is saved, where RAM is, and the status.
pub struct MachineMigration {
    controller: Arc<Controller>,
    vm: Arc<Vm>,
    memory: vm_memory::GuestMemoryAtomic<vmkit_memory::GuestMemoryView>,
    ram: Vec<(u64, u64)>,
    /// The RAM ranges with their offsets in `pc.ram` (dirty-log offsets to addresses).
    ram_map: Vec<vmkit_pc::RamRange>,
    /// The address space and the `pc.ram` region whose dirty log pre-copy reads.
    dirty_source: Option<(
        Arc<Mutex<vmkit_memory::AddressSpace>>,
        vmkit_memory::RegionId,
    )>,
    devices: Arc<VmStateRegistry>,
    after_restore: Box<dyn Fn() + Send + Sync>,
    /// The virtio functions: paused before RAM is read (their requests in flight land
    /// first), started again after a failed migration, a `cont`, or a load.
    virtio: Vec<(String, vmkit_pc::pci_devices::SharedVirtioPci)>,
    /// The drives, flushed once the stream is out (QEMU's `bdrv_flush_all` at the end of
    /// a migration), so a destination on another host's view of the file sees every write.
    drives: Vec<vmkit_block::BlkShutdown>,
    kvm_state: StateContext,
    kernel_irqchip: bool,
    config: Value,
    info: Mutex<MigrationInfo>,
    events: Mutex<Option<QmpEventSender>>,
    incoming: AtomicBool,
    migrated: AtomicBool,
    busy: AtomicBool,
    stay_paused: AtomicBool,
    /// `downtime-limit`, ms.
    downtime_limit: std::sync::atomic::AtomicU64,
    /// `max-bandwidth`, bytes/s (shared with the stream's [`Throttled`] writer).
    max_bandwidth: Arc<std::sync::atomic::AtomicU64>,
    /// `migrate_cancel` asked the outgoing stream to stop.
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for MachineMigration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineMigration")
            .field("config", &self.config)
            .field("devices", &self.devices)
            .finish_non_exhaustive()
    }
}

/// A device state handler from two closures.
struct FnHandler<S, L> {
    save: S,
    load: L,
}

impl<S, L> VmStateHandler for FnHandler<S, L>
where
    S: Fn() -> std::result::Result<Value, String> + Send + Sync,
    L: Fn(&Value) -> std::result::Result<(), String> + Send + Sync,
{
    fn save(&self) -> std::result::Result<Value, String> {
        (self.save)()
    }
    fn load(&self, state: &Value) -> std::result::Result<(), String> {
        (self.load)(state)
    }
}

/// Registers the state of the `pc` machine's userspace devices (UARTs, and with
/// `-irqchip user` the 8259A pair and the 8254) under their object paths.
pub fn register_pc_devices(machine: &vmkit_pc::PcMachine) -> Result<Arc<VmStateRegistry>> {
    let registry = Arc::new(VmStateRegistry::new());
    let reg_fail = |e: vmkit_object::Error| fail(e.to_string());
    for object in &machine.isa.serial {
        let Ok(handle) = vmkit_isa::serial_handle(object) else {
            continue;
        };
        let path = object
            .path()
            .unwrap_or_else(|| format!("/machine/{}", object.describe()));
        let model = Arc::clone(handle.model());
        let model2 = Arc::clone(&model);
        let timers = machine.timers.clone();
        registry
            .register(
                &path,
                "serial",
                vmkit_serial_version(),
                Arc::new(FnHandler {
                    save: move || {
                        serde_json::to_value(lock(&model).state()).map_err(|e| e.to_string())
                    },
                    load: move |v: &Value| {
                        let state = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                        let deadline = {
                            let mut uart = lock(&model2);
                            uart.restore(&state).map_err(|e| e.to_string())?;
                            uart.next_deadline_ns()
                        };
                        timers.deadline_changed(deadline);
                        Ok(())
                    },
                }),
            )
            .map_err(reg_fail)?;
    }
    if let Some(pic) = &machine.pic {
        let path = machine
            .isa
            .pic
            .as_ref()
            .and_then(|o| o.path())
            .unwrap_or_else(|| "/machine/pic".into());
        let (a, b) = (Arc::clone(pic), Arc::clone(pic));
        registry
            .register(
                &path,
                "i8259",
                1,
                Arc::new(FnHandler {
                    save: move || serde_json::to_value(a.lock().state()).map_err(|e| e.to_string()),
                    load: move |v: &Value| {
                        let state = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                        b.lock().restore(&state).map_err(|e| e.to_string())
                    },
                }),
            )
            .map_err(reg_fail)?;
    }
    if let Some(object) = &machine.isa.pit {
        if let Ok(pit) = vmkit_isa::pit_handle(object) {
            let path = object.path().unwrap_or_else(|| "/machine/pit".into());
            let pit2 = Arc::clone(&pit);
            let timers = machine.timers.clone();
            registry
                .register(
                    &path,
                    "i8254",
                    1,
                    Arc::new(FnHandler {
                        save: move || {
                            serde_json::to_value(lock(&pit).state()).map_err(|e| e.to_string())
                        },
                        load: move |v: &Value| {
                            let state =
                                serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                            let deadline = {
                                let mut pit = lock(&pit2);
                                pit.restore(&state).map_err(|e| e.to_string())?;
                                pit.next_rising_edge_ns()
                            };
                            timers.deadline_changed(deadline);
                            Ok(())
                        },
                    }),
                )
                .map_err(reg_fail)?;
        }
    }
    if let Ok(cmos) = vmkit_isa::cmos_handle(&machine.isa.rtc) {
        let path = machine
            .isa
            .rtc
            .path()
            .unwrap_or_else(|| "/machine/rtc".into());
        let cmos2 = Arc::clone(&cmos);
        registry
            .register(
                &path,
                "mc146818rtc",
                1,
                Arc::new(FnHandler {
                    save: move || {
                        serde_json::to_value(lock(&cmos).state()).map_err(|e| e.to_string())
                    },
                    load: move |v: &Value| {
                        let state = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                        lock(&cmos2).restore(&state).map_err(|e| e.to_string())
                    },
                }),
            )
            .map_err(reg_fail)?;
    }
    if let Ok(kbc) = vmkit_isa::i8042_handle(&machine.isa.i8042) {
        let path = machine
            .isa
            .i8042
            .path()
            .unwrap_or_else(|| "/machine/i8042".into());
        let kbc2 = Arc::clone(&kbc);
        registry
            .register(
                &path,
                "i8042",
                1,
                Arc::new(FnHandler {
                    save: move || {
                        serde_json::to_value(lock(&kbc).state()).map_err(|e| e.to_string())
                    },
                    load: move |v: &Value| {
                        let state = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                        lock(&kbc2).restore(&state).map_err(|e| e.to_string())
                    },
                }),
            )
            .map_err(reg_fail)?;
    }
    {
        let (a, b) = (
            Arc::clone(&machine.chipset.fw_cfg),
            Arc::clone(&machine.chipset.fw_cfg),
        );
        registry
            .register(
                "/machine/fw_cfg",
                "fw_cfg",
                1,
                Arc::new(FnHandler {
                    save: move || serde_json::to_value(lock(&a).state()).map_err(|e| e.to_string()),
                    load: move |v: &Value| {
                        let state = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                        lock(&b).restore(&state).map_err(|e| e.to_string())
                    },
                }),
            )
            .map_err(reg_fail)?;
    }
    if let Some(hpet) = &machine.hpet {
        let (a, b) = (Arc::clone(hpet), Arc::clone(hpet));
        let timers = machine.timers.clone();
        registry
            .register(
                "/machine/hpet",
                "hpet",
                vmkit_hpet_version(),
                Arc::new(FnHandler {
                    save: move || serde_json::to_value(lock(&a).state()).map_err(|e| e.to_string()),
                    load: move |v: &Value| {
                        let state = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                        lock(&b).restore(&state).map_err(|e| e.to_string())?;
                        timers.service();
                        Ok(())
                    },
                }),
            )
            .map_err(reg_fail)?;
    }
    register_pci(&registry, machine)?;
    Ok(registry)
}

/// After the PCI functions' states were restored: maps the BARs (and so the regions
/// ioeventfds hang on) as the restored registers decode them, as a guest's configuration
/// writes would. Map failures are reported on stderr.
pub fn map_restored_pci(pci: &vmkit_pci::PciBus) {
    pci.update_all_mappings();
    for error in pci.take_map_errors() {
        eprintln!("vmkit: after the load: {error}");
    }
}

/// Starts the restored virtio functions (after [`map_restored_pci`]): each device gets its
/// queues where they stood and its doorbells' ioeventfds; MSI-X routes and irqfds were set
/// as their states were restored.
pub fn start_restored_virtio(virtio: &[(String, vmkit_pc::pci_devices::SharedVirtioPci)]) {
    for (path, transport) in virtio {
        if let Err(e) = lock(transport).resume() {
            eprintln!("vmkit: {path}: cannot start the device again: {e}");
        }
    }
}

/// Registers `device`'s state at `path`: `save` and `load` run under its lock.
fn register_locked<T, S, E>(
    registry: &VmStateRegistry,
    path: &str,
    id: &str,
    version: u32,
    device: Arc<Mutex<T>>,
    save: impl Fn(&mut T) -> std::result::Result<S, E> + Send + Sync + 'static,
    load: impl Fn(&mut T, &S) -> std::result::Result<(), E> + Send + Sync + 'static,
) -> Result<()>
where
    T: Send + 'static,
    S: serde::Serialize + serde::de::DeserializeOwned,
    E: std::fmt::Display,
{
    let other = Arc::clone(&device);
    registry
        .register(
            path,
            id,
            version,
            Arc::new(FnHandler {
                save: move || {
                    let state = save(&mut lock(&device)).map_err(|e| e.to_string())?;
                    serde_json::to_value(state).map_err(|e| e.to_string())
                },
                load: move |v: &Value| {
                    let state: S = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
                    load(&mut lock(&other), &state).map_err(|e| e.to_string())
                },
            }),
        )
        .map_err(|e| fail(e.to_string()))
}

/// The chipset's PCI functions (i440FX with PAM/SMRAM, PIIX3 with its PIRQ routes, its IDE
/// function, PIIX4 PM with the PM timer), the configuration mechanism's latch, and every
/// virtio-pci function under its object path. BARs are mapped again and virtio devices
/// started by [`MachineMigration::load`]'s last step, once every state is in.
fn register_pci(registry: &VmStateRegistry, machine: &vmkit_pc::PcMachine) -> Result<()> {
    let chipset = &machine.chipset;
    register_locked(
        registry,
        "/machine/i440fx",
        "i440fx",
        vmkit_piix::I440FX_STATE_VERSION,
        Arc::clone(&chipset.i440fx),
        |d| Ok::<_, vmkit_pci::Error>(d.state()),
        |d, s| d.restore(s),
    )?;
    register_locked(
        registry,
        "/machine/i440fx/pci-conf",
        "pci-host",
        vmkit_pci::PCI_STATE_VERSION,
        Arc::clone(&chipset.host),
        |d| Ok::<_, vmkit_pci::Error>(d.state()),
        |d, s| d.restore(s),
    )?;
    register_locked(
        registry,
        "/machine/i440fx/pci.0/piix3",
        "piix3",
        vmkit_piix::PIIX3_STATE_VERSION,
        Arc::clone(&chipset.piix3),
        |d| Ok::<_, vmkit_pci::Error>(d.state()),
        |d, s| d.restore(s),
    )?;
    register_locked(
        registry,
        "/machine/i440fx/pci.0/piix3-ide",
        "piix3-ide",
        vmkit_piix::PIIX3_STATE_VERSION,
        Arc::clone(&chipset.ide),
        |d| Ok::<_, vmkit_pci::Error>(d.state()),
        |d, s| d.restore(s),
    )?;
    register_locked(
        registry,
        "/machine/i440fx/pci.0/piix4-pm",
        "piix4-pm",
        vmkit_piix::PM_STATE_VERSION,
        Arc::clone(&chipset.pm),
        |d| Ok::<_, vmkit_pci::Error>(d.state()),
        |d, s| d.restore(s),
    )?;
    for (path, transport) in vmkit_pc::pci_devices::virtio_transports(&machine.tree) {
        register_locked(
            registry,
            &path,
            "virtio-pci",
            vmkit_virtio::VIRTIO_PCI_STATE_VERSION,
            transport,
            |d| d.state(),
            |d, s| d.restore(s),
        )?;
    }
    Ok(())
}

fn vmkit_hpet_version() -> u32 {
    1
}

fn vmkit_serial_version() -> u32 {
    1
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MachineMigration {
    /// The migration endpoint of a built `pc` machine (before its parts go to the runtime).
    pub fn for_pc(
        kvm: &vmkit_kvm::KvmSystem,
        controller: Arc<Controller>,
        machine: &vmkit_pc::PcMachine,
        smp: usize,
        kernel_irqchip: bool,
    ) -> Result<Arc<Self>> {
        let devices = register_pc_devices(machine)?;
        let ram = machine
            .layout
            .ram_ranges()
            .iter()
            .map(|r| (r.guest_addr, r.size))
            .collect();
        let timers = machine.timers.clone();
        let virtio = vmkit_pc::pci_devices::virtio_transports(&machine.tree);
        let pci = machine.chipset.pci.clone();
        Ok(Arc::new(Self {
            controller,
            vm: Arc::clone(&machine.vm),
            memory: machine.guest_memory().clone(),
            ram,
            ram_map: machine.layout.ram_ranges(),
            dirty_source: Some((Arc::clone(&machine.memory), machine.ram_regions.ram)),
            devices,
            after_restore: Box::new(move || {
                timers.service();
                map_restored_pci(&pci);
            }),
            virtio,
            drives: vmkit_pc::pci_devices::block_shutdown_handles(&machine.tree),
            kvm_state: if kernel_irqchip {
                StateContext::new(kvm)?
            } else {
                StateContext::new(kvm)?.without_lapic()
            },
            kernel_irqchip,
            config: json!({
                "ram-size": machine.layout.ram_size(),
                "smp": smp,
                "irqchip": if kernel_irqchip { "kernel" } else { "user" },
            }),
            info: Mutex::new(MigrationInfo::default()),
            events: Mutex::new(None),
            incoming: AtomicBool::new(false),
            migrated: AtomicBool::new(false),
            busy: AtomicBool::new(false),
            stay_paused: AtomicBool::new(false),
            downtime_limit: std::sync::atomic::AtomicU64::new(DEFAULT_DOWNTIME_LIMIT_MS),
            max_bandwidth: Arc::new(std::sync::atomic::AtomicU64::new(DEFAULT_MAX_BANDWIDTH)),
            cancel: Arc::new(AtomicBool::new(false)),
        }))
    }

    /// `migrate-set-parameters`: `downtime-limit` (ms, at most 2000 s) and `max-bandwidth`
    /// (bytes/s); a value out of range is refused with QEMU's message and nothing changes.
    /// A new `max-bandwidth` applies to a migration under way too.
    pub fn set_parameters(
        &self,
        downtime_limit: Option<u64>,
        max_bandwidth: Option<u64>,
    ) -> std::result::Result<(), String> {
        if downtime_limit.is_some_and(|d| d > MAX_DOWNTIME_LIMIT_MS) {
            return Err(
                "Parameter 'downtime_limit' expects an integer in the range of 0 to \
                        (2000 * 1000) ms"
                    .into(),
            );
        }
        if let Some(d) = downtime_limit {
            self.downtime_limit.store(d, Ordering::SeqCst);
        }
        if let Some(b) = max_bandwidth {
            self.max_bandwidth.store(b, Ordering::SeqCst);
        }
        Ok(())
    }

    /// `migrate_cancel`: an outgoing migration under way stops at its next write (the
    /// status becomes `cancelled` and the guest runs on, as it was); nothing to do
    /// otherwise.
    pub fn cancel(&self) {
        if self.busy.load(Ordering::SeqCst) && !self.is_incoming() {
            self.cancel.store(true, Ordering::SeqCst);
        }
    }

    /// `query-migrate-parameters`: the parameters vmkit has, by QEMU's names.
    pub fn parameters(&self) -> Value {
        json!({
            "downtime-limit": self.downtime_limit.load(Ordering::SeqCst),
            "max-bandwidth": self.max_bandwidth.load(Ordering::SeqCst),
        })
    }

    /// After an incoming migration, stay paused (`-S`, as QEMU) instead of running.
    pub fn set_stay_paused(&self, paused: bool) {
        self.stay_paused.store(paused, Ordering::SeqCst);
    }

    /// Where MIGRATION events go.
    pub fn set_event_sender(&self, events: QmpEventSender) {
        *lock(&self.events) = Some(events);
    }

    /// The device state registry (add your own devices' handlers here).
    pub fn devices(&self) -> &Arc<VmStateRegistry> {
        &self.devices
    }

    /// `query-migrate`.
    pub fn info(&self) -> MigrationInfo {
        lock(&self.info).clone()
    }

    /// Waiting for an incoming migration (run state `inmigrate`).
    pub fn is_incoming(&self) -> bool {
        self.incoming.load(Ordering::SeqCst)
    }

    /// Migrated away and stopped (run state `postmigrate`).
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::SeqCst) && self.controller.state() == RunState::Paused
    }

    fn set_status(&self, status: &str) {
        lock(&self.info).status = status.to_string();
        if let Some(events) = lock(&self.events).as_ref() {
            let _ = events.send(QmpEvent::Custom {
                name: "MIGRATION".into(),
                data: Some(json!({ "status": status })),
            });
        }
    }

    /// Pauses every active virtio function: its requests in flight complete (in guest
    /// RAM and on the used rings) and its thread stops, so nothing writes guest RAM or a
    /// disk while the machine is saved. On error the ones already paused go on again.
    pub fn pause_devices(&self) -> Result<()> {
        for (i, (path, transport)) in self.virtio.iter().enumerate() {
            if let Err(e) = lock(transport).pause() {
                for (_, t) in &self.virtio[..i] {
                    let _ = lock(t).resume();
                }
                return Err(fail(format!("{path}: {e}")));
            }
        }
        Ok(())
    }

    /// Starts the virtio functions [`pause_devices`](Self::pause_devices) (or a load)
    /// left paused, with their queues where they stood; QMP `cont` calls it.
    pub fn resume_devices(&self) {
        start_restored_virtio(&self.virtio);
    }

    /// Writes the whole machine to `out`. The machine must be stopped. Active virtio
    /// devices are paused first ([`pause_devices`](Self::pause_devices)) and stay paused:
    /// [`resume_devices`](Self::resume_devices) starts them again.
    pub fn save(&self, out: impl Write) -> Result<MigrationInfo> {
        self.quiesce_io()?;
        let mut w = SectionWriter { out, bytes: 0 };
        let mut info = MigrationInfo::default();
        self.write_head(&mut w)?;
        self.send_all_ram(&mut w, &mut info)?;
        self.write_tail(&mut w, &mut info)?;
        Ok(info)
    }

    /// Pauses the virtio devices and flushes the drives: from here on nothing but the
    /// guest's vCPUs writes guest RAM or a disk.
    fn quiesce_io(&self) -> Result<()> {
        self.pause_devices()?;
        // Before the stream can end: a destination that loads it sees every write.
        for drive in &self.drives {
            // The I/O threads are stopped already (the devices are paused).
            drive
                .drain_and_flush()
                .map_err(|e| fail(format!("flushing a drive: {e}")))?;
        }
        Ok(())
    }

    fn write_head<W: Write>(&self, w: &mut SectionWriter<W>) -> Result<()> {
        w.header().map_err(io_fail)?;
        w.section(SECTION_CONFIG, self.config.to_string().as_bytes())
            .map_err(io_fail)
    }

    /// Every non-zero page of RAM (pages never faulted in are skipped unread).
    fn send_all_ram<W: Write>(
        &self,
        w: &mut SectionWriter<W>,
        info: &mut MigrationInfo,
    ) -> Result<()> {
        let memory = self.memory.memory();
        let mut chunk = vec![0u8; PAGE * PAGES_PER_SECTION];
        let mut payload = Vec::with_capacity((PAGE + 8) * PAGES_PER_SECTION);
        for &(base, size) in &self.ram {
            info.ram_total += size;
            let mut gpa = base;
            while gpa < base + size {
                let len = ((base + size - gpa) as usize).min(chunk.len());
                let resident = memory
                    .get_host_address(GuestAddress(gpa))
                    .ok()
                    .and_then(|host| vmkit_kvm::state::resident_pages(host, len));
                if let Some(resident) = &resident {
                    if !resident.iter().any(|&r| r) {
                        info.zero_pages += resident.len() as u64;
                        gpa += len as u64;
                        continue;
                    }
                }
                memory
                    .read_slice(&mut chunk[..len], GuestAddress(gpa))
                    .map_err(|e| fail(format!("reading guest RAM at {gpa:#x}: {e}")))?;
                payload.clear();
                for (i, page) in chunk[..len].chunks(PAGE).enumerate() {
                    let untouched = resident.as_ref().is_some_and(|r| !r[i]);
                    if untouched || page == ZERO_PAGE.as_slice() {
                        info.zero_pages += 1;
                        continue;
                    }
                    payload.extend_from_slice(&(gpa + (i * PAGE) as u64).to_le_bytes());
                    payload.extend_from_slice(page);
                    info.ram_pages += 1;
                    info.ram_transferred += page.len() as u64;
                }
                if !payload.is_empty() {
                    w.section(SECTION_RAM, &payload).map_err(io_fail)?;
                }
                gpa += len as u64;
            }
        }
        let shadow: Vec<u64> = self
            .shadow_pages()
            .filter(|&offset| {
                let mut page = [0u8; PAGE];
                self.read_shadow(offset, &mut page).is_ok() && page != ZERO_PAGE
            })
            .map(|offset| offset | SHADOW_FLAG)
            .collect();
        self.send_pages(w, &shadow, info)
    }

    /// The shadow-RAM page offsets this machine's `pc.ram` has.
    fn shadow_pages(&self) -> impl Iterator<Item = u64> + '_ {
        // `pc.ram` reaches past 1 MiB (RAM above the hole is mapped at its offset 1 MiB):
        // the PAM segments' backing is there.
        let size = self
            .ram_map
            .iter()
            .map(|r| r.ram_offset + r.size)
            .max()
            .unwrap_or(0);
        let end = if self.dirty_source.is_some() && size > SHADOW.end {
            SHADOW.end
        } else {
            SHADOW.start
        };
        (SHADOW.start..end).step_by(PAGE)
    }

    fn read_shadow(&self, offset: u64, page: &mut [u8; PAGE]) -> Result<()> {
        let Some((space, region)) = &self.dirty_source else {
            return Err(fail("this machine has no shadow RAM"));
        };
        lock(space)
            .read_region(*region, offset, page)
            .map_err(|e| fail(format!("reading shadow RAM at {offset:#x}: {e}")))
    }

    fn write_shadow(&self, offset: u64, page: &[u8]) -> Result<()> {
        let Some((space, region)) = &self.dirty_source else {
            return Err(fail("this machine has no shadow RAM"));
        };
        lock(space)
            .write_region(*region, offset, page)
            .map_err(|e| fail(format!("writing shadow RAM at {offset:#x}: {e}")))
    }

    /// The pages at `gpas` (each whole, zero or not: the destination may hold an older
    /// copy).
    fn send_pages<W: Write>(
        &self,
        w: &mut SectionWriter<W>,
        gpas: &[u64],
        info: &mut MigrationInfo,
    ) -> Result<()> {
        let memory = self.memory.memory();
        let mut page = [0u8; PAGE];
        let (shadow, ram): (Vec<u64>, Vec<u64>) = gpas.iter().partition(|&&g| g & SHADOW_FLAG != 0);
        for (kind, list) in [(SECTION_RAM, ram), (SECTION_SHADOW, shadow)] {
            let mut payload = Vec::with_capacity((PAGE + 8) * PAGES_PER_SECTION);
            for batch in list.chunks(PAGES_PER_SECTION) {
                payload.clear();
                for &tagged in batch {
                    let at = tagged & !SHADOW_FLAG;
                    if kind == SECTION_SHADOW {
                        self.read_shadow(at, &mut page)?;
                    } else {
                        memory
                            .read_slice(&mut page, GuestAddress(at))
                            .map_err(|e| fail(format!("reading guest RAM at {at:#x}: {e}")))?;
                    }
                    payload.extend_from_slice(&at.to_le_bytes());
                    payload.extend_from_slice(&page);
                    info.ram_pages += 1;
                    info.ram_transferred += PAGE as u64;
                }
                w.section(kind, &payload).map_err(io_fail)?;
            }
        }
        Ok(())
    }

    /// Devices, KVM VM state, every vCPU, the end section; flushes.
    fn write_tail<W: Write>(
        &self,
        w: &mut SectionWriter<W>,
        info: &mut MigrationInfo,
    ) -> Result<()> {
        let devices = self.devices.save_all().map_err(|e| fail(e.to_string()))?;
        let devices = serde_json::to_vec(&devices).map_err(|e| fail(e.to_string()))?;
        w.section(SECTION_DEVICES, &devices).map_err(io_fail)?;
        let vm = self
            .vm
            .save_state(self.kernel_irqchip, self.kernel_irqchip)?;
        w.section(
            SECTION_KVM_VM,
            &serde_json::to_vec(&vm).map_err(|e| fail(e.to_string()))?,
        )
        .map_err(io_fail)?;
        let ctx = self.kvm_state.clone();
        let vcpus = self.controller.run_on_vcpus(move |_, vcpu| {
            // An exit userspace handled (an IN's data) completes on the next KVM_RUN: do
            // that without entering the guest, so the registers are between instructions.
            vcpu.complete_pending_exit()?;
            vcpu.save_state(&ctx)
        })?;
        for state in vcpus {
            let state = state?;
            w.section(
                SECTION_VCPU,
                &serde_json::to_vec(&state).map_err(|e| fail(e.to_string()))?,
            )
            .map_err(io_fail)?;
        }
        w.section(SECTION_END, &[]).map_err(io_fail)?;
        w.out.flush().map_err(io_fail)?;
        info.stream_bytes = w.bytes;
        Ok(())
    }

    /// The guest addresses of the RAM pages dirtied since the last sync (KVM's dirty log
    /// of `pc.ram`, plus pages vmkit itself wrote for the guest), sorted.
    fn sync_dirty(&self) -> Result<Vec<u64>> {
        let Some((space, region)) = &self.dirty_source else {
            return Err(fail("this machine has no dirty log"));
        };
        let bitmap = lock(space)
            .sync_dirty_log(*region)
            .map_err(|e| fail(format!("fetching the dirty log: {e}")))?;
        let mut gpas: Vec<u64> = bitmap
            .dirty_addresses()
            .filter_map(|offset| {
                if SHADOW.contains(&offset) {
                    return Some(offset | SHADOW_FLAG);
                }
                self.ram_map
                    .iter()
                    .find(|r| offset >= r.ram_offset && offset < r.ram_offset + r.size)
                    .map(|r| r.guest_addr + (offset - r.ram_offset))
            })
            .collect();
        gpas.extend(take_vmm_writes().into_iter().filter(|&g| self.in_ram(g)));
        gpas.sort_unstable();
        gpas.dedup();
        Ok(gpas)
    }

    fn set_dirty_logging(&self, on: bool) -> Result<()> {
        let Some((space, region)) = &self.dirty_source else {
            return Err(fail("this machine has no dirty log"));
        };
        set_vmm_write_log(on);
        lock(space)
            .set_dirty_logging(*region, on)
            .map_err(|e| fail(format!("dirty logging: {e}")))
    }

    /// Pre-copy (QEMU's `ram_save_iterate`): with dirty logging on, every non-zero page goes
    /// while the guest runs, then the pages it dirtied meanwhile, round after round, until
    /// what is left would go within `downtime-limit` at the bandwidth measured (or after
    /// [`MAX_PRECOPY_ROUNDS`], or when a round does not shrink it). Returns the dirty pages
    /// not sent yet; the caller stops the guest and sends them with one last sync.
    fn precopy<W: Write>(
        &self,
        w: &mut SectionWriter<W>,
        info: &mut MigrationInfo,
        start: Instant,
    ) -> Result<Vec<u64>> {
        self.set_dirty_logging(true)?;
        // Forget what was dirtied before: everything goes in the first round.
        self.sync_dirty()?;
        let logging = Instant::now();
        let mut dirtied = 0u64;
        let round = Instant::now();
        let before = w.bytes;
        self.send_all_ram(w, info)?;
        w.out.flush().map_err(io_fail)?;
        let mut bandwidth = rate(w.bytes - before, round.elapsed());
        let mut previous = u64::MAX;
        let mut rounds = 0;
        loop {
            let dirty = self.sync_dirty()?;
            dirtied += dirty.len() as u64;
            rounds += 1;
            let remaining = dirty.len() as u64 * PAGE as u64;
            let expected_ms = remaining.saturating_mul(1000) / bandwidth.max(1);
            let limit = self.downtime_limit.load(Ordering::SeqCst);
            {
                let mut shared = lock(&self.info);
                info.dirty_sync_count = rounds + 1;
                // Pages found dirty per second of logging, over the whole pre-copy.
                info.dirty_pages_rate = rate(dirtied, logging.elapsed());
                info.ram_remaining = remaining;
                info.expected_downtime_ms = Some(expected_ms);
                info.total_time_ms = start.elapsed().as_millis() as u64;
                *shared = MigrationInfo {
                    status: shared.status.clone(),
                    ..info.clone()
                };
            }
            if expected_ms <= limit || rounds >= MAX_PRECOPY_ROUNDS || remaining >= previous {
                return Ok(dirty);
            }
            previous = remaining;
            let round = Instant::now();
            let before = w.bytes;
            self.send_pages(w, &dirty, info)?;
            w.out.flush().map_err(io_fail)?;
            bandwidth = rate(w.bytes - before, round.elapsed()).max(1);
        }
    }

    /// Reads a whole stream from `input` and puts the machine into it. The machine must be
    /// stopped and not have run. Nothing but RAM is touched before the end section arrived
    /// intact; on error the machine must not be run.
    pub fn load(&self, input: impl Read) -> Result<()> {
        let memory = self.memory.memory();
        let DecodedStream { devices, vm, vcpus } = decode_stream(
            input,
            |theirs| {
                if *theirs != self.config {
                    return Err(fail(format!(
                        "the stream is of a machine {theirs}, this one is {}: start the \
                         destination with the same -m, -smp and -irqchip",
                        self.config
                    )));
                }
                self.clear_ram()
            },
            |target, page| match target {
                PageTarget::Ram(gpa) => {
                    if !self.in_ram(gpa) {
                        return Err(fail(format!("RAM page at {gpa:#x} is outside RAM")));
                    }
                    memory
                        .write_slice(page, GuestAddress(gpa))
                        .map_err(|e| fail(format!("writing RAM at {gpa:#x}: {e}")))
                }
                PageTarget::Shadow(offset) => self.write_shadow(offset, page),
            },
        )?;
        self.devices
            .restore_all(&devices)
            .map_err(|e| fail(e.to_string()))?;
        self.vm
            .restore_state(&vm, self.kernel_irqchip, self.kernel_irqchip)?;
        let vcpus = Arc::new(vcpus);
        let count = vcpus.len();
        let ctx = self.kvm_state.clone();
        let results = self.controller.run_on_vcpus(move |index, vcpu| {
            let state = vcpus
                .get(index)
                .ok_or_else(|| fail(format!("the stream has {count} vCPUs, this machine more")))?;
            vcpu.restore_state(&ctx, state).map_err(Error::from)
        })?;
        if results.len() != count {
            return Err(fail(format!(
                "the stream has {count} vCPUs, this machine {}",
                results.len()
            )));
        }
        for r in results {
            r?;
        }
        (self.after_restore)();
        // Devices start last: their BARs are mapped (ioeventfds), their MSI-X routes set
        // and the interrupt controllers loaded.
        self.resume_devices();
        Ok(())
    }

    /// CRC-32 of every RAM range, in order.
    pub fn ram_crc32(&self) -> Result<u32> {
        let memory = self.memory.memory();
        let mut crc = crc32fast::Hasher::new();
        let mut chunk = vec![0u8; 1 << 20];
        for &(base, size) in &self.ram {
            let mut gpa = base;
            while gpa < base + size {
                let len = ((base + size - gpa) as usize).min(chunk.len());
                if self.untouched(gpa, len) {
                    // Never faulted in: zeros, without faulting them in now.
                    chunk[..len].fill(0);
                } else {
                    memory
                        .read_slice(&mut chunk[..len], GuestAddress(gpa))
                        .map_err(|e| fail(format!("reading RAM at {gpa:#x}: {e}")))?;
                }
                crc.update(&chunk[..len]);
                gpa += len as u64;
            }
        }
        Ok(crc.finalize())
    }

    /// Whether no page of `[gpa, gpa + len)` was ever faulted in on the host (so all are
    /// zero).
    fn untouched(&self, gpa: u64, len: usize) -> bool {
        let memory = self.memory.memory();
        memory
            .get_host_address(GuestAddress(gpa))
            .ok()
            .and_then(|host| vmkit_kvm::state::resident_pages(host, len))
            .is_some_and(|r| !r.iter().any(|&p| p))
    }

    fn in_ram(&self, gpa: u64) -> bool {
        self.ram
            .iter()
            .any(|&(base, size)| gpa >= base && gpa + PAGE as u64 <= base + size)
    }

    /// Zeroes every non-zero page of RAM (the destination's own boot image), so that the
    /// pages the stream skips as zero are zero here too.
    fn clear_ram(&self) -> Result<()> {
        let offsets: Vec<u64> = self.shadow_pages().collect();
        for offset in offsets {
            self.write_shadow(offset, &ZERO_PAGE)?;
        }
        let memory = self.memory.memory();
        let zero = vec![0u8; PAGE];
        let mut page = vec![0u8; PAGE];
        for &(base, size) in &self.ram {
            let mut gpa = base;
            while gpa + PAGE as u64 <= base + size {
                // Skip whole untouched megabytes without faulting them in.
                if (gpa - base) % (1 << 20) == 0 {
                    let span = ((base + size - gpa) as usize).min(1 << 20);
                    if self.untouched(gpa, span) {
                        gpa += span as u64;
                        continue;
                    }
                }
                memory
                    .read_slice(&mut page, GuestAddress(gpa))
                    .map_err(|e| fail(format!("reading RAM at {gpa:#x}: {e}")))?;
                if page != ZERO_PAGE.as_slice() {
                    memory
                        .write_slice(&zero, GuestAddress(gpa))
                        .map_err(|e| fail(format!("clearing RAM at {gpa:#x}: {e}")))?;
                }
                gpa += PAGE as u64;
            }
        }
        Ok(())
    }

    /// `migrate URI`: starts sending the machine on a thread. Returns an error at once for
    /// a bad URI or a migration already running; a target that cannot be reached makes the
    /// migration `failed` with the guest still running.
    pub fn start_outgoing(self: &Arc<Self>, uri: &str) -> Result<()> {
        let uri = MigrationUri::parse(uri)?;
        if uri == MigrationUri::Defer {
            return Err(fail("'defer' is for -incoming only"));
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(fail("There's a migration process in progress"));
        }
        self.cancel.store(false, Ordering::SeqCst);
        *lock(&self.info) = MigrationInfo::default();
        self.set_status("setup");
        let this = Arc::clone(self);
        crate::seccomp::spawn(
            crate::seccomp::ThreadKind::Migration,
            "vmkit-migrate",
            move || {
                let start = Instant::now();
                let result = this.outgoing(&uri, start);
                let total = start.elapsed().as_millis() as u64;
                match result {
                    Ok(()) => {
                        // total-time was taken when the stream ended (before the checksum).
                        let _ = total;
                        this.set_status("completed");
                    }
                    Err(_) if this.cancel.load(Ordering::SeqCst) => {
                        lock(&this.info).total_time_ms = total;
                        this.set_status("cancelled");
                    }
                    Err(e) => {
                        {
                            let mut info = lock(&this.info);
                            info.total_time_ms = total;
                            info.error = Some(e.to_string());
                        }
                        eprintln!("vmkit: {e}");
                        this.set_status("failed");
                    }
                }
                this.busy.store(false, Ordering::SeqCst);
            },
        )
        .map_err(|source| Error::Thread {
            name: "vmkit-migrate".into(),
            source,
        })?;
        Ok(())
    }

    fn outgoing(&self, uri: &MigrationUri, start: Instant) -> Result<()> {
        let sink: Box<dyn Write + Send> = match uri {
            MigrationUri::File(path) => Box::new(
                std::fs::File::create(path)
                    .map_err(|e| fail(format!("Failed to open file '{}': {e}", path.display())))?,
            ),
            MigrationUri::Unix(path) => Box::new(
                UnixStream::connect(path)
                    .map_err(|e| fail(format!("Failed to connect to '{}': {e}", path.display())))?,
            ),
            MigrationUri::Tcp(addr) => Box::new(
                std::net::TcpStream::connect(addr)
                    .map_err(|e| fail(format!("Failed to connect to '{addr}': {e}")))?,
            ),
            MigrationUri::Exec(cmd) => {
                let mut child = std::process::Command::new("sh")
                    .args(["-c", cmd])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| fail(format!("exec '{cmd}': {e}")))?;
                Box::new(child.stdin.take().ok_or_else(|| fail("exec: no stdin"))?)
            }
            MigrationUri::Defer => return Err(fail("'defer' is for -incoming only")),
        };
        self.set_status("active");
        let was_running = self.controller.state() == RunState::Running;
        let sink = Throttled::new(
            sink,
            Arc::clone(&self.max_bandwidth),
            Arc::clone(&self.cancel),
        );
        let mut w = SectionWriter {
            out: BufWriter::with_capacity(1 << 20, sink),
            bytes: 0,
        };
        let mut info = MigrationInfo::default();
        let mut stopped = None;
        let precopy = was_running && self.dirty_source.is_some();
        let result = (|| {
            self.quiesce_io()?;
            self.write_head(&mut w)?;
            let pending = if precopy {
                Some(self.precopy(&mut w, &mut info, start)?)
            } else {
                None
            };
            stopped = Some(Instant::now());
            self.controller.pause()?;
            match pending {
                Some(mut pending) => {
                    // The last round: what the guest dirtied up to its stop.
                    pending.extend(self.sync_dirty()?);
                    pending.sort_unstable();
                    pending.dedup();
                    info.dirty_sync_count += 1;
                    self.send_pages(&mut w, &pending, &mut info)?;
                }
                None => self.send_all_ram(&mut w, &mut info)?,
            }
            self.write_tail(&mut w, &mut info)
        })();
        // Downtime as QEMU counts it: from the stop to the end of the stream, before the
        // clean-up (turning dirty logging off makes KVM rebuild the slot's mappings).
        let downtime = stopped.map(|s| s.elapsed().as_millis() as u64);
        if precopy {
            if let Err(e) = self.set_dirty_logging(false) {
                eprintln!("vmkit: {e}");
            }
        }
        match result {
            Ok(()) => {
                let mut shared = lock(&self.info);
                *shared = MigrationInfo {
                    status: shared.status.clone(),
                    downtime_ms: downtime,
                    total_time_ms: start.elapsed().as_millis() as u64,
                    ram_remaining: 0,
                    dirty_sync_count: info.dirty_sync_count.max(1),
                    ..info
                };
                drop(shared);
                self.migrated.store(true, Ordering::SeqCst);
                // The source stays stopped: its RAM is what was sent.
                let crc = self.ram_crc32()?;
                lock(&self.info).ram_crc32 = Some(crc);
                Ok(())
            }
            Err(e) => {
                self.resume_devices();
                if was_running {
                    self.controller.resume()?;
                }
                Err(e)
            }
        }
    }

    /// Receives the machine from `uri` and starts it (`-incoming` / `migrate-incoming`).
    /// Blocks until done; on failure the machine ends with the error (exit status 1) and
    /// never runs.
    pub fn run_incoming(&self, uri: &MigrationUri) -> Result<()> {
        self.incoming.store(true, Ordering::SeqCst);
        self.set_status("setup");
        let result = self.receive(uri);
        self.incoming.store(false, Ordering::SeqCst);
        match result {
            Ok(()) => {
                // Before the guest runs: the RAM as loaded.
                let crc = self.ram_crc32().ok();
                lock(&self.info).ram_crc32 = crc;
                self.set_status("completed");
                if self.stay_paused.load(Ordering::SeqCst) {
                    // `-S`: the loaded machine waits for `cont` (still in prelaunch).
                    Ok(())
                } else {
                    self.controller.resume()
                }
            }
            Err(e) => {
                lock(&self.info).error = Some(e.to_string());
                self.set_status("failed");
                eprintln!("vmkit: load of migration failed: {e}");
                self.controller.shutdown(ExitReason::InternalError(format!(
                    "load of migration failed: {e}"
                )));
                Err(e)
            }
        }
    }

    fn receive(&self, uri: &MigrationUri) -> Result<()> {
        match uri {
            MigrationUri::File(path) => {
                let file = std::fs::File::open(path)
                    .map_err(|e| fail(format!("Failed to open file '{}': {e}", path.display())))?;
                self.set_status("active");
                self.load(BufReader::with_capacity(1 << 20, file))
            }
            MigrationUri::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let listener = UnixListener::bind(path)
                    .map_err(|e| fail(format!("Failed to bind '{}': {e}", path.display())))?;
                let (stream, _) = listener
                    .accept()
                    .map_err(|e| fail(format!("accepting on '{}': {e}", path.display())))?;
                let _ = std::fs::remove_file(path);
                self.set_status("active");
                self.load(BufReader::with_capacity(1 << 20, stream))
            }
            MigrationUri::Tcp(addr) => {
                let listener = std::net::TcpListener::bind(addr)
                    .map_err(|e| fail(format!("Failed to bind '{addr}': {e}")))?;
                let (stream, _) = listener
                    .accept()
                    .map_err(|e| fail(format!("accepting on '{addr}': {e}")))?;
                self.set_status("active");
                self.load(BufReader::with_capacity(1 << 20, stream))
            }
            MigrationUri::Exec(cmd) => {
                let mut child = std::process::Command::new("sh")
                    .args(["-c", cmd])
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .map_err(|e| fail(format!("exec '{cmd}': {e}")))?;
                let out = child.stdout.take().ok_or_else(|| fail("exec: no stdout"))?;
                self.set_status("active");
                let result = self.load(BufReader::with_capacity(1 << 20, out));
                let _ = child.wait();
                result
            }
            MigrationUri::Defer => Err(fail("migrate-incoming needs a URI, not 'defer'")),
        }
    }

    /// Marks the machine as waiting for `migrate-incoming` (`-incoming defer`).
    pub fn set_deferred(&self) {
        self.incoming.store(true, Ordering::SeqCst);
    }

    /// `migrate-incoming URI` after `-incoming defer`: receives on a thread.
    pub fn start_incoming(self: &Arc<Self>, uri: &str) -> Result<()> {
        let uri = MigrationUri::parse(uri)?;
        if !self.is_incoming() {
            return Err(fail(
                "'-incoming' was not specified on the command line".to_string(),
            ));
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(fail("The incoming migration has already been started"));
        }
        let this = Arc::clone(self);
        crate::seccomp::spawn(
            crate::seccomp::ThreadKind::Migration,
            "vmkit-incoming",
            move || {
                let _ = this.run_incoming(&uri);
            },
        )
        .map_err(|source| Error::Thread {
            name: "vmkit-incoming".into(),
            source,
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_as_qemu_and_unsupported_ones_are_named() {
        assert_eq!(MigrationUri::parse("defer").unwrap(), MigrationUri::Defer);
        assert_eq!(
            MigrationUri::parse("unix:/tmp/m.sock").unwrap(),
            MigrationUri::Unix("/tmp/m.sock".into())
        );
        assert_eq!(
            MigrationUri::parse("tcp:127.0.0.1:4444").unwrap(),
            MigrationUri::Tcp("127.0.0.1:4444".into())
        );
        assert!(MigrationUri::parse("fd:3")
            .unwrap_err()
            .to_string()
            .contains("not supported yet"));
        assert!(MigrationUri::parse("file:")
            .unwrap_err()
            .to_string()
            .contains("needs a path"));
        assert!(MigrationUri::parse("bogus")
            .unwrap_err()
            .to_string()
            .contains("unknown"));
    }

    #[test]
    fn decode_stream_checks_the_order_and_hands_pages_on() {
        let config = br#"{"ram-size":1}"#;
        let mut page = 0x2000u64.to_le_bytes().to_vec();
        page.extend([7u8; PAGE]);
        let stream = encode_sections(&[
            (SECTION_CONFIG, config),
            (SECTION_RAM, &page),
            (SECTION_DEVICES, b"[]"),
            (SECTION_END, b""),
        ]);
        let mut seen = Vec::new();
        let err = decode_stream(
            stream.as_slice(),
            |theirs| {
                assert_eq!(theirs["ram-size"], 1);
                Ok(())
            },
            |target, bytes| {
                seen.push((target, bytes[0], bytes.len()));
                Ok(())
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no KVM VM section"), "{err}");
        assert_eq!(seen, vec![(PageTarget::Ram(0x2000), 7, PAGE)]);
        // RAM before the config section, a refused config, a short RAM section.
        let early = encode_sections(&[(SECTION_RAM, &page)]);
        let err = decode_stream(early.as_slice(), |_| Ok(()), |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not start with its config"), "{err}");
        let err = decode_stream(
            stream.as_slice(),
            |_| Err(fail("not this machine")),
            |_, _| Ok(()),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not this machine"), "{err}");
        let short = encode_sections(&[(SECTION_CONFIG, config), (SECTION_RAM, &page[..100])]);
        let err = decode_stream(short.as_slice(), |_| Ok(()), |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not whole pages"), "{err}");
        let mut shadow = 0xb_f000u64.to_le_bytes().to_vec();
        shadow.extend([1u8; PAGE]);
        let outside = encode_sections(&[(SECTION_CONFIG, config), (SECTION_SHADOW, &shadow)]);
        let err = decode_stream(outside.as_slice(), |_| Ok(()), |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside 0xc0000-0xfffff"), "{err}");
    }

    #[test]
    fn the_stream_is_paced_to_max_bandwidth_and_stops_on_cancel() {
        let rate = Arc::new(std::sync::atomic::AtomicU64::new(1 << 20));
        let cancel = Arc::new(AtomicBool::new(false));
        let mut w = Throttled::new(Vec::new(), Arc::clone(&rate), Arc::clone(&cancel));
        let start = Instant::now();
        w.write_all(&vec![7u8; 256 << 10]).unwrap();
        // The first 64 KiB go at once, the other 192 KiB at 1 MiB/s.
        assert!(start.elapsed() >= std::time::Duration::from_millis(187));
        assert_eq!(w.inner.len(), 256 << 10);
        cancel.store(true, Ordering::SeqCst);
        let err = w.write_all(&[1]).unwrap_err();
        assert!(err.to_string().contains("cancelled"), "{err}");
    }

    #[test]
    fn rates_are_per_second() {
        assert_eq!(rate(4096, std::time::Duration::from_millis(500)), 8192);
        assert_eq!(rate(5, std::time::Duration::ZERO), 5_000_000);
    }

    #[test]
    fn sections_are_checked() {
        let mut w = SectionWriter {
            out: Vec::new(),
            bytes: 0,
        };
        w.section(SECTION_DEVICES, b"[]").unwrap();
        let good = w.out.clone();
        let (kind, payload) = read_section(&mut good.as_slice(), 0).unwrap().unwrap();
        assert_eq!((kind, payload.as_slice()), (SECTION_DEVICES, &b"[]"[..]));
        let mut corrupt = good.clone();
        corrupt[5] ^= 1;
        let err = read_section(&mut corrupt.as_slice(), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("checksum"), "{err}");
        let err = read_section(&mut &good[..good.len() - 2], 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated"), "{err}");
        let mut huge = good.clone();
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        let err = read_section(&mut huge.as_slice(), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit"), "{err}");
    }
}
