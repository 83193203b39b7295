//! Register behaviour checked against the National Semiconductor PC16550D datasheet
//! (June 1995). Section numbers refer to its chapter 8, "Registers".

mod common;

use std::io;
use std::sync::{Arc, Mutex};

use common::Bench;
use vm_device::bus::{PioAddress, PioRange};
use vm_device::device_manager::{IoManager, PioManager};
use vmkit_hw::{Clock, ManualClock, NullLine, RecordingLine};
use vmkit_serial::regs::*;
use vmkit_serial::{Error, Serial, COM1_BASE, DEFAULT_MODEM_INPUTS, PORT_RANGE_LEN};

/// 40 bit times (four 8N1 characters) at 9600 baud (divisor 12): 4.1667 ms.
const TIMEOUT_9600_8N1_NS: u64 = 4_166_666;

/// Programs the divisor latch through DLAB, then sets `lcr` (8.1, 8.3).
fn set_line(bench: &mut Bench, divisor: u16, lcr: u8) {
    let [dll, dlm] = divisor.to_le_bytes();
    bench.outb(LCR, LCR_DLAB);
    bench.outb(DLL, dll);
    bench.outb(DLM, dlm);
    bench.outb(LCR, lcr);
}

#[test]
fn power_on_register_values() {
    // Table II (reset configuration): IER 0, IIR 0x01, FCR 0, LCR 0, MCR 0, LSR 0x60,
    // MSR bits 0-3 clear and bits 4-7 following the modem inputs.
    let mut bench = Bench::new();
    assert_eq!(bench.inb(IER), 0);
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
    assert_eq!(bench.inb(LCR), 0);
    assert_eq!(bench.inb(MCR), 0);
    assert_eq!(bench.inb(LSR), LSR_THRE | LSR_TEMT);
    assert_eq!(bench.inb(MSR), DEFAULT_MODEM_INPUTS);
    assert!(!bench.irq.level());
    assert_eq!(bench.uart.input_room(), 1, "16450 mode: RBR holds one byte");
    assert!(bench.room.level());
}

#[test]
fn scratch_register_stores_any_value() {
    // 8.10: the scratchpad has no effect on the UART and reads back what was written.
    let mut bench = Bench::new();
    for value in [0x00, 0xA5, 0x5A, 0xFF] {
        bench.outb(SCR, value);
        assert_eq!(bench.inb(SCR), value);
    }
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
}

#[test]
fn ier_keeps_only_its_four_enable_bits() {
    // 8.7: IER bits 4-7 are always 0.
    let mut bench = Bench::new();
    bench.outb(IER, 0xFF);
    assert_eq!(bench.inb(IER), 0x0F);
    bench.outb(IER, 0x05);
    assert_eq!(bench.inb(IER), 0x05);
}

#[test]
fn lcr_reads_back_and_mcr_keeps_five_bits() {
    // 8.1: LCR is fully readable. 8.8: MCR bits 5-7 are permanently 0.
    let mut bench = Bench::new();
    bench.outb(LCR, 0x5B);
    assert_eq!(bench.inb(LCR), 0x5B);
    bench.outb(MCR, 0xEF);
    assert_eq!(bench.inb(MCR), 0x0F);
}

#[test]
fn dlab_switches_offsets_0_and_1_to_the_divisor_latch() {
    // 8.1 LCR bit 7 and 8.3: with DLAB set, offsets 0/1 are DLL/DLM; IER, RBR and THR are
    // hidden but keep their contents.
    let mut bench = Bench::new();
    bench.outb(IER, IER_ERBFI | IER_ELSI);
    assert_eq!(bench.uart.enqueue_input(b"x"), 1);

    bench.outb(LCR, LCR_DLAB | 0x03);
    bench.outb(DLL, 0x34);
    bench.outb(DLM, 0x12);
    assert_eq!(bench.inb(DLL), 0x34);
    assert_eq!(bench.inb(DLM), 0x12);
    assert_eq!(bench.output(), b"", "a DLL write is not a transmission");
    assert_eq!(bench.uart.rx_fifo_len(), 1, "a DLL read does not pop RBR");

    bench.outb(LCR, 0x03);
    assert_eq!(bench.inb(IER), IER_ERBFI | IER_ELSI);
    assert_eq!(bench.inb(RBR_THR), b'x');
    bench.outb(LCR, LCR_DLAB);
    assert_eq!(bench.inb(DLL), 0x34, "the divisor survives DLAB toggling");
    assert_eq!(bench.inb(DLM), 0x12);
}

