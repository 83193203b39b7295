//! The PC16550D register model.

use std::fmt;
use std::io::Write;

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vmkit_hw::{Clock, IrqLine};

use crate::regs::*;
use crate::{Error, FIFO_SIZE, PORT_RANGE_LEN, UART_CLOCK_HZ};

/// Divisor loaded at power-on: 12 is 9600 baud with the PC's 1.8432 MHz crystal. The chip
/// leaves it undefined; any value works because firmware or the guest programs it.
const POWER_ON_DIVISOR: u16 = 12;

/// Modem inputs of a terminal that is connected and ready: CTS, DSR and DCD asserted.
pub const DEFAULT_MODEM_INPUTS: u8 = MSR_CTS | MSR_DSR | MSR_DCD;

/// The receive FIFO: a fixed ring so that the I/O path never allocates.
#[derive(Clone)]
struct Fifo {
    bytes: [u8; FIFO_SIZE],
    head: usize,
    len: usize,
}

impl Fifo {
    const fn new() -> Self {
        Self {
            bytes: [0; FIFO_SIZE],
            head: 0,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn clear(&mut self) {
        self.head = 0;
        self.len = 0;
    }

    /// Appends `byte`; false (and nothing stored) when full.
    fn push(&mut self, byte: u8) -> bool {
        if self.len >= FIFO_SIZE {
            return false;
        }
        // head < FIFO_SIZE and len < FIFO_SIZE, so the sum cannot overflow.
        self.bytes[(self.head + self.len) % FIFO_SIZE] = byte;
        self.len += 1;
        true
    }

    fn pop(&mut self) -> Option<u8> {
        if self.len == 0 {
            return None;
        }
        let byte = self.bytes[self.head % FIFO_SIZE];
        self.head = (self.head + 1) % FIFO_SIZE;
        self.len -= 1;
        Some(byte)
    }
}

/// A PC16550D UART: the registers at offsets 0..8 of one serial port.
///
/// - `L` drives the chip's INTR output onto the port's ISA IRQ line (see [`Serial::new`]
///   for the OUT2 gate a PC puts in front of it).
/// - `C` is the monotonic clock used for the receive FIFO's character timeout.
/// - `W` receives every transmitted byte, written and flushed one byte at a time.
///
/// Transmission is instantaneous: THR and the transmit FIFO are empty again as soon as a
/// byte is written, so LSR reads THRE | TEMT right after every THR write. Input is pushed by
/// the VMM with [`enqueue_input`](Serial::enqueue_input), which never accepts more than
/// fits, so no byte is lost however slowly the guest reads.
pub struct Serial<L, C, W> {
    irq: L,
    clock: C,
    output: W,
    rx_room_line: Option<Box<dyn IrqLine>>,

    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    divisor: u16,
    fifo_enabled: bool,
    rx_trigger: usize,
    rx: Fifo,
    overrun: bool,
    thre_pending: bool,
    msr_deltas: u8,
    modem_inputs: u8,
    /// When a character last entered the receive FIFO or the CPU last read it.
    last_rx_activity_ns: u64,
    /// The character-timeout indication; once set it stays until the CPU reads RBR.
    timeout_latched: bool,

    irq_level: bool,
    rx_room_level: bool,

    transmitted: u64,
    output_errors: u64,
    last_output_error: Option<std::io::Error>,
}

impl<L: IrqLine, C: Clock, W: Write + Send> Serial<L, C, W> {
    /// Creates a UART in its power-on state.
    ///
    /// `irq` is driven high while the chip signals an interrupt **and** MCR OUT2 is set
    /// **and** loopback is off. On a PC the UART's INTR pin reaches the ISA bus through a
    /// buffer enabled by the OUT2 output, and loopback forces OUT2 inactive, so a guest
    /// (Linux sets OUT2 when it opens the port) must set OUT2 to receive interrupts. IIR
    /// reports pending interrupts whatever OUT2 says.
    ///
    /// The modem inputs start as [`DEFAULT_MODEM_INPUTS`] (a ready terminal).
    pub fn new(irq: L, clock: C, output: W) -> Self {
        let now = clock.now_ns();
        Self {
            irq,
            clock,
            output,
            rx_room_line: None,
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            divisor: POWER_ON_DIVISOR,
            fifo_enabled: false,
            rx_trigger: 1,
            rx: Fifo::new(),
            overrun: false,
            thre_pending: false,
            msr_deltas: 0,
            modem_inputs: DEFAULT_MODEM_INPUTS,
            last_rx_activity_ns: now,
            timeout_latched: false,
            irq_level: false,
            rx_room_level: false,
            transmitted: 0,
            output_errors: 0,
            last_output_error: None,
        }
    }

    /// Attaches the "input room" signal: a line held high while
    /// [`input_room`](Self::input_room) is non-zero.
    ///
    /// Its rising edge tells the VMM that the guest has made room (by reading RBR, clearing
    /// the FIFO, leaving loopback...) so the main loop can resume reading its input source
    /// after [`enqueue_input`](Self::enqueue_input) accepted less than it was offered. Wire
    /// it to an eventfd written on rising edges. It is driven once here to its current level.
    pub fn with_input_room_line(mut self, line: Box<dyn IrqLine>) -> Self {
        self.rx_room_level = self.input_room() > 0;
        line.set_level(self.rx_room_level);
        self.rx_room_line = Some(line);
        self
    }

    /// Reads `data.len()` consecutive registers starting at `offset` from the port base.
    ///
    /// A wider access is split into byte accesses at consecutive offsets, as the ISA bus
    /// does. Offsets outside 0..8 read 0xFF. Reads have the chip's side effects (RBR pops
    /// the FIFO, IIR clears a reported THRE, LSR clears overrun, MSR clears the deltas).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.sync_time();
        let mut register = Some(offset);
        for byte in data.iter_mut() {
            *byte = match register {
                Some(reg) if reg < u64::from(PORT_RANGE_LEN) => self.read_register(reg),
                _ => 0xFF,
            };
            register = register.and_then(|r| r.checked_add(1));
        }
        self.update_outputs();
    }

    /// Writes `data` to consecutive registers starting at `offset` from the port base.
    ///
    /// A wider access is split into byte accesses at consecutive offsets; offsets outside
    /// 0..8 are ignored.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.sync_time();
        let mut register = Some(offset);
        for &byte in data {
            if let Some(reg) = register.filter(|&r| r < u64::from(PORT_RANGE_LEN)) {
                self.write_register(reg, byte);
            }
            register = register.and_then(|r| r.checked_add(1));
        }
        self.update_outputs();
    }

