//! Register offsets and bit names of the PC16550D (datasheet Table I, "Summary of Registers").
//!
//! Offsets are relative to the port's base (for example [`COM1_BASE`](crate::COM1_BASE)).
//! They are public so that VMM code and test guests can speak to the device by name.

/// Offset 0: Receiver Buffer (read) / Transmitter Holding Register (write); DLL when DLAB = 1.
pub const RBR_THR: u64 = 0;
/// Offset 0 with DLAB = 1: Divisor Latch, least significant byte.
pub const DLL: u64 = 0;
/// Offset 1: Interrupt Enable Register; DLM when DLAB = 1.
pub const IER: u64 = 1;
/// Offset 1 with DLAB = 1: Divisor Latch, most significant byte.
pub const DLM: u64 = 1;
/// Offset 2: Interrupt Identification Register (read) / FIFO Control Register (write).
pub const IIR_FCR: u64 = 2;
/// Offset 3: Line Control Register.
pub const LCR: u64 = 3;
/// Offset 4: Modem Control Register.
pub const MCR: u64 = 4;
/// Offset 5: Line Status Register.
pub const LSR: u64 = 5;
/// Offset 6: Modem Status Register.
pub const MSR: u64 = 6;
/// Offset 7: Scratch Register.
pub const SCR: u64 = 7;

/// IER bit 0 (ERBFI): received data available and character timeout interrupts.
pub const IER_ERBFI: u8 = 0x01;
/// IER bit 1 (ETBEI): transmitter holding register empty interrupt.
pub const IER_ETBEI: u8 = 0x02;
/// IER bit 2 (ELSI): receiver line status interrupt.
pub const IER_ELSI: u8 = 0x04;
/// IER bit 3 (EDSSI): modem status interrupt.
pub const IER_EDSSI: u8 = 0x08;

/// IIR bit 0 set: no interrupt pending.
pub const IIR_NO_INTERRUPT: u8 = 0x01;
/// IIR identification: receiver line status (highest priority).
pub const IIR_LINE_STATUS: u8 = 0x06;
/// IIR identification: received data available (trigger level reached).
pub const IIR_RX_DATA: u8 = 0x04;
/// IIR identification: character timeout (FIFO mode only).
pub const IIR_CHAR_TIMEOUT: u8 = 0x0C;
/// IIR identification: transmitter holding register empty.
pub const IIR_THR_EMPTY: u8 = 0x02;
/// IIR identification: modem status (lowest priority).
pub const IIR_MODEM_STATUS: u8 = 0x00;
/// IIR bits 6 and 7: set while the FIFOs are enabled (FCR bit 0).
pub const IIR_FIFO_ENABLED: u8 = 0xC0;

/// FCR bit 0: enable both FIFOs; other FCR bits are programmed only when this is set.
pub const FCR_ENABLE: u8 = 0x01;
/// FCR bit 1: clear the receive FIFO.
pub const FCR_CLEAR_RX: u8 = 0x02;
/// FCR bit 2: clear the transmit FIFO.
pub const FCR_CLEAR_TX: u8 = 0x04;
/// FCR bit 3: DMA mode select (affects only the RXRDY/TXRDY pins, which a VM does not have).
pub const FCR_DMA_MODE: u8 = 0x08;
/// FCR bits 6-7 = 00: receive trigger level 1 byte.
pub const FCR_TRIGGER_1: u8 = 0x00;
/// FCR bits 6-7 = 01: receive trigger level 4 bytes.
pub const FCR_TRIGGER_4: u8 = 0x40;
/// FCR bits 6-7 = 10: receive trigger level 8 bytes.
pub const FCR_TRIGGER_8: u8 = 0x80;
/// FCR bits 6-7 = 11: receive trigger level 14 bytes.
pub const FCR_TRIGGER_14: u8 = 0xC0;

/// LCR bits 0-1: word length minus 5.
pub const LCR_WORD_LENGTH_MASK: u8 = 0x03;
/// LCR bit 2: two stop bits (1.5 with a 5-bit word).
pub const LCR_TWO_STOP_BITS: u8 = 0x04;
/// LCR bit 3: parity enable.
pub const LCR_PARITY_ENABLE: u8 = 0x08;
/// LCR bit 6: set break.
pub const LCR_SET_BREAK: u8 = 0x40;
/// LCR bit 7 (DLAB): offsets 0 and 1 address the divisor latch.
pub const LCR_DLAB: u8 = 0x80;

/// MCR bit 0: Data Terminal Ready.
pub const MCR_DTR: u8 = 0x01;
/// MCR bit 1: Request To Send.
pub const MCR_RTS: u8 = 0x02;
/// MCR bit 2: OUT1.
pub const MCR_OUT1: u8 = 0x04;
/// MCR bit 3: OUT2; on a PC it enables the UART's interrupt onto the ISA IRQ line.
pub const MCR_OUT2: u8 = 0x08;
/// MCR bit 4: local loopback.
pub const MCR_LOOP: u8 = 0x10;

/// LSR bit 0: data ready.
pub const LSR_DR: u8 = 0x01;
/// LSR bit 1: overrun error.
pub const LSR_OE: u8 = 0x02;
/// LSR bit 2: parity error (never produced: the virtual line is perfect).
pub const LSR_PE: u8 = 0x04;
/// LSR bit 3: framing error (never produced).
pub const LSR_FE: u8 = 0x08;
/// LSR bit 4: break interrupt (never produced).
pub const LSR_BI: u8 = 0x10;
/// LSR bit 5: transmitter holding register (or transmit FIFO) empty.
pub const LSR_THRE: u8 = 0x20;
/// LSR bit 6: transmitter empty (holding and shift registers).
pub const LSR_TEMT: u8 = 0x40;
/// LSR bit 7: error in receive FIFO (never produced).
pub const LSR_FIFO_ERROR: u8 = 0x80;

/// MSR bit 0: CTS changed since the last MSR read.
pub const MSR_DCTS: u8 = 0x01;
/// MSR bit 1: DSR changed since the last MSR read.
pub const MSR_DDSR: u8 = 0x02;
/// MSR bit 2: RI went from on to off (trailing edge) since the last MSR read.
pub const MSR_TERI: u8 = 0x04;
/// MSR bit 3: DCD changed since the last MSR read.
pub const MSR_DDCD: u8 = 0x08;
/// MSR bit 4: Clear To Send.
pub const MSR_CTS: u8 = 0x10;
/// MSR bit 5: Data Set Ready.
pub const MSR_DSR: u8 = 0x20;
/// MSR bit 6: Ring Indicator.
pub const MSR_RI: u8 = 0x40;
/// MSR bit 7: Data Carrier Detect.
pub const MSR_DCD: u8 = 0x80;