#[test]
fn thr_writes_go_out_at_once_and_lsr_shows_both_empty() {
    // 8.4 LSR bits 5/6: in a VMM the byte leaves immediately, so THRE and TEMT are set
    // again right after each THR write.
    let mut bench = Bench::new();
    for &byte in b"ok\n" {
        bench.outb(RBR_THR, byte);
        assert_eq!(bench.inb(LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
    }
    assert_eq!(bench.output(), b"ok\n");
    assert_eq!(bench.uart.transmitted_bytes(), 3);
}

#[test]
fn lsr_data_ready_follows_the_receive_buffer_and_ignores_writes() {
    // 8.4 LSR bit 0: set when a character is received, cleared when RBR/FIFO is empty.
    let mut bench = Bench::new();
    assert_eq!(bench.inb(LSR) & LSR_DR, 0);
    bench.uart.enqueue_input(b"q");
    assert_eq!(bench.inb(LSR), LSR_DR | LSR_THRE | LSR_TEMT);
    bench.outb(LSR, 0x00); // factory-test register: writes change nothing
    assert_eq!(bench.inb(LSR) & LSR_DR, LSR_DR);
    assert_eq!(bench.inb(RBR_THR), b'q');
    assert_eq!(bench.inb(LSR) & LSR_DR, 0);
}

#[test]
fn fifo_enable_shows_in_iir_and_mode_changes_clear_the_fifo() {
    // 8.5 FCR bit 0 and 8.6 IIR bits 6-7: both read 1 while the FIFOs are enabled;
    // switching between FIFO and 16450 mode clears the FIFOs.
    let mut bench = Bench::new();
    bench.outb(IIR_FCR, FCR_ENABLE);
    assert_eq!(bench.inb(IIR_FCR), IIR_FIFO_ENABLED | IIR_NO_INTERRUPT);
    assert_eq!(bench.uart.input_room(), 16);
    assert_eq!(bench.uart.enqueue_input(b"0123456789"), 10);

    bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_8);
    assert_eq!(
        bench.uart.rx_fifo_len(),
        10,
        "re-writing FCR0 = 1 keeps the data"
    );

    bench.outb(IIR_FCR, 0);
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
    assert_eq!(bench.uart.rx_fifo_len(), 0, "leaving FIFO mode clears it");
    assert_eq!(bench.inb(LSR) & LSR_DR, 0);
    assert_eq!(bench.uart.input_room(), 1);
}

#[test]
fn fcr_clear_rx_discards_received_bytes() {
    // 8.5 FCR bit 1: clears the receive FIFO (bit 0 must be 1 for it to be programmed).
    let mut bench = Bench::new();
    bench.outb(IIR_FCR, FCR_ENABLE);
    bench.uart.enqueue_input(b"abc");
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_CLEAR_TX);
    assert_eq!(bench.uart.rx_fifo_len(), 3, "clearing TX leaves RX alone");
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX);
    assert_eq!(bench.uart.rx_fifo_len(), 0);
    assert_eq!(bench.inb(LSR) & LSR_DR, 0);
}

#[test]
fn receive_trigger_levels_1_4_8_14() {
    // 8.5 FCR bits 6-7 and 8.11 items A/B: the received-data interrupt is issued when the
    // FIFO reaches the trigger level and cleared as soon as it drops below it.
    for (fcr_bits, level) in [
        (FCR_TRIGGER_1, 1usize),
        (FCR_TRIGGER_4, 4),
        (FCR_TRIGGER_8, 8),
        (FCR_TRIGGER_14, 14),
    ] {
        let mut bench = Bench::new();
        bench.outb(IIR_FCR, FCR_ENABLE | fcr_bits);
        bench.outb(IER, IER_ERBFI);
        bench.outb(MCR, MCR_OUT2);

        let below = vec![b'.'; level - 1];
        assert_eq!(bench.uart.enqueue_input(&below), level - 1);
        assert_eq!(bench.inb(IIR_FCR), 0xC1, "level {level}: below the trigger");
        assert!(!bench.irq.level());

        assert_eq!(bench.uart.enqueue_input(b"!"), 1);
        assert_eq!(bench.inb(IIR_FCR), 0xC4, "level {level}: trigger reached");
        assert!(bench.irq.level());

        bench.inb(RBR_THR);
        assert_eq!(bench.inb(IIR_FCR), 0xC1, "level {level}: dropped below");
        assert!(!bench.irq.level());
    }
}

