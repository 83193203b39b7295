//! The 8042 keyboard controller, with no keyboard or mouse plugged in.
//!
//! On a PC the 8042's output port bit 0 drives the CPU reset pin and bit 1 the A20 gate, so
//! even a VM with no keyboard needs the controller: it is the classic way to reboot. This
//! model implements the controller's registers and commands; the keyboard and auxiliary
//! ports have nothing attached.
//!
//! # Ports
//! Offsets are relative to port 0x60: offset 0 is the data port (0x60), offset 4 the
//! status (read) / command (write) port (0x64). Offsets 1..=3 are other devices' ports
//! (0x61 is the PIT/speaker port B) and read 0xFF. On a PIO bus register the device twice,
//! at 0x60 and at 0x64, one port each; [`vm_device::MutDevicePio`] uses the absolute port.
//!
//! # Status register (port 0x64 read; 8042 status byte)
//! bit 0 output buffer full, bit 1 input buffer full (always 0: commands complete at once),
//! bit 2 system flag (set, as a BIOS leaves it after the self-test), bit 3 last write was a
//! command, bit 4 keyboard not inhibited (always 1), bit 5 output buffer holds auxiliary
//! data, bit 6 timeout (a byte sent to an absent device), bit 7 parity error (always 0).
//! Bits 1 and 7 are never set, so the status can never read 0xFF, which Linux's
//! `i8042_controller_check` (via `i8042_flush`) treats as "no controller".
//!
//! # Commands (port 0x64 write)
//! | command | effect |
//! |---|---|
//! | 0x20..=0x3F | read controller RAM byte `cmd & 0x1F`; 0x20 reads the command byte |
//! | 0x60..=0x7F | write controller RAM byte `cmd & 0x1F` with the next data byte; 0x60 writes the command byte |
//! | 0xA7 / 0xA8 | disable / enable the auxiliary port (command byte bit 5) |
//! | 0xA9 / 0xAB | auxiliary / keyboard interface test: answers 0x00 (no error) |
//! | 0xAA | controller self-test: answers 0x55 and sets the system flag |
//! | 0xAD / 0xAE | disable / enable the keyboard port (command byte bit 4) |
//! | 0xD0 / 0xD1 | read / write the output port; writing bit 0 clear pulses CPU reset |
//! | 0xD2 / 0xD3 | next data byte appears in the output buffer as keyboard / auxiliary data (loopback) |
//! | 0xD4 | next data byte goes to the auxiliary device: none, so a timeout |
//! | 0xDD / 0xDF | A20 gate off / on |
//! | 0xF0..=0xFF | pulse output-port lines whose bit is 0 in the low nibble; bit 0 clear (e.g. 0xFE) pulses CPU reset |
//!
//! Other commands are ignored with no answer. A data byte written with no command pending is
//! for the keyboard, which is absent: the controller answers 0xFE with the timeout bit set,
//! one of the "nothing there" answers Linux's `i8042_interrupt` accepts, and the guest's
//! keyboard probe fails cleanly instead of waiting.
//!
//! # What Linux does with it
//! - Probe (`drivers/input/serio/i8042.c`): flush the output buffer until status bit 0 is
//!   clear, read the command byte (0x20), write it back (0x60), optionally self-test (0xAA,
//!   expects 0x55), check the auxiliary port with loopback 0xD3 / test 0xA9 and disable /
//!   enable 0xA7 / 0xA8 with command-byte read-backs. All complete immediately here.
//! - Reboot with `reboot=k` (`arch/x86/kernel/reboot.c`, also a fallback of the default
//!   ACPI method): up to 10 times, wait until status bit 1 (input buffer full) is clear, then
//!   write 0xFE to port 0x64. Input buffer full is never set, so the first write pulses reset.
//!
//! # Reset line and interrupts
//! The CPU reset output is an [`IrqLine`]: high means reset asserted. The controller pulses
//! it (high then low), so a VMM that sees a rising edge resets the machine; the controller
//! itself is not reset by it (call [`I8042::reset`] when the machine resets). IRQ1 and IRQ12
//! are optional ([`I8042::with_interrupts`]): each is high while the output buffer holds
//! keyboard (IRQ1) or auxiliary (IRQ12) data and the command byte enables that interrupt.

use vm_device::bus::{PioAddress, PioAddressOffset};
use vm_device::MutDevicePio;
use vmkit_hw::IrqLine;

use crate::{byte_offsets, pio_offset, I8042_COMMAND_PORT, I8042_DATA_PORT};

/// Status bit 0: the output buffer holds a byte for the host.
pub const STATUS_OUTPUT_FULL: u8 = 0x01;
/// Status bit 1: the controller has not yet taken the last byte written (never set here).
pub const STATUS_INPUT_FULL: u8 = 0x02;
/// Status bit 2: system flag, set after a successful self-test.
pub const STATUS_SYSTEM_FLAG: u8 = 0x04;
/// Status bit 3: the last byte written went to the command port.
pub const STATUS_LAST_WAS_COMMAND: u8 = 0x08;
/// Status bit 4: keyboard not inhibited (keylock open).
pub const STATUS_NOT_INHIBITED: u8 = 0x10;
/// Status bit 5: the output buffer byte came from the auxiliary port.
pub const STATUS_AUX_DATA: u8 = 0x20;
/// Status bit 6: timeout talking to a device.
pub const STATUS_TIMEOUT: u8 = 0x40;
/// Status bit 7: parity error (never set here).
pub const STATUS_PARITY_ERROR: u8 = 0x80;