    /// Pushes bytes received from the outside world into the receive FIFO.
    ///
    /// Accepts at most [`input_room`](Self::input_room) bytes and returns how many it took
    /// (a prefix of `bytes`); the VMM keeps the rest and retries once room appears (see
    /// [`with_input_room_line`](Self::with_input_room_line)). Input is never dropped here,
    /// so the receiver never overruns from outside input.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.sync_time();
        let accepted = bytes.len().min(self.input_room());
        for &byte in bytes.iter().take(accepted) {
            self.rx.push(byte);
        }
        if accepted > 0 {
            self.last_rx_activity_ns = self.clock.now_ns();
        }
        self.update_outputs();
        accepted
    }

    /// How many bytes [`enqueue_input`](Self::enqueue_input) would accept now.
    ///
    /// 16 minus the FIFO level in FIFO mode, 1 or 0 in 16450 mode (RBR holds one byte), and
    /// 0 in loopback mode, where the chip disconnects its serial input.
    pub fn input_room(&self) -> usize {
        if self.mcr & MCR_LOOP != 0 {
            return 0;
        }
        self.rx_capacity().saturating_sub(self.rx.len())
    }

    /// Bytes waiting in the receive FIFO (or RBR in 16450 mode) for the guest.
    pub fn rx_fifo_len(&self) -> usize {
        self.rx.len()
    }

    /// Absolute time (on the device's clock) of the next character-timeout indication, if
    /// one is due: the receive FIFO holds data below the trigger level with ERBFI enabled
    /// in FIFO mode. Call [`update`](Self::update) once the clock reaches it.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        if self.timeout_latched
            || self.ier & IER_ERBFI == 0
            || !self.fifo_enabled
            || self.rx.is_empty()
            || self.rx.len() >= self.rx_trigger
        {
            return None;
        }
        Some(self.last_rx_activity_ns.saturating_add(self.timeout_ns()))
    }

    /// Brings time-driven state up to date and drives the IRQ line accordingly; the VMM
    /// calls it when [`next_deadline_ns`](Self::next_deadline_ns) has passed. Calling it at
    /// any other time is harmless.
    pub fn update(&mut self) {
        self.sync_time();
        self.update_outputs();
    }

    /// Sets the modem input signals seen in MSR bits 4-7 outside loopback mode
    /// (`MSR_CTS | MSR_DSR | MSR_RI | MSR_DCD`; other bits are ignored), recording deltas
    /// and raising a modem status interrupt as the chip would.
    pub fn set_modem_inputs(&mut self, inputs: u8) {
        self.sync_time();
        let before = self.modem_status_lines();
        self.modem_inputs = inputs & 0xF0;
        self.record_modem_change(before);
        self.update_outputs();
    }

    /// Returns the chip to its power-on state (master reset), keeping the output writer,
    /// the attached lines, the modem inputs and the statistics. Bytes waiting in the
    /// receive FIFO are discarded.
    pub fn reset(&mut self) {
        self.ier = 0;
        self.lcr = 0;
        self.mcr = 0;
        self.scr = 0;
        self.divisor = POWER_ON_DIVISOR;
        self.fifo_enabled = false;
        self.rx_trigger = 1;
        self.rx.clear();
        self.overrun = false;
        self.thre_pending = false;
        self.msr_deltas = 0;
        self.last_rx_activity_ns = self.clock.now_ns();
        self.timeout_latched = false;
        self.update_outputs();
    }

    /// The level currently driven on the IRQ line.
    pub fn irq_level(&self) -> bool {
        self.irq_level
    }

    /// The IRQ line given at construction.
    pub fn irq_line(&self) -> &L {
        &self.irq
    }

    /// The output writer.
    pub fn output(&self) -> &W {
        &self.output
    }

    /// The output writer, mutably (for example to swap a file).
    pub fn output_mut(&mut self) -> &mut W {
        &mut self.output
    }

    /// Consumes the device and returns its output writer.
    pub fn into_output(self) -> W {
        self.output
    }

    /// Bytes written to the output without error.
    pub fn transmitted_bytes(&self) -> u64 {
        self.transmitted
    }

    /// Bytes the output writer failed to take (each was dropped; the guest is not told,
    /// as a real line does not tell the sender either).
    pub fn output_error_count(&self) -> u64 {
        self.output_errors
    }

    /// Takes the most recent output error, if any occurred since the last call.
    pub fn take_output_error(&mut self) -> Option<Error> {
        self.last_output_error.take().map(|source| Error::Output {
            failed_writes: self.output_errors,
            source,
        })
    }

    fn read_register(&mut self, reg: u64) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR if dlab => self.divisor.to_le_bytes()[0],
            RBR_THR => self.read_rbr(),
            IER if dlab => self.divisor.to_le_bytes()[1],
            IER => self.ier,
            IIR_FCR => self.read_iir(),
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => self.read_lsr(),
            MSR => {
                let value = self.msr_deltas | self.modem_status_lines();
                self.msr_deltas = 0;
                value
            }
            _ => self.scr,
        }
    }

    fn write_register(&mut self, reg: u64, value: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR if dlab => self.divisor = (self.divisor & 0xFF00) | u16::from(value),
            RBR_THR => self.write_thr(value),
            IER if dlab => self.divisor = (self.divisor & 0x00FF) | (u16::from(value) << 8),
            IER => {
                // PC16550D 8.7: THRE interrupts as soon as ETBEI is enabled with THR empty
                // (Linux's 8250 driver probes for and relies on this).
                if value & IER_ETBEI != 0 && self.ier & IER_ETBEI == 0 {
                    self.thre_pending = true;
                }
                self.ier = value & 0x0F;
            }
            IIR_FCR => self.write_fcr(value),
            LCR => self.lcr = value,
            MCR => {
                let before = self.modem_status_lines();
                self.mcr = value & 0x1F;
                self.record_modem_change(before);
            }
            // LSR and MSR writes are factory-test only on the PC16550D.
            LSR | MSR => {}
            _ => self.scr = value,
        }
    }

    fn read_rbr(&mut self) -> u8 {
        // 8.11: a CPU read of the FIFO clears the timeout indication and restarts its timer.
        let byte = self.rx.pop().unwrap_or(0);
        self.timeout_latched = false;
        self.last_rx_activity_ns = self.clock.now_ns();
        byte
    }

    fn read_iir(&mut self) -> u8 {
        let id = self.interrupt_id();
        // 8.6 / Table IV: reading IIR clears THRE only when THRE is what it reports.
        if id == IIR_THR_EMPTY {
            self.thre_pending = false;
        }
        if self.fifo_enabled {
            id | IIR_FIFO_ENABLED
        } else {
            id
        }
    }

    fn read_lsr(&mut self) -> u8 {
        let mut value = LSR_THRE | LSR_TEMT;
        if !self.rx.is_empty() {
            value |= LSR_DR;
        }
        if self.overrun {
            value |= LSR_OE;
        }
        self.overrun = false;
        value
    }

    fn write_thr(&mut self, byte: u8) {
        if self.mcr & MCR_LOOP != 0 {
            self.loopback_receive(byte);
        } else {
            self.transmit(byte);
        }
        // The byte left THR at once, so THR is empty again and THRE interrupts anew.
        self.thre_pending = true;
    }

    fn transmit(&mut self, byte: u8) {
        let result = self
            .output
            .write_all(&[byte])
            .and_then(|()| self.output.flush());
        match result {
            Ok(()) => self.transmitted = self.transmitted.wrapping_add(1),
            Err(error) => {
                self.output_errors = self.output_errors.wrapping_add(1);
                self.last_output_error = Some(error);
            }
        }
    }

    fn loopback_receive(&mut self, byte: u8) {
        if self.rx.len() < self.rx_capacity() {
            self.rx.push(byte);
            self.last_rx_activity_ns = self.clock.now_ns();
            return;
        }
        // 8.4 LSR bit 1: in FIFO mode the new character is lost; in 16450 mode it
        // overwrites the unread one in RBR.
        self.overrun = true;
        if !self.fifo_enabled {
            self.rx.clear();
            self.rx.push(byte);
            self.last_rx_activity_ns = self.clock.now_ns();
        }
    }

    fn write_fcr(&mut self, value: u8) {
        let enable = value & FCR_ENABLE != 0;
        if enable != self.fifo_enabled {
            // 8.5: changing FCR0 clears both FIFOs; 8.11: the THRE interrupt after
            // changing FCR0 is immediate.
            self.fifo_enabled = enable;
            self.clear_rx();
            self.thre_pending = true;
        }
        // 8.5: the other bits are programmed only while FCR0 is written as 1.
        if !enable {
            return;
        }
        if value & FCR_CLEAR_RX != 0 {
            self.clear_rx();
        }
        // FCR_CLEAR_TX: the transmit FIFO is always empty. FCR_DMA_MODE only changes the
        // RXRDY/TXRDY pins.
        self.rx_trigger = match value & 0xC0 {
            FCR_TRIGGER_1 => 1,
            FCR_TRIGGER_4 => 4,
            FCR_TRIGGER_8 => 8,
            _ => 14,
        };
    }

    fn clear_rx(&mut self) {
        self.rx.clear();
        self.timeout_latched = false;
    }

    fn rx_capacity(&self) -> usize {
        if self.fifo_enabled {
            FIFO_SIZE
        } else {
            1
        }
    }

    /// MSR bits 4-7: the modem inputs, or in loopback the MCR outputs wired back to them.
    fn modem_status_lines(&self) -> u8 {
        if self.mcr & MCR_LOOP == 0 {
            return self.modem_inputs;
        }
        // 8.8 MCR bit 4: DTR -> DSR, RTS -> CTS, OUT1 -> RI, OUT2 -> DCD.
        let mut lines = 0;
        if self.mcr & MCR_DTR != 0 {
            lines |= MSR_DSR;
        }
        if self.mcr & MCR_RTS != 0 {
            lines |= MSR_CTS;
        }
        if self.mcr & MCR_OUT1 != 0 {
            lines |= MSR_RI;
        }
        if self.mcr & MCR_OUT2 != 0 {
            lines |= MSR_DCD;
        }
        lines
    }

    fn record_modem_change(&mut self, before: u8) {
        let after = self.modem_status_lines();
        let changed = before ^ after;
        if changed & MSR_CTS != 0 {
            self.msr_deltas |= MSR_DCTS;
        }
        if changed & MSR_DSR != 0 {
            self.msr_deltas |= MSR_DDSR;
        }
        if changed & MSR_DCD != 0 {
            self.msr_deltas |= MSR_DDCD;
        }
        // 8.9: TERI flags only the trailing edge of RI (on -> off).
        if before & MSR_RI != 0 && after & MSR_RI == 0 {
            self.msr_deltas |= MSR_TERI;
        }
    }

    /// Four character times, the FIFO timeout (8.11), from the divisor and the LCR frame.
    fn timeout_ns(&self) -> u64 {
        // A divisor of 0 lets the 16-bit counter wrap: the slowest rate.
        let divisor = if self.divisor == 0 {
            65_536u128
        } else {
            u128::from(self.divisor)
        };
        let data_bits = 5 + u128::from(self.lcr & LCR_WORD_LENGTH_MASK);
        let parity_bits = u128::from(self.lcr & LCR_PARITY_ENABLE != 0);
        // Counted in half bits because a 5-bit word with LCR bit 2 has 1.5 stop bits.
        let stop_half_bits = match (self.lcr & LCR_TWO_STOP_BITS != 0, data_bits) {
            (false, _) => 2,
            (true, 5) => 3,
            (true, _) => 4,
        };
        let half_bits = 2 * (1 + data_bits + parity_bits) + stop_half_bits;
        // 4 characters * bits * divisor * 16 clocks per bit / 1.8432 MHz, in ns.
        let ns = 4 * half_bits * divisor * 16 * 1_000_000_000 / (2 * u128::from(UART_CLOCK_HZ));
        u64::try_from(ns).unwrap_or(u64::MAX)
    }

    /// Latches the character timeout if its deadline has passed, before anything else
    /// (a new character or a read) restarts the timer.
    fn sync_time(&mut self) {
        if self.timeout_latched || !self.fifo_enabled || self.rx.is_empty() {
            return;
        }
        let deadline = self.last_rx_activity_ns.saturating_add(self.timeout_ns());
        if self.clock.now_ns() >= deadline {
            self.timeout_latched = true;
        }
    }

    /// The IIR identification bits of the highest-priority enabled interrupt (Table IV).
    fn interrupt_id(&self) -> u8 {
        let rx_data = if self.fifo_enabled {
            self.rx.len() >= self.rx_trigger
        } else {
            !self.rx.is_empty()
        };
        if self.ier & IER_ELSI != 0 && self.overrun {
            IIR_LINE_STATUS
        } else if self.ier & IER_ERBFI != 0 && rx_data {
            IIR_RX_DATA
        } else if self.ier & IER_ERBFI != 0 && self.timeout_latched && !self.rx.is_empty() {
            IIR_CHAR_TIMEOUT
        } else if self.ier & IER_ETBEI != 0 && self.thre_pending {
            IIR_THR_EMPTY
        } else if self.ier & IER_EDSSI != 0 && self.msr_deltas != 0 {
            IIR_MODEM_STATUS
        } else {
            IIR_NO_INTERRUPT
        }
    }

    /// Drives the IRQ and input-room lines to their current levels, on changes only
    /// (a level change may cost the VMM a system call).
    fn update_outputs(&mut self) {
        let gate_open = self.mcr & (MCR_OUT2 | MCR_LOOP) == MCR_OUT2;
        let irq_level = gate_open && self.interrupt_id() != IIR_NO_INTERRUPT;
        if irq_level != self.irq_level {
            self.irq_level = irq_level;
            self.irq.set_level(irq_level);
        }
        let room_level = self.input_room() > 0;
        if room_level != self.rx_room_level {
            self.rx_room_level = room_level;
            if let Some(line) = &self.rx_room_line {
                line.set_level(room_level);
            }
        }
    }
}