#[test]
fn fifo_holds_sixteen_bytes_in_order() {
    // 8.5: a 16-byte receive FIFO, read first in first out.
    let mut bench = Bench::new();
    bench.outb(IIR_FCR, FCR_ENABLE);
    let data: Vec<u8> = (b'a'..=b'z').collect();
    assert_eq!(bench.uart.enqueue_input(&data), 16);
    assert_eq!(bench.uart.input_room(), 0);
    let read: Vec<u8> = (0..16).map(|_| bench.inb(RBR_THR)).collect();
    assert_eq!(read, &data[..16]);
    assert_eq!(bench.inb(LSR) & LSR_DR, 0);
}

#[test]
fn interrupt_priority_with_every_cause_pending() {
    // Table IV: line status > received data / character timeout > THR empty > modem
    // status, each cleared by its own action. Loopback is the only way to overrun.
    let mut bench = Bench::new();
    set_line(&mut bench, 12, 0x03);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_4);
    bench.outb(IER, 0x0F);
    // Entering loopback drops CTS/DSR/DCD: a modem status change.
    bench.outb(MCR, MCR_LOOP);
    for byte in 0..17u8 {
        bench.outb(RBR_THR, byte);
    }
    assert_eq!(bench.uart.rx_fifo_len(), 16);

    // Everything is pending: overrun, FIFO above trigger, THRE, modem status.
    assert_eq!(bench.inb(IIR_FCR), 0xC6);
    assert_eq!(
        bench.inb(IIR_FCR),
        0xC6,
        "an IIR read does not clear line status"
    );
    assert_eq!(bench.inb(LSR), LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT);
    assert_eq!(bench.inb(LSR) & LSR_OE, 0, "LSR read clears OE");

    assert_eq!(bench.inb(IIR_FCR), 0xC4);
    assert_eq!(
        bench.inb(IIR_FCR),
        0xC4,
        "an IIR read does not clear data available"
    );
    for expected in 0..13u8 {
        assert_eq!(
            bench.inb(RBR_THR),
            expected,
            "overrun lost the 17th, not the 1st"
        );
    }
    assert_eq!(bench.uart.rx_fifo_len(), 3);

    assert_eq!(
        bench.inb(IIR_FCR),
        0xC2,
        "THRE, reported and thereby cleared"
    );
    assert_eq!(bench.inb(IIR_FCR), 0xC0, "modem status");
    assert_eq!(
        bench.inb(IIR_FCR),
        0xC0,
        "an IIR read does not clear modem status"
    );
    assert_eq!(bench.inb(MSR), MSR_DCTS | MSR_DDSR | MSR_DDCD);
    assert_eq!(bench.inb(IIR_FCR), 0xC1);

    // Character timeout outranks THRE.
    bench.outb(IER, 0x0D);
    bench.outb(IER, 0x0F); // re-enabling ETBEI with THR empty: THRE pending again
    bench.clock.advance(TIMEOUT_9600_8N1_NS);
    assert_eq!(bench.inb(IIR_FCR), 0xCC);
    assert_eq!(bench.inb(RBR_THR), 13);
    assert_eq!(bench.inb(IIR_FCR), 0xC2);
    assert_eq!(bench.inb(IIR_FCR), 0xC1);
}