/// Command byte bit 0: interrupt (IRQ1) on keyboard data.
pub const CTR_KBD_INT: u8 = 0x01;
/// Command byte bit 1: interrupt (IRQ12) on auxiliary data.
pub const CTR_AUX_INT: u8 = 0x02;
/// Command byte bit 2: system flag.
pub const CTR_SYSTEM_FLAG: u8 = 0x04;
/// Command byte bit 4: keyboard port disabled.
pub const CTR_KBD_DISABLE: u8 = 0x10;
/// Command byte bit 5: auxiliary port disabled.
pub const CTR_AUX_DISABLE: u8 = 0x20;
/// Command byte bit 6: translate scan codes to set 1.
pub const CTR_TRANSLATE: u8 = 0x40;

/// Command byte as a BIOS leaves it: keyboard interrupt, system flag, translation.
pub const DEFAULT_COMMAND_BYTE: u8 = CTR_KBD_INT | CTR_SYSTEM_FLAG | CTR_TRANSLATE;

/// Output port bit 0: CPU reset (low = reset).
pub const OUTPUT_PORT_RESET_N: u8 = 0x01;
/// Output port bit 1: A20 gate enabled.
pub const OUTPUT_PORT_A20: u8 = 0x02;
/// Output port bit 4: keyboard output buffer full (drives IRQ1).
const OUTPUT_PORT_KBD_FULL: u8 = 0x10;
/// Output port bit 5: auxiliary output buffer full (drives IRQ12).
const OUTPUT_PORT_AUX_FULL: u8 = 0x20;
/// Output port at power-on: not in reset, A20 on, clock/data lines idle high.
const DEFAULT_OUTPUT_PORT: u8 = 0xCF;

/// Answer of the self-test command 0xAA.
pub const SELF_TEST_OK: u8 = 0x55;
/// Answer of the interface tests 0xA9 / 0xAB.
pub const INTERFACE_TEST_OK: u8 = 0x00;
/// What a write to an absent device produces in the output buffer (with status bit 6).
pub const NO_DEVICE_RESPONSE: u8 = 0xFE;

/// Offset of the data port (0x60) from the device base.
const DATA_OFFSET: u64 = 0;
/// Offset of the status/command port (0x64) from the device base.
const COMMAND_OFFSET: u64 = (I8042_COMMAND_PORT - I8042_DATA_PORT) as u64;

/// What the next byte written to the data port is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataTarget {
    /// The keyboard (absent).
    Keyboard,
    /// Controller RAM byte (0 = command byte).
    Ram(u8),
    /// The output port (command 0xD1).
    OutputPort,
    /// Loopback as keyboard data (command 0xD2).
    KeyboardOutputBuffer,
    /// Loopback as auxiliary data (command 0xD3).
    AuxOutputBuffer,
    /// The auxiliary device (command 0xD4; absent).
    AuxDevice,
}

/// The 8042 controller (see the [module docs](self)).
#[derive(Debug)]
pub struct I8042<L: IrqLine> {
    reset_line: L,
    kbd_irq: Option<L>,
    aux_irq: Option<L>,
    kbd_irq_level: bool,
    aux_irq_level: bool,
    /// Controller RAM; byte 0 is the command byte.
    ram: [u8; 32],
    /// The output buffer keeps its last byte after a read, as the chip's register does.
    output: u8,
    output_full: bool,
    output_from_aux: bool,
    system_flag: bool,
    last_write_was_command: bool,
    timeout: bool,
    data_target: DataTarget,
    output_port: u8,
    reset_pulses: u64,
}

impl<L: IrqLine> I8042<L> {
    /// A controller driving `reset_line` (high = CPU reset asserted), with IRQ1/IRQ12 not
    /// connected.
    pub fn new(reset_line: L) -> Self {
        Self::build(reset_line, None, None)
    }

    /// A controller that also drives IRQ1 (`kbd_irq`) and IRQ12 (`aux_irq`).
    pub fn with_interrupts(reset_line: L, kbd_irq: L, aux_irq: L) -> Self {
        Self::build(reset_line, Some(kbd_irq), Some(aux_irq))
    }

    fn build(reset_line: L, kbd_irq: Option<L>, aux_irq: Option<L>) -> Self {
        let mut dev = Self {
            reset_line,
            kbd_irq,
            aux_irq,
            kbd_irq_level: false,
            aux_irq_level: false,
            ram: [0; 32],
            output: 0,
            output_full: false,
            output_from_aux: false,
            system_flag: true,
            last_write_was_command: false,
            timeout: false,
            data_target: DataTarget::Keyboard,
            output_port: DEFAULT_OUTPUT_PORT,
            reset_pulses: 0,
        };
        dev.reset();
        dev
    }

