//! The host side of a serial console: stdin to the guest's UART without losing a byte, raw
//! terminal mode while the VM runs, and QEMU's Ctrl-A escapes on a terminal.

use std::io::IsTerminal;

use vmm_sys_util::terminal::Terminal;

/// Where console input goes: a UART's receive FIFO, which takes only what fits.
pub trait SerialInput: Send {
    /// Offers `bytes`; returns how many were accepted (the rest must be offered again later).
    fn enqueue(&mut self, bytes: &[u8]) -> usize;
}

/// The escape key (Ctrl-A), as in QEMU.
pub const ESCAPE: u8 = 0x01;

/// What the console asks of the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleAction {
    /// Nothing.
    None,
    /// Ctrl-A x: quit.
    Quit,
}

/// Turns terminal keystrokes into guest input, handling Ctrl-A escapes.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    pending_escape: bool,
}

impl EscapeFilter {
    /// Appends the guest-bound bytes of `input` to `out`; returns `Quit` on Ctrl-A x (bytes
    /// after it are dropped).
    pub fn filter(&mut self, input: &[u8], out: &mut Vec<u8>) -> ConsoleAction {
        for &byte in input {
            if self.pending_escape {
                self.pending_escape = false;
                match byte {
                    b'x' | b'X' => return ConsoleAction::Quit,
                    b'h' | b'H' => eprint!(
                        "\r\nC-a h    print this help\r\nC-a x    exit vmkit\r\nC-a C-a  send C-a\r\n"
                    ),
                    ESCAPE => out.push(ESCAPE),
                    // Unknown escapes are passed on, so nothing typed is lost.
                    other => {
                        out.push(ESCAPE);
                        out.push(other);
                    }
                }
            } else if byte == ESCAPE {
                self.pending_escape = true;
            } else {
                out.push(byte);
            }
        }
        ConsoleAction::None
    }
}

/// Stdin as console input: unbuffered reads, flow control against the UART, raw mode and
/// escapes when stdin is a terminal (restored when dropped).
pub struct StdinConsole {
    escapes: Option<EscapeFilter>,
    raw_mode: bool,
    backlog: Vec<u8>,
    eof: bool,
    input: Box<dyn SerialInput>,
}

impl std::fmt::Debug for StdinConsole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdinConsole")
            .field("raw_mode", &self.raw_mode)
            .field("backlog", &self.backlog.len())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl StdinConsole {
    /// Console input from stdin into `input`. On a terminal: raw mode and Ctrl-A escapes.
    pub fn new(input: Box<dyn SerialInput>) -> Self {
        let stdin = std::io::stdin();
        let is_tty = stdin.is_terminal();
        let raw_mode = is_tty && stdin.lock().set_raw_mode().is_ok();
        Self {
            escapes: is_tty.then(EscapeFilter::default),
            raw_mode,
            backlog: Vec::new(),
            eof: false,
            input,
        }
    }

    /// Whether stdin should be polled: not at EOF and nothing waiting for UART room.
    pub fn wants_input(&self) -> bool {
        !self.eof && self.backlog.is_empty()
    }

    /// Stdin is readable: read once and offer it to the UART.
    pub fn on_stdin_readable(&mut self) -> ConsoleAction {
        // Larger than std's own stdin buffer, so reads bypass it and epoll sees the truth.
        let mut buf = [0u8; 16 * 1024];
        let read = std::io::stdin().lock().read_raw(&mut buf);
        let n = match read {
            Ok(0) => {
                self.eof = true;
                return ConsoleAction::None;
            }
            Ok(n) => n,
            Err(e) if e.errno() == libc::EAGAIN || e.errno() == libc::EINTR => {
                return ConsoleAction::None
            }
            Err(_) => {
                self.eof = true;
                return ConsoleAction::None;
            }
        };
        let action = self.accept(&buf[..n]);
        self.flush();
        action
    }

    /// Feeds host bytes (already read) through the escape filter into the backlog.
    pub fn accept(&mut self, bytes: &[u8]) -> ConsoleAction {
        match &mut self.escapes {
            Some(filter) => filter.filter(bytes, &mut self.backlog),
            None => {
                self.backlog.extend_from_slice(bytes);
                ConsoleAction::None
            }
        }
    }

    /// The UART has room again (or may): offer the backlog.
    pub fn flush(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let taken = self.input.enqueue(&self.backlog);
        self.backlog.drain(..taken.min(self.backlog.len()));
    }

    /// Bytes read from the host that the guest has not taken yet.
    pub fn backlog_len(&self) -> usize {
        self.backlog.len()
    }
}

impl Drop for StdinConsole {
    fn drop(&mut self) {
        if self.raw_mode {
            let _ = std::io::stdin().lock().set_canon_mode();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_a_x_quits_and_ctrl_a_ctrl_a_sends_one() {
        let mut filter = EscapeFilter::default();
        let mut out = Vec::new();
        assert_eq!(
            filter.filter(b"ab\x01\x01c\x01", &mut out),
            ConsoleAction::None
        );
        assert_eq!(out, b"ab\x01c");
        // The escape spans two reads.
        assert_eq!(filter.filter(b"xzz", &mut out), ConsoleAction::Quit);
        assert_eq!(out, b"ab\x01c");
    }

    #[test]
    fn unknown_escapes_pass_through() {
        let mut filter = EscapeFilter::default();
        let mut out = Vec::new();
        filter.filter(b"\x01q", &mut out);
        assert_eq!(out, b"\x01q");
    }

    struct Fifo {
        room: usize,
        got: Vec<u8>,
    }

    impl SerialInput for std::sync::Arc<std::sync::Mutex<Fifo>> {
        fn enqueue(&mut self, bytes: &[u8]) -> usize {
            let mut fifo = self.lock().unwrap();
            let n = bytes.len().min(fifo.room);
            fifo.room -= n;
            fifo.got.extend_from_slice(&bytes[..n]);
            n
        }
    }

    #[test]
    fn backlog_waits_for_room_and_loses_nothing() {
        let fifo = std::sync::Arc::new(std::sync::Mutex::new(Fifo {
            room: 4,
            got: Vec::new(),
        }));
        let mut console = StdinConsole {
            escapes: None,
            raw_mode: false,
            backlog: Vec::new(),
            eof: false,
            input: Box::new(fifo.clone()),
        };
        console.accept(b"0123456789");
        console.flush();
        assert_eq!(console.backlog_len(), 6);
        assert!(
            !console.wants_input(),
            "stop reading the host while the guest is behind"
        );
        fifo.lock().unwrap().room = 16;
        console.flush();
        assert_eq!(console.backlog_len(), 0);
        assert!(console.wants_input());
        assert_eq!(fifo.lock().unwrap().got, b"0123456789");
    }
}