#[test]
fn thre_interrupt_when_etbei_is_enabled_and_after_each_write() {
    // 8.6/8.7: enabling ETBEI while THR is empty interrupts at once; reading IIR (when it
    // reports THRE) or writing THR clears it, and THR empties again right away.
    let mut bench = Bench::new();
    bench.outb(MCR, MCR_OUT2);
    bench.outb(IER, IER_ETBEI);
    assert!(bench.irq.level());
    assert_eq!(bench.inb(IIR_FCR), IIR_THR_EMPTY);
    assert!(!bench.irq.level(), "IIR read cleared THRE");
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);

    bench.outb(RBR_THR, b'a');
    assert!(bench.irq.level(), "THR emptied again after the write");
    assert_eq!(bench.irq.rising_edges(), 2);
    assert_eq!(bench.inb(IIR_FCR), IIR_THR_EMPTY);

    bench.outb(IER, IER_ETBEI); // already enabled: no new THRE
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
    bench.outb(IER, 0);
    bench.outb(IER, IER_ETBEI);
    assert_eq!(bench.inb(IIR_FCR), IIR_THR_EMPTY);
}

#[test]
fn iir_read_keeps_thre_when_a_higher_cause_is_reported() {
    // Table IV: reading IIR resets THRE only "if source of interrupt".
    let mut bench = Bench::new();
    bench.outb(IER, IER_ETBEI | IER_ERBFI);
    bench.uart.enqueue_input(b"z");
    assert_eq!(bench.inb(IIR_FCR), IIR_RX_DATA);
    bench.inb(RBR_THR);
    assert_eq!(bench.inb(IIR_FCR), IIR_THR_EMPTY);
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
}

#[test]
fn first_thre_after_changing_fcr0_is_immediate() {
    // 8.11: "The transmitter interrupt after changing FCR0 will be immediate, if enabled."
    let mut bench = Bench::new();
    bench.outb(IER, IER_ETBEI);
    assert_eq!(bench.inb(IIR_FCR), IIR_THR_EMPTY);
    bench.outb(IIR_FCR, FCR_ENABLE);
    assert_eq!(bench.inb(IIR_FCR), IIR_FIFO_ENABLED | IIR_THR_EMPTY);
}

#[test]
fn overrun_in_16450_mode_overwrites_rbr() {
    // 8.4 LSR bit 1: without FIFOs the next character overwrites the unread one.
    let mut bench = Bench::new();
    bench.outb(IER, IER_ELSI);
    bench.outb(MCR, MCR_LOOP);
    bench.outb(RBR_THR, b'1');
    bench.outb(RBR_THR, b'2');
    assert_eq!(bench.inb(IIR_FCR), IIR_LINE_STATUS);
    assert_eq!(bench.inb(LSR), LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT);
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
    assert_eq!(bench.inb(RBR_THR), b'2');
}

#[test]
fn modem_status_deltas_and_interrupt() {
    // 8.9: bits 0-3 record changes since the last MSR read (TERI only on RI's trailing
    // edge); reading MSR clears them and the modem status interrupt.
    let mut bench = Bench::new();
    bench.outb(IER, IER_EDSSI);
    bench.outb(MCR, MCR_OUT2);
    bench.uart.set_modem_inputs(MSR_CTS | MSR_RI);
    assert!(bench.irq.level());
    assert_eq!(bench.inb(IIR_FCR), IIR_MODEM_STATUS);
    assert_eq!(bench.inb(MSR), MSR_CTS | MSR_RI | MSR_DDSR | MSR_DDCD);
    assert!(!bench.irq.level());
    assert_eq!(
        bench.inb(MSR),
        MSR_CTS | MSR_RI,
        "deltas cleared by the read"
    );

    bench.uart.set_modem_inputs(MSR_CTS);
    assert_eq!(bench.inb(MSR), MSR_CTS | MSR_TERI, "RI on -> off");
    bench.uart.set_modem_inputs(MSR_CTS | MSR_RI);
    assert_eq!(
        bench.inb(MSR),
        MSR_CTS | MSR_RI,
        "RI off -> on is not flagged"
    );
    bench.uart.set_modem_inputs(0x0F | MSR_RI);
    assert_eq!(
        bench.inb(MSR),
        MSR_RI | MSR_DCTS,
        "low bits of the input are ignored"
    );
}