    /// Returns the controller to the state a BIOS leaves it in after POST: self-test passed
    /// (system flag set), command byte [`DEFAULT_COMMAND_BYTE`], buffers empty, A20 on.
    /// The reset-pulse count is kept.
    pub fn reset(&mut self) {
        self.ram = [0; 32];
        self.ram[0] = DEFAULT_COMMAND_BYTE;
        self.output = 0;
        self.output_full = false;
        self.output_from_aux = false;
        self.system_flag = true;
        self.last_write_was_command = false;
        self.timeout = false;
        self.data_target = DataTarget::Keyboard;
        self.output_port = DEFAULT_OUTPUT_PORT;
        self.update_irqs();
    }

    /// The status register as port 0x64 reads it (no side effects).
    pub fn status(&self) -> u8 {
        let mut status = STATUS_NOT_INHIBITED;
        if self.output_full {
            status |= STATUS_OUTPUT_FULL;
            if self.output_from_aux {
                status |= STATUS_AUX_DATA;
            }
        }
        if self.system_flag {
            status |= STATUS_SYSTEM_FLAG;
        }
        if self.last_write_was_command {
            status |= STATUS_LAST_WAS_COMMAND;
        }
        if self.timeout {
            status |= STATUS_TIMEOUT;
        }
        status
    }

    /// The command byte (controller RAM byte 0).
    pub fn command_byte(&self) -> u8 {
        self.ram[0]
    }

    /// The output port as command 0xD0 reads it.
    pub fn output_port(&self) -> u8 {
        let mut port = self.output_port & !(OUTPUT_PORT_KBD_FULL | OUTPUT_PORT_AUX_FULL);
        if self.output_full {
            port |= if self.output_from_aux {
                OUTPUT_PORT_AUX_FULL
            } else {
                OUTPUT_PORT_KBD_FULL
            };
        }
        port
    }

    /// Whether the A20 gate (output port bit 1) is enabled.
    pub fn a20_enabled(&self) -> bool {
        self.output_port & OUTPUT_PORT_A20 != 0
    }

    /// How many times the controller pulsed the CPU reset line.
    pub fn reset_pulses(&self) -> u64 {
        self.reset_pulses
    }

    /// Reads from `offset` relative to port 0x60 (0: data, 4: status).
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        let len = data.len();
        for (byte, offset) in data.iter_mut().zip(byte_offsets(offset, len)) {
            *byte = match offset {
                DATA_OFFSET => self.read_data(),
                COMMAND_OFFSET => self.status(),
                _ => 0xFF,
            };
        }
    }

    /// Writes to `offset` relative to port 0x60 (0: data, 4: command).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        for (&value, offset) in data.iter().zip(byte_offsets(offset, data.len())) {
            match offset {
                DATA_OFFSET => self.write_data(value),
                COMMAND_OFFSET => self.write_command(value),
                _ => {}
            }
        }
    }

    fn read_data(&mut self) -> u8 {
        self.output_full = false;
        self.update_irqs();
        self.output
    }

    fn write_command(&mut self, command: u8) {
        self.last_write_was_command = true;
        self.timeout = false;
        // A new command abandons a parameter the previous one was waiting for.
        self.data_target = DataTarget::Keyboard;
        match command {
            0x20..=0x3F => self.respond(self.ram_byte(command), false),
            0x60..=0x7F => self.data_target = DataTarget::Ram(command & 0x1F),
            0xA7 => self.set_command_byte(self.ram[0] | CTR_AUX_DISABLE),
            0xA8 => self.set_command_byte(self.ram[0] & !CTR_AUX_DISABLE),
            0xA9 | 0xAB => self.respond(INTERFACE_TEST_OK, false),
            0xAA => {
                self.system_flag = true;
                self.respond(SELF_TEST_OK, false);
            }
            0xAD => self.set_command_byte(self.ram[0] | CTR_KBD_DISABLE),
            0xAE => self.set_command_byte(self.ram[0] & !CTR_KBD_DISABLE),
            0xD0 => self.respond(self.output_port(), false),
            0xD1 => self.data_target = DataTarget::OutputPort,
            0xD2 => self.data_target = DataTarget::KeyboardOutputBuffer,
            0xD3 => self.data_target = DataTarget::AuxOutputBuffer,
            0xD4 => self.data_target = DataTarget::AuxDevice,
            0xDD => self.output_port &= !OUTPUT_PORT_A20,
            0xDF => self.output_port |= OUTPUT_PORT_A20,
            // 0xF0..=0xFF pulse each output-port line whose low-nibble bit is 0 for ~6 us.
            // Only the reset line has a visible effect; a brief A20 pulse changes nothing a
            // VMM models.
            0xF0..=0xFF if command & OUTPUT_PORT_RESET_N == 0 => self.pulse_reset(),
            _ => {}
        }
    }

    fn write_data(&mut self, value: u8) {
        self.last_write_was_command = false;
        self.timeout = false;
        let target = std::mem::replace(&mut self.data_target, DataTarget::Keyboard);
        match target {
            DataTarget::Ram(0) => self.set_command_byte(value),
            DataTarget::Ram(index) => {
                if let Some(byte) = self.ram.get_mut(usize::from(index)) {
                    *byte = value;
                }
            }
            DataTarget::OutputPort => self.write_output_port(value),
            DataTarget::KeyboardOutputBuffer => self.respond(value, false),
            DataTarget::AuxOutputBuffer => self.respond(value, true),
            DataTarget::Keyboard => self.no_device(false),
            DataTarget::AuxDevice => self.no_device(true),
        }
    }

    fn ram_byte(&self, command: u8) -> u8 {
        self.ram
            .get(usize::from(command & 0x1F))
            .copied()
            .unwrap_or(0)
    }

    fn set_command_byte(&mut self, value: u8) {
        self.ram[0] = value;
        // The 8042 mirrors command-byte bit 2 into status bit 2.
        self.system_flag = value & CTR_SYSTEM_FLAG != 0;
        self.update_irqs();
    }

    fn write_output_port(&mut self, value: u8) {
        // Bits 4/5 are outputs driven by the buffer state, not by this write.
        self.output_port = value | OUTPUT_PORT_RESET_N;
        if value & OUTPUT_PORT_RESET_N == 0 {
            // Holding the CPU in reset forever is useless to a VMM: reset is a pulse, and
            // the pin reads back as released.
            self.pulse_reset();
        }
    }

    fn pulse_reset(&mut self) {
        self.reset_pulses = self.reset_pulses.wrapping_add(1);
        self.reset_line.pulse();
    }

    fn respond(&mut self, value: u8, from_aux: bool) {
        self.output = value;
        self.output_full = true;
        self.output_from_aux = from_aux;
        self.update_irqs();
    }

    fn no_device(&mut self, aux: bool) {
        self.respond(NO_DEVICE_RESPONSE, aux);
        self.timeout = true;
    }

    fn update_irqs(&mut self) {
        let kbd = self.output_full && !self.output_from_aux && self.ram[0] & CTR_KBD_INT != 0;
        let aux = self.output_full && self.output_from_aux && self.ram[0] & CTR_AUX_INT != 0;
        if kbd != self.kbd_irq_level {
            self.kbd_irq_level = kbd;
            if let Some(line) = &self.kbd_irq {
                line.set_level(kbd);
            }
        }
        if aux != self.aux_irq_level {
            self.aux_irq_level = aux;
            if let Some(line) = &self.aux_irq {
                line.set_level(aux);
            }
        }
    }
}

