//! Feeding a chardev's input to a device in the event-manager main loop, with flow
//! control: the chardev's fd is polled only while the device has taken everything read.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::backend::{Chardev, ChardevEvent, Input};

/// Where chardev input goes: typically a UART's receive FIFO, which takes only what fits
/// (vmkit-isa's `SerialHandle::enqueue_input`). Closures `FnMut(&[u8]) -> usize` qualify.
pub trait ChardevSink: Send {
    /// Offers `bytes`; returns how many were accepted (the rest is offered again after
    /// the room fd fires).
    fn enqueue(&mut self, bytes: &[u8]) -> usize;
}

impl<F: FnMut(&[u8]) -> usize + Send> ChardevSink for F {
    fn enqueue(&mut self, bytes: &[u8]) -> usize {
        self(bytes)
    }
}

/// Read buffer size: larger than std's stdin buffer so stdin reads bypass it.
const READ_CHUNK: usize = 16 * 1024;

const DATA_INPUT: u32 = 1;
const DATA_ROOM: u32 = 2;

struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

type Observer = Box<dyn FnMut(ChardevEvent) + Send>;

/// A main-loop subscriber moving a chardev's input into a [`ChardevSink`] without losing
/// bytes: what the sink refuses is kept, the chardev's fd is removed from the loop until
/// the `room` eventfd fires (the device's rx-room line, written on rising edges), and then
/// the backlog is offered first.
pub struct ChardevInput {
    chardev: Arc<Chardev>,
    sink: Box<dyn ChardevSink>,
    room: EventFd,
    observer: Option<Observer>,
    backlog: Vec<u8>,
    buf: Vec<u8>,
    registered: bool,
    eof: bool,
}

impl std::fmt::Debug for ChardevInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChardevInput")
            .field("chardev", &self.chardev.id())
            .field("backlog", &self.backlog.len())
            .field("registered", &self.registered)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl ChardevInput {
    /// Input from `chardev` into `sink`; `room` is the eventfd the device's rx-room line
    /// writes when it has room again.
    pub fn new(chardev: Arc<Chardev>, sink: impl ChardevSink + 'static, room: EventFd) -> Self {
        let eof = !chardev.has_input();
        Self {
            chardev,
            sink: Box::new(sink),
            room,
            observer: None,
            backlog: Vec::new(),
            buf: vec![0; READ_CHUNK],
            registered: false,
            eof,
        }
    }

    /// Calls `observer` on connects, disconnects and end of input (on the main loop's
    /// thread).
    #[must_use]
    pub fn with_observer(mut self, observer: impl FnMut(ChardevEvent) + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// The chardev.
    pub fn chardev(&self) -> &Arc<Chardev> {
        &self.chardev
    }

    /// Whether the chardev should be polled: input not ended and no backlog.
    pub fn wants_input(&self) -> bool {
        !self.eof && self.backlog.is_empty()
    }

    /// Bytes read from the host that the sink has not taken yet.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }

    /// Whether input has ended for good.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    fn notify(&mut self, event: ChardevEvent) {
        if let Some(observer) = &mut self.observer {
            observer(event);
        }
    }

    /// The input fd is readable: read once and offer what came to the sink.
    pub fn on_readable(&mut self) {
        match self.chardev.read(&mut self.buf) {
            Ok(Input::Data(n)) => {
                self.backlog.extend_from_slice(&self.buf[..n]);
                self.flush();
            }
            Ok(Input::WouldBlock) => {}
            Ok(Input::Connected) => self.notify(ChardevEvent::Connected),
            Ok(Input::Disconnected) => self.notify(ChardevEvent::Disconnected),
            Ok(Input::Eof) | Err(_) => {
                self.eof = true;
                self.notify(ChardevEvent::Eof);
            }
        }
    }

    /// The sink has room again (or may): offer the backlog.
    pub fn flush(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let taken = self.sink.enqueue(&self.backlog);
        self.backlog.drain(..taken.min(self.backlog.len()));
    }

    fn update_interest(&mut self, ops: &mut EventOps) {
        let Some(fd) = self.chardev.input_fd() else {
            return;
        };
        let wants = self.wants_input();
        if wants && !self.registered {
            if ops
                .add(Events::with_data(&Fd(fd), DATA_INPUT, EventSet::IN))
                .is_ok()
            {
                self.registered = true;
            }
        } else if !wants && self.registered {
            let _ = ops.remove(Events::with_data(&Fd(fd), DATA_INPUT, EventSet::IN));
            self.registered = false;
        }
    }
}

impl MutEventSubscriber for ChardevInput {
    fn init(&mut self, ops: &mut EventOps) {
        let _ = ops.add(Events::with_data(&self.room, DATA_ROOM, EventSet::IN));
        self.update_interest(ops);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            DATA_INPUT => {
                let set = events.event_set();
                if set.contains(EventSet::HANG_UP) && !set.contains(EventSet::IN) {
                    // Stdin closed under us: stop polling it.
                    self.eof = true;
                    self.notify(ChardevEvent::Eof);
                } else {
                    self.on_readable();
                }
            }
            DATA_ROOM => {
                let _ = self.room.read();
                self.flush();
            }
            _ => {}
        }
        self.update_interest(ops);
    }
}