#[test]
fn character_timeout_after_four_character_times() {
    // 8.11: with data below the trigger level, a timeout is indicated once no character
    // was received and none read for 4 character times; a CPU read clears it and
    // restarts the timer; a new character does not clear a timeout that has occurred.
    let mut bench = Bench::new();
    set_line(&mut bench, 12, 0x03); // 9600 8N1
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_8);
    bench.outb(IER, IER_ERBFI);
    bench.outb(MCR, MCR_OUT2);
    assert_eq!(
        bench.uart.next_deadline_ns(),
        None,
        "empty FIFO: no timeout"
    );

    bench.clock.set(10_000);
    bench.uart.enqueue_input(b"ab");
    let deadline = 10_000 + TIMEOUT_9600_8N1_NS;
    assert_eq!(bench.uart.next_deadline_ns(), Some(deadline));

    bench.clock.set(deadline - 1);
    bench.uart.update();
    assert!(!bench.irq.level());
    assert_eq!(bench.uart.next_deadline_ns(), Some(deadline));

    bench.clock.set(deadline);
    assert!(
        !bench.irq.level(),
        "nothing changes until the VMM calls update"
    );
    bench.uart.update();
    assert!(bench.irq.level());
    assert_eq!(bench.uart.next_deadline_ns(), None);
    assert_eq!(bench.inb(IIR_FCR), 0xCC);

    bench.uart.enqueue_input(b"c");
    assert_eq!(
        bench.inb(IIR_FCR),
        0xCC,
        "a new character does not clear it"
    );

    bench.clock.advance(5);
    assert_eq!(bench.inb(RBR_THR), b'a');
    assert_eq!(bench.inb(IIR_FCR), 0xC1, "a CPU read clears it");
    assert!(!bench.irq.level());
    assert_eq!(
        bench.uart.next_deadline_ns(),
        Some(deadline + 5 + TIMEOUT_9600_8N1_NS),
        "and restarts the timer"
    );

    // A late VMM: register reads are right whenever they happen.
    bench.clock.advance(10 * TIMEOUT_9600_8N1_NS);
    assert_eq!(bench.inb(IIR_FCR), 0xCC);
    bench.inb(RBR_THR);
    bench.inb(RBR_THR);
    assert_eq!(bench.uart.next_deadline_ns(), None);
    assert_eq!(bench.inb(IIR_FCR), 0xC1);
}

#[test]
fn receiving_restarts_the_timeout_timer() {
    // 8.11 D: before a timeout has occurred, a new character resets the timer.
    let mut bench = Bench::new();
    set_line(&mut bench, 12, 0x03);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_14);
    bench.outb(IER, IER_ERBFI);
    bench.uart.enqueue_input(b"a");
    bench.clock.advance(TIMEOUT_9600_8N1_NS - 1);
    bench.uart.enqueue_input(b"b");
    bench.clock.advance(TIMEOUT_9600_8N1_NS - 1);
    assert_eq!(bench.inb(IIR_FCR), 0xC1);
    bench.clock.advance(1);
    assert_eq!(bench.inb(IIR_FCR), 0xCC);
}

#[test]
fn character_time_follows_divisor_and_frame() {
    // 8.3: bit time = divisor * 16 / 1.8432 MHz; 8.1: the frame is start + 5..8 data +
    // parity + 1, 1.5 (5-bit words) or 2 stop bits; 8.11: the timeout is 4 characters.
    let cases: [(u16, u8, u64); 4] = [
        (12, 0x0E, 4_583_333),     // 9600 7E2: 11 bits -> 44 bit times = 4.583 ms
        (1, 0x04, 260_416),        // 115200 5N1.5: 7.5 bits -> 30 bit times = 260.4 us
        (1, 0x03, 347_222),        // 115200 8N1: 40 bit times = 347.2 us
        (0, 0x03, 22_755_555_555), // divisor 0 counts as 65536: 40 bits at 1.758 baud
    ];
    for (divisor, lcr, timeout) in cases {
        let mut bench = Bench::new();
        set_line(&mut bench, divisor, lcr);
        bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_4);
        bench.outb(IER, IER_ERBFI);
        let start = bench.clock.now_ns();
        bench.uart.enqueue_input(b"x");
        assert_eq!(
            bench.uart.next_deadline_ns(),
            Some(start + timeout),
            "divisor {divisor} LCR {lcr:#04x}"
        );
    }
}

#[test]
fn no_character_timeout_in_16450_mode() {
    // 8.11 applies to FIFO mode only; without FIFOs a byte raises data available.
    let mut bench = Bench::new();
    bench.outb(IER, IER_ERBFI);
    bench.uart.enqueue_input(b"x");
    assert_eq!(bench.uart.next_deadline_ns(), None);
    bench.clock.advance(1_000_000_000);
    bench.uart.update();
    assert_eq!(bench.inb(IIR_FCR), IIR_RX_DATA);
}