impl<L, C, W> fmt::Debug for Serial<L, C, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serial")
            .field("ier", &self.ier)
            .field("lcr", &self.lcr)
            .field("mcr", &self.mcr)
            .field("scr", &self.scr)
            .field("divisor", &self.divisor)
            .field("fifo_enabled", &self.fifo_enabled)
            .field("rx_trigger", &self.rx_trigger)
            .field("rx_len", &self.rx.len())
            .field("overrun", &self.overrun)
            .field("thre_pending", &self.thre_pending)
            .field("msr_deltas", &self.msr_deltas)
            .field("modem_inputs", &self.modem_inputs)
            .field("timeout_latched", &self.timeout_latched)
            .field("irq_level", &self.irq_level)
            .field("transmitted", &self.transmitted)
            .field("output_errors", &self.output_errors)
            .finish_non_exhaustive()
    }
}

/// Port I/O for any rust-vmm bus: register the device at the port's base with length
/// [`PORT_RANGE_LEN`]; `offset` is relative to it and `base` is not used.
impl<L: IrqLine, C: Clock, W: Write + Send> MutDevicePio for Serial<L, C, W> {
    fn pio_read(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(u64::from(offset), data);
    }

    fn pio_write(&mut self, _base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(u64::from(offset), data);
    }
}

#[cfg(test)]
mod proptests;
mod state;
pub use state::{SerialState, SERIAL_STATE_VERSION};