impl<L: IrqLine> MutDevicePio for I8042<L> {
    fn pio_read(&mut self, base: PioAddress, offset: PioAddressOffset, data: &mut [u8]) {
        self.read(pio_offset(I8042_DATA_PORT, base, offset), data);
    }

    fn pio_write(&mut self, base: PioAddress, offset: PioAddressOffset, data: &[u8]) {
        self.write(pio_offset(I8042_DATA_PORT, base, offset), data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::{Arc, Mutex};
    use vm_device::DevicePio;
    use vmkit_hw::RecordingLine;

    type Kbc = I8042<Arc<RecordingLine>>;

    fn controller() -> (Arc<RecordingLine>, Kbc) {
        let reset = Arc::new(RecordingLine::new());
        (reset.clone(), I8042::new(reset))
    }

    fn status(kbc: &mut Kbc) -> u8 {
        let mut b = [0];
        kbc.read(COMMAND_OFFSET, &mut b);
        b[0]
    }

    fn command(kbc: &mut Kbc, cmd: u8) {
        kbc.write(COMMAND_OFFSET, &[cmd]);
    }

    fn data_in(kbc: &mut Kbc) -> u8 {
        let mut b = [0];
        kbc.read(DATA_OFFSET, &mut b);
        b[0]
    }

    /// Sends a command and returns its one-byte answer, as Linux's `i8042_command` does.
    fn query(kbc: &mut Kbc, cmd: u8) -> u8 {
        command(kbc, cmd);
        assert_ne!(
            status(kbc) & STATUS_OUTPUT_FULL,
            0,
            "command {cmd:#x} answers"
        );
        data_in(kbc)
    }

    #[test]
    fn power_on_status_is_sane_and_never_0xff() {
        // 8042 status byte: system flag after self-test, keylock open, buffers empty.
        let (_, mut kbc) = controller();
        let s = status(&mut kbc);
        assert_eq!(s, STATUS_SYSTEM_FLAG | STATUS_NOT_INHIBITED);
        assert_ne!(s, 0xFF);
        assert_eq!(s & STATUS_INPUT_FULL, 0);
        assert_eq!(kbc.command_byte(), DEFAULT_COMMAND_BYTE);
    }

    #[test]
    fn reset_command_0xfe_pulses_cpu_reset() {
        // 8042 command 0xFE: pulse output port bit 0 (CPU reset) low.
        let (reset, mut kbc) = controller();
        // Linux reboot=k: wait for input buffer empty, then write 0xFE to 0x64.
        assert_eq!(status(&mut kbc) & STATUS_INPUT_FULL, 0);
        command(&mut kbc, 0xFE);
        assert_eq!(reset.rising_edges(), 1);
        assert!(!reset.level(), "pulse ends with the line released");
        assert_eq!(kbc.reset_pulses(), 1);
        // The controller keeps working for a second attempt (Linux loops up to 10 times).
        command(&mut kbc, 0xFE);
        assert_eq!(reset.rising_edges(), 2);
    }

    #[test]
    fn pulse_commands_only_reset_when_bit0_clear() {
        // 8042 commands 0xF0-0xFF: low nibble 0 bits select lines pulsed low.
        let (reset, mut kbc) = controller();
        for cmd in 0xF0..=0xFFu8 {
            command(&mut kbc, cmd);
        }
        // 0xF0, 0xF2, ..., 0xFE: the eight commands with bit 0 clear.
        assert_eq!(reset.rising_edges(), 8);
        assert!(kbc.a20_enabled());
    }

    #[test]
    fn command_byte_read_and_write() {
        // 8042 commands 0x20 (read RAM byte 0) and 0x60 (write RAM byte 0).
        let (_, mut kbc) = controller();
        assert_eq!(query(&mut kbc, 0x20), DEFAULT_COMMAND_BYTE);
        command(&mut kbc, 0x60);
        assert_ne!(status(&mut kbc) & STATUS_LAST_WAS_COMMAND, 0);
        kbc.write(DATA_OFFSET, &[0x30]);
        assert_eq!(status(&mut kbc) & STATUS_LAST_WAS_COMMAND, 0);
        assert_eq!(kbc.command_byte(), 0x30);
        // Command-byte bit 2 is mirrored to the status system flag.
        assert_eq!(status(&mut kbc) & STATUS_SYSTEM_FLAG, 0);
        assert_eq!(query(&mut kbc, 0x20), 0x30);
        command(&mut kbc, 0x60);
        kbc.write(DATA_OFFSET, &[0x45]);
        assert_ne!(status(&mut kbc) & STATUS_SYSTEM_FLAG, 0);
    }

    #[test]
    fn other_ram_bytes() {
        // 8042 commands 0x21-0x3F / 0x61-0x7F address controller RAM bytes 1-31.
        let (_, mut kbc) = controller();
        command(&mut kbc, 0x7F);
        kbc.write(DATA_OFFSET, &[0x5A]);
        assert_eq!(query(&mut kbc, 0x3F), 0x5A);
        assert_eq!(kbc.command_byte(), DEFAULT_COMMAND_BYTE);
    }

    #[test]
    fn self_test_and_interface_tests() {
        // 8042 0xAA: self-test answers 0x55; 0xAB/0xA9: interface tests answer 0x00.
        let (_, mut kbc) = controller();
        command(&mut kbc, 0x60);
        kbc.write(DATA_OFFSET, &[0x00]);
        assert_eq!(status(&mut kbc) & STATUS_SYSTEM_FLAG, 0);
        assert_eq!(query(&mut kbc, 0xAA), SELF_TEST_OK);
        assert_ne!(status(&mut kbc) & STATUS_SYSTEM_FLAG, 0);
        assert_eq!(query(&mut kbc, 0xAB), INTERFACE_TEST_OK);
        assert_eq!(query(&mut kbc, 0xA9), INTERFACE_TEST_OK);
        assert_eq!(status(&mut kbc) & STATUS_OUTPUT_FULL, 0);
    }

    #[test]
    fn port_enable_disable_commands() {
        // 8042 0xAD/0xAE keyboard and 0xA7/0xA8 auxiliary disable/enable (command byte bits 4/5).
        let (_, mut kbc) = controller();
        command(&mut kbc, 0xAD);
        assert_ne!(query(&mut kbc, 0x20) & CTR_KBD_DISABLE, 0);
        command(&mut kbc, 0xAE);
        assert_eq!(query(&mut kbc, 0x20) & CTR_KBD_DISABLE, 0);
        command(&mut kbc, 0xA7);
        assert_ne!(query(&mut kbc, 0x20) & CTR_AUX_DISABLE, 0);
        command(&mut kbc, 0xA8);
        assert_eq!(query(&mut kbc, 0x20) & CTR_AUX_DISABLE, 0);
    }

    #[test]
    fn output_port_read_write_and_reset_via_bit0() {
        // 8042 0xD0/0xD1: read/write output port; bit 0 = CPU reset (active low), bit 1 = A20.
        let (reset, mut kbc) = controller();
        let port = query(&mut kbc, 0xD0);
        assert_eq!(port & (OUTPUT_PORT_RESET_N | OUTPUT_PORT_A20), 0x03);
        command(&mut kbc, 0xD1);
        kbc.write(DATA_OFFSET, &[0xCD]); // A20 off, reset released
        assert!(!kbc.a20_enabled());
        assert_eq!(reset.rising_edges(), 0);
        command(&mut kbc, 0xD1);
        kbc.write(DATA_OFFSET, &[0xCE]); // bit 0 clear: reset
        assert_eq!(reset.rising_edges(), 1);
        assert!(kbc.a20_enabled());
        assert_eq!(
            query(&mut kbc, 0xD0) & OUTPUT_PORT_RESET_N,
            OUTPUT_PORT_RESET_N
        );
        command(&mut kbc, 0xDD);
        assert!(!kbc.a20_enabled());
        command(&mut kbc, 0xDF);
        assert!(kbc.a20_enabled());
    }

    #[test]
    fn loopback_commands_mark_data_source() {
        // 8042 (PS/2) 0xD2/0xD3: write keyboard/auxiliary output buffer; Linux's AUX_LOOP.
        let (_, mut kbc) = controller();
        command(&mut kbc, 0xD3);
        kbc.write(DATA_OFFSET, &[0x5A]);
        let s = status(&mut kbc);
        assert_eq!(
            s & (STATUS_OUTPUT_FULL | STATUS_AUX_DATA),
            STATUS_OUTPUT_FULL | STATUS_AUX_DATA
        );
        assert_eq!(data_in(&mut kbc), 0x5A);
        command(&mut kbc, 0xD2);
        kbc.write(DATA_OFFSET, &[0xA5]);
        assert_eq!(status(&mut kbc) & STATUS_AUX_DATA, 0);
        assert_eq!(data_in(&mut kbc), 0xA5);
    }

    #[test]
    fn writes_to_absent_devices_time_out() {
        // No keyboard or mouse attached: the controller reports a timeout with 0xFE.
        let (_, mut kbc) = controller();
        kbc.write(DATA_OFFSET, &[0xFF]); // keyboard reset command
        let s = status(&mut kbc);
        assert_ne!(s & STATUS_TIMEOUT, 0);
        assert_ne!(s & STATUS_OUTPUT_FULL, 0);
        assert_eq!(s & STATUS_AUX_DATA, 0);
        assert_eq!(data_in(&mut kbc), NO_DEVICE_RESPONSE);
        command(&mut kbc, 0xD4);
        assert_eq!(status(&mut kbc) & STATUS_TIMEOUT, 0);
        kbc.write(DATA_OFFSET, &[0xF4]);
        let s = status(&mut kbc);
        assert_eq!(
            s & (STATUS_TIMEOUT | STATUS_AUX_DATA),
            STATUS_TIMEOUT | STATUS_AUX_DATA
        );
        assert_eq!(data_in(&mut kbc), NO_DEVICE_RESPONSE);
    }

    #[test]
    fn flush_loop_terminates() {
        // Linux i8042_flush: read data while status bit 0 is set; must end at once.
        let (_, mut kbc) = controller();
        kbc.write(DATA_OFFSET, &[0xF2]);
        let mut reads = 0;
        while status(&mut kbc) & STATUS_OUTPUT_FULL != 0 {
            data_in(&mut kbc);
            reads += 1;
            assert!(reads <= 16);
        }
        assert_eq!(reads, 1);
        // An empty buffer re-reads the last byte, like the chip's output register.
        assert_eq!(data_in(&mut kbc), NO_DEVICE_RESPONSE);
    }

    #[test]
    fn new_command_cancels_pending_parameter() {
        let (_, mut kbc) = controller();
        command(&mut kbc, 0x60);
        command(&mut kbc, 0xAE);
        kbc.write(DATA_OFFSET, &[0x00]);
        assert_eq!(kbc.command_byte(), DEFAULT_COMMAND_BYTE);
    }

    #[test]
    fn interrupts_follow_buffer_and_enable_bits() {
        // 8042: IRQ1/IRQ12 follow output-buffer-full when command byte bits 0/1 allow.
        let reset = Arc::new(RecordingLine::new());
        let irq1 = Arc::new(RecordingLine::new());
        let irq12 = Arc::new(RecordingLine::new());
        let mut kbc = I8042::with_interrupts(reset, irq1.clone(), irq12.clone());
        kbc.write(COMMAND_OFFSET, &[0x20]);
        assert!(irq1.level());
        let mut b = [0];
        kbc.read(DATA_OFFSET, &mut b);
        assert!(!irq1.level());
        // Aux interrupt disabled by default: loopback as aux raises nothing.
        kbc.write(COMMAND_OFFSET, &[0xD3]);
        kbc.write(DATA_OFFSET, &[0x11]);
        assert!(!irq12.level());
        kbc.read(DATA_OFFSET, &mut b);
        kbc.write(COMMAND_OFFSET, &[0x60]);
        kbc.write(DATA_OFFSET, &[DEFAULT_COMMAND_BYTE | CTR_AUX_INT]);
        kbc.write(COMMAND_OFFSET, &[0xD3]);
        kbc.write(DATA_OFFSET, &[0x22]);
        assert!(irq12.level());
        assert!(!irq1.level());
        kbc.read(DATA_OFFSET, &mut b);
        assert!(!irq12.level());
        assert_eq!(irq1.rising_edges(), 1);
        assert_eq!(irq12.rising_edges(), 1);
    }

    #[test]
    fn ports_between_data_and_status_are_not_ours() {
        let (_, mut kbc) = controller();
        let mut buf = [0u8; 5];
        kbc.write(COMMAND_OFFSET, &[0x20]);
        kbc.read(DATA_OFFSET, &mut buf);
        assert_eq!(buf[0], DEFAULT_COMMAND_BYTE);
        assert_eq!(&buf[1..4], &[0xFF; 3]);
        assert_eq!(
            buf[4],
            STATUS_SYSTEM_FLAG | STATUS_NOT_INHIBITED | STATUS_LAST_WAS_COMMAND
        );
    }

    #[test]
    fn pio_bus_with_two_ranges() {
        let reset = Arc::new(RecordingLine::new());
        let kbc = Mutex::new(I8042::new(reset.clone()));
        let mut b = [0];
        DevicePio::pio_read(&kbc, PioAddress(I8042_COMMAND_PORT), 0, &mut b);
        assert_eq!(b[0] & STATUS_SYSTEM_FLAG, STATUS_SYSTEM_FLAG);
        DevicePio::pio_write(&kbc, PioAddress(I8042_COMMAND_PORT), 0, &[0xFE]);
        assert_eq!(reset.rising_edges(), 1);
        DevicePio::pio_write(&kbc, PioAddress(0x50), 0, &[0xFE]);
        assert_eq!(reset.rising_edges(), 1);
    }

    #[test]
    fn machine_reset_restores_bios_state() {
        let (_, mut kbc) = controller();
        command(&mut kbc, 0x60);
        kbc.write(DATA_OFFSET, &[0x00]);
        command(&mut kbc, 0xDD);
        command(&mut kbc, 0xFE);
        kbc.reset();
        assert_eq!(kbc.command_byte(), DEFAULT_COMMAND_BYTE);
        assert!(kbc.a20_enabled());
        assert_eq!(kbc.status(), STATUS_SYSTEM_FLAG | STATUS_NOT_INHIBITED);
        assert_eq!(kbc.reset_pulses(), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// No panic on any access sequence. Invariants: the status never shows input-full or
        /// parity (so never 0xFF), the reset line is never left asserted, every reset pulse
        /// is one rising edge, and a data read empties the output buffer.
        #[test]
        fn any_access_sequence(ops in prop::collection::vec(
            (
                any::<bool>(),
                prop_oneof![Just(0u64), Just(4u64), 0u64..8, any::<u64>()],
                // Bias half of the bytes towards the implemented commands.
                prop::collection::vec(
                    (any::<bool>(), any::<u8>()).prop_map(|(interesting, v)| {
                        if interesting {
                            const COMMANDS: [u8; 16] = [
                                0x20, 0x3F, 0x60, 0x7F, 0xA7, 0xA8, 0xA9, 0xAA, 0xAB, 0xAD,
                                0xAE, 0xD0, 0xD1, 0xD2, 0xD3, 0xD4,
                            ];
                            // 0xF0..=0xFF: the pulse commands; otherwise pick a listed one.
                            if v >= 0xF0 { v } else { COMMANDS[usize::from(v % 16)] }
                        } else {
                            v
                        }
                    }),
                    0..=9,
                ),
            ),
            0..64,
        )) {
            let reset = Arc::new(RecordingLine::new());
            let irq1 = Arc::new(RecordingLine::new());
            let irq12 = Arc::new(RecordingLine::new());
            let mut kbc = I8042::with_interrupts(reset.clone(), irq1.clone(), irq12.clone());
            for (is_write, offset, bytes) in ops {
                if is_write {
                    kbc.write(offset, &bytes);
                } else {
                    let mut buf = bytes.clone();
                    kbc.read(offset, &mut buf);
                    if offset == DATA_OFFSET && !buf.is_empty() {
                        prop_assert_eq!(kbc.status() & STATUS_OUTPUT_FULL, 0);
                    }
                }
                let s = kbc.status();
                prop_assert_eq!(s & (STATUS_INPUT_FULL | STATUS_PARITY_ERROR), 0);
                prop_assert_ne!(s & STATUS_NOT_INHIBITED, 0);
                prop_assert!(!reset.level());
                prop_assert_eq!(reset.rising_edges(), kbc.reset_pulses());
                prop_assert!(!(irq1.level() && irq12.level()));
                if s & STATUS_OUTPUT_FULL == 0 {
                    prop_assert!(!irq1.level() && !irq12.level());
                }
                prop_assert_eq!(kbc.output_port() & OUTPUT_PORT_RESET_N, OUTPUT_PORT_RESET_N);
            }
        }
    }
}

/// The layout version [`I8042State`] has; [`I8042::restore`] accepts only this one.
pub const I8042_STATE_VERSION: u32 = 1;

/// The 8042 as plain data (QEMU's `vmstate_kbd`): controller RAM, the output buffer and
/// status flags, where the next data byte goes, and the output port (A20).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042State {
    /// Layout version, [`I8042_STATE_VERSION`].
    pub version: u32,
    /// Controller RAM, 32 bytes (byte 0 is the command byte).
    pub ram: Vec<u8>,
    /// The output buffer.
    pub output: u8,
    /// Status OBF.
    pub output_full: bool,
    /// Status AUXB.
    pub output_from_aux: bool,
    /// Status SYS.
    pub system_flag: bool,
    /// Status A2 (last write to the command port).
    pub last_write_was_command: bool,
    /// Status TO.
    pub timeout: bool,
    /// Where the next data-port write goes: 0 keyboard, 1 output port, 2/3 loopback as
    /// keyboard/aux data, 4 aux device, 0x100 + n controller RAM byte n.
    pub data_target: u16,
    /// The output port.
    pub output_port: u8,
}

impl<L: IrqLine> I8042<L> {
    /// The controller's state now.
    pub fn state(&self) -> I8042State {
        I8042State {
            version: I8042_STATE_VERSION,
            ram: self.ram.to_vec(),
            output: self.output,
            output_full: self.output_full,
            output_from_aux: self.output_from_aux,
            system_flag: self.system_flag,
            last_write_was_command: self.last_write_was_command,
            timeout: self.timeout,
            data_target: match self.data_target {
                DataTarget::Keyboard => 0,
                DataTarget::OutputPort => 1,
                DataTarget::KeyboardOutputBuffer => 2,
                DataTarget::AuxOutputBuffer => 3,
                DataTarget::AuxDevice => 4,
                DataTarget::Ram(n) => 0x100 + u16::from(n),
            },
            output_port: self.output_port,
        }
    }

    /// Puts the controller into `state` and drives IRQ1/IRQ12 to match (the reset line is
    /// not pulsed). Another version, a RAM that is not 32 bytes or an unknown data target
    /// is refused.
    pub fn restore(&mut self, state: &I8042State) -> crate::Result<()> {
        use crate::Error;
        if state.version != I8042_STATE_VERSION {
            return Err(Error::StateVersion {
                device: "i8042",
                found: state.version,
                supported: I8042_STATE_VERSION,
            });
        }
        let ram: [u8; 32] = state
            .ram
            .as_slice()
            .try_into()
            .map_err(|_| Error::InvalidState {
                device: "i8042",
                field: "ram (needs 32 bytes)",
            })?;
        let data_target = match state.data_target {
            0 => DataTarget::Keyboard,
            1 => DataTarget::OutputPort,
            2 => DataTarget::KeyboardOutputBuffer,
            3 => DataTarget::AuxOutputBuffer,
            4 => DataTarget::AuxDevice,
            n @ 0x100..=0x11f => DataTarget::Ram((n - 0x100) as u8),
            _ => {
                return Err(Error::InvalidState {
                    device: "i8042",
                    field: "data_target (0-4 or 0x100-0x11f)",
                })
            }
        };
        self.ram = ram;
        self.output = state.output;
        self.output_full = state.output_full;
        self.output_from_aux = state.output_from_aux;
        self.system_flag = state.system_flag;
        self.last_write_was_command = state.last_write_was_command;
        self.timeout = state.timeout;
        self.data_target = data_target;
        self.output_port = state.output_port;
        self.update_irqs();
        Ok(())
    }
}

#[cfg(test)]
mod state_tests {
    use std::sync::Arc;

    use proptest::prelude::*;
    use vmkit_hw::RecordingLine;

    use super::*;

    fn dev() -> (I8042<Arc<RecordingLine>>, Arc<RecordingLine>) {
        let kbd = Arc::new(RecordingLine::new());
        (
            I8042::with_interrupts(
                Arc::new(RecordingLine::new()),
                kbd.clone(),
                Arc::new(RecordingLine::new()),
            ),
            kbd,
        )
    }

    proptest! {
        /// Random port traffic, save, restore through JSON: later reads and IRQ1 agree.
        #[test]
        fn save_restore_gives_identical_reads(
            before in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<u8>()), 0..60),
            after in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<u8>()), 0..60),
        ) {
            let (mut a, kbd_a) = dev();
            let port = |command: bool| if command { 4u64 } else { 0u64 };
            for &(write, command, v) in &before {
                if write { a.write(port(command), &[v]) } else { a.read(port(command), &mut [0u8]); }
            }
            let json = serde_json::to_string(&a.state()).unwrap();
            let (mut b, kbd_b) = dev();
            b.restore(&serde_json::from_str(&json).unwrap()).unwrap();
            prop_assert_eq!(kbd_a.level(), kbd_b.level());
            for &(write, command, v) in &after {
                if write {
                    a.write(port(command), &[v]);
                    b.write(port(command), &[v]);
                } else {
                    let (mut x, mut y) = ([0u8], [0u8]);
                    a.read(port(command), &mut x);
                    b.read(port(command), &mut y);
                    prop_assert_eq!(x, y);
                }
                prop_assert_eq!(kbd_a.level(), kbd_b.level());
            }
        }
    }
}