#[test]
fn no_deadline_at_or_above_the_trigger_level() {
    // 8.11: received data available already reports such a FIFO.
    let mut bench = Bench::new();
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_4);
    bench.outb(IER, IER_ERBFI);
    bench.uart.enqueue_input(b"abcd");
    assert_eq!(bench.uart.next_deadline_ns(), None);
    assert_eq!(bench.inb(IIR_FCR), 0xC4);
}

#[test]
fn loopback_wires_thr_to_rbr_and_mcr_to_msr() {
    // 8.8 MCR bit 4: the transmitter feeds the receiver, nothing leaves the chip, the
    // serial input is disconnected, and DTR/RTS/OUT1/OUT2 appear as DSR/CTS/RI/DCD.
    let mut bench = Bench::new();
    bench.outb(MCR, MCR_LOOP | MCR_DTR);
    assert_eq!(bench.inb(MSR), MSR_DSR | MSR_DCTS | MSR_DDCD);
    bench.outb(MCR, MCR_LOOP | 0x0F);
    assert_eq!(bench.inb(MSR), 0xF0 | MSR_DCTS | MSR_DDCD);
    bench.outb(MCR, MCR_LOOP | MCR_DTR | MCR_RTS | MCR_OUT2);
    assert_eq!(bench.inb(MSR), MSR_CTS | MSR_DSR | MSR_DCD | MSR_TERI);

    bench.outb(RBR_THR, b'L');
    assert_eq!(bench.output(), b"", "nothing goes out in loopback");
    assert_eq!(bench.inb(LSR), LSR_DR | LSR_THRE | LSR_TEMT);
    assert_eq!(bench.uart.input_room(), 0, "serial input disconnected");
    assert_eq!(bench.uart.enqueue_input(b"outside"), 0);
    assert_eq!(bench.inb(RBR_THR), b'L');

    bench.outb(MCR, MCR_DTR);
    assert_eq!(
        bench.inb(MSR) & 0xF0,
        DEFAULT_MODEM_INPUTS,
        "real inputs again"
    );
    bench.outb(RBR_THR, b'T');
    assert_eq!(bench.output(), b"T");
    assert_eq!(bench.uart.input_room(), 1);
}

#[test]
fn out2_gates_the_irq_line_and_loopback_closes_the_gate() {
    // 8.8: OUT2 is a general-purpose output that PCs use to enable the UART's interrupt
    // onto the ISA bus; in loopback the outputs are forced inactive, closing the gate.
    let mut bench = Bench::new();
    bench.outb(IER, IER_ERBFI);
    bench.uart.enqueue_input(b"k");
    assert_eq!(bench.inb(IIR_FCR), IIR_RX_DATA);
    assert!(!bench.irq.level(), "OUT2 clear: the line stays low");
    bench.outb(MCR, MCR_OUT2);
    assert!(bench.irq.level());
    bench.outb(MCR, MCR_OUT2 | MCR_LOOP);
    assert!(!bench.irq.level());
    assert_eq!(bench.inb(IIR_FCR), IIR_RX_DATA, "IIR still reports it");
    bench.outb(MCR, MCR_OUT2);
    assert!(bench.irq.level());
    bench.inb(RBR_THR);
    assert!(!bench.irq.level());
    assert_eq!(bench.irq.rising_edges(), 2);
}

#[test]
fn reset_restores_power_on_state_and_keeps_the_output() {
    // Table II: master reset values; the writer and what it received are kept.
    let mut bench = Bench::new();
    set_line(&mut bench, 1, 0x1B);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_14);
    bench.outb(IER, 0x0F);
    bench.outb(MCR, MCR_OUT2 | MCR_DTR);
    bench.outb(SCR, 0x77);
    bench.outb(RBR_THR, b'!');
    bench.uart.enqueue_input(b"pending");
    assert!(bench.irq.level());

    bench.uart.reset();
    assert!(!bench.irq.level());
    assert_eq!(bench.inb(IER), 0);
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
    assert_eq!(bench.inb(LCR), 0);
    assert_eq!(bench.inb(MCR), 0);
    assert_eq!(bench.inb(LSR), LSR_THRE | LSR_TEMT);
    assert_eq!(bench.inb(MSR), DEFAULT_MODEM_INPUTS);
    assert_eq!(bench.inb(SCR), 0);
    assert_eq!(bench.uart.rx_fifo_len(), 0);
    assert_eq!(bench.uart.input_room(), 1);
    assert_eq!(bench.output(), b"!");
    bench.outb(RBR_THR, b'?');
    assert_eq!(bench.output(), b"!?");
}

#[test]
fn wide_zero_and_out_of_range_accesses() {
    // ISA: wider accesses are consecutive byte accesses; nothing lives past offset 7.
    let mut bench = Bench::new();
    bench.outb(LCR, LCR_DLAB);
    bench.uart.write(DLL, &[0x34, 0x12]);
    let mut word = [0u8; 2];
    bench.uart.read(DLL, &mut word);
    assert_eq!(word, [0x34, 0x12]);
    bench.outb(LCR, 0);

    bench.outb(SCR, 0x5C);
    let mut dword = [0u8; 4];
    bench.uart.read(MSR, &mut dword);
    assert_eq!(dword, [DEFAULT_MODEM_INPUTS, 0x5C, 0xFF, 0xFF]);

    bench.uart.write(SCR, &[0x11, 0x22, 0x33]);
    assert_eq!(bench.inb(SCR), 0x11);
    bench.uart.write(8, &[0xFF; 9]);
    bench.uart.write(u64::MAX, &[0xFF; 9]);
    bench.uart.write(0, &[]);
    bench.uart.read(0, &mut []);
    let mut far = [0u8; 3];
    bench.uart.read(u64::MAX - 1, &mut far);
    assert_eq!(far, [0xFF; 3]);
    assert_eq!(bench.inb(8), 0xFF);
    assert_eq!(bench.inb(LCR), 0, "out-of-range writes changed nothing");
    assert_eq!(bench.output(), b"");
}

#[test]
fn registers_on_a_rust_vmm_pio_bus() {
    // vm-device: a Mutex<Serial> is a DevicePio registered at COM1's 8 ports.
    let uart = Serial::new(NullLine, ManualClock::new(0), Vec::new());
    let uart = Arc::new(Mutex::new(uart));
    let mut bus = IoManager::new();
    let range = PioRange::new(PioAddress(COM1_BASE), PORT_RANGE_LEN).unwrap();
    bus.register_pio(range, uart.clone()).unwrap();

    bus.pio_write(PioAddress(COM1_BASE + 7), &[0xA5]).unwrap();
    let mut value = [0u8];
    bus.pio_read(PioAddress(COM1_BASE + 7), &mut value).unwrap();
    assert_eq!(value, [0xA5]);
    bus.pio_write(PioAddress(COM1_BASE), b"v").unwrap();
    bus.pio_read(PioAddress(COM1_BASE + 5), &mut value).unwrap();
    assert_eq!(value, [LSR_THRE | LSR_TEMT]);
    assert!(bus.pio_read(PioAddress(COM1_BASE + 8), &mut value).is_err());
    assert_eq!(uart.lock().unwrap().output().as_slice(), b"v");
}

struct BrokenPipe;

impl io::Write for BrokenPipe {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "reader went away",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_errors_are_counted_and_reported_not_fatal() {
    let line = Arc::new(RecordingLine::new());
    let mut uart = Serial::new(line, ManualClock::new(0), BrokenPipe);
    for &byte in b"abc" {
        uart.write(RBR_THR, &[byte]);
    }
    assert_eq!(uart.output_error_count(), 3);
    assert_eq!(uart.transmitted_bytes(), 0);
    let mut lsr = [0u8];
    uart.read(LSR, &mut lsr);
    assert_eq!(lsr[0], LSR_THRE | LSR_TEMT, "the guest keeps transmitting");
    match uart.take_output_error() {
        Some(Error::Output {
            failed_writes,
            source,
        }) => {
            assert_eq!(failed_writes, 3);
            assert_eq!(source.kind(), io::ErrorKind::BrokenPipe);
        }
        other => panic!("expected an output error, got {other:?}"),
    }
    assert!(uart.take_output_error().is_none());
}
