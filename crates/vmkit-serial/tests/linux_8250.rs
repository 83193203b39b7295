//! The register sequences Linux's 8250 driver (drivers/tty/serial/8250) performs, replayed
//! as a guest would: the autoconfig probe, port startup, the polled console write path and
//! interrupt-driven transmit and receive.

mod common;

use common::Bench;
use vmkit_serial::regs::*;

/// LSR THRE | TEMT: what the console path waits for before each byte.
const BOTH_EMPTY: u8 = LSR_THRE | LSR_TEMT;
/// IER bit 6 (UUE) of XScale UARTs; a PC16550D must not keep it.
const IER_UUE: u8 = 0x40;
/// FCR bit 5: 64-byte FIFO enable on a TI16750; a PC16550D ignores it.
const FCR7_64BYTE: u8 = 0x20;

/// The autoconfig probe: returns the port type Linux would decide on.
fn autoconfig(bench: &mut Bench) -> Result<&'static str, String> {
    // IER existence test: bits 0-3 must read back 0 then 0xF.
    let saved_ier = bench.inb(IER);
    bench.outb(IER, 0);
    let cleared = bench.inb(IER) & 0x0F;
    bench.outb(IER, 0x0F);
    let set = bench.inb(IER) & 0x0F;
    bench.outb(IER, saved_ier);
    if cleared != 0 || set != 0x0F {
        return Err(format!("IER test failed ({cleared:#04x}, {set:#04x})"));
    }

    let saved_mcr = bench.inb(MCR);
    let saved_lcr = bench.inb(LCR);

    // Loopback test: MCR = LOOP | OUT2 | RTS must read back DCD | CTS in MSR.
    bench.outb(MCR, MCR_LOOP | MCR_OUT2 | MCR_RTS);
    let status = bench.inb(MSR) & 0xF0;
    bench.outb(MCR, saved_mcr);
    if status != MSR_DCD | MSR_CTS {
        return Err(format!("loopback test failed ({status:#04x})"));
    }

    // Clear a possible EFR (same offset as FCR) under LCR 0xBF, then probe the FIFO.
    bench.outb(LCR, 0xBF);
    let lcr = bench.inb(LCR);
    if lcr != 0xBF {
        return Err(format!("LCR reads back {lcr:#04x}"));
    }
    bench.outb(IIR_FCR, 0);
    bench.outb(LCR, 0);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
    let kind = match bench.inb(IIR_FCR) >> 6 {
        0 => {
            // autoconfig_8250: a scratch register tells a 16450 from an 8250.
            let saved = bench.inb(SCR);
            bench.outb(SCR, 0xA5);
            let first = bench.inb(SCR);
            bench.outb(SCR, 0x5A);
            let second = bench.inb(SCR);
            bench.outb(SCR, saved);
            if first == 0xA5 && second == 0x5A {
                "16450"
            } else {
                "8250"
            }
        }
        1 => "unknown",
        2 => "16550",
        _ => autoconfig_16550a(bench),
    };

    bench.outb(LCR, saved_lcr);
    bench.outb(MCR, saved_mcr);
    // serial8250_clear_fifos, then drain RBR and mask interrupts.
    bench.outb(IIR_FCR, FCR_ENABLE);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
    bench.outb(IIR_FCR, 0);
    bench.inb(RBR_THR);
    bench.outb(IER, 0);
    Ok(kind)
}

/// Tells a plain 16550A from its enhanced relatives, which a PC16550D is not.
fn autoconfig_16550a(bench: &mut Bench) -> &'static str {
    // An EFR readable under DLAB (ST16C650V1) or under LCR 0xBF (16650V2) reads 0 there;
    // on a 16550 that offset is IIR, whose FIFO bits are set.
    bench.outb(LCR, LCR_DLAB);
    let efr_v1 = bench.inb(IIR_FCR);
    bench.outb(LCR, 0xBF);
    let efr_v2 = bench.inb(IIR_FCR);
    if efr_v1 == 0 || efr_v2 == 0 {
        return "16650";
    }

    // TI16750: FCR bit 5 enables a 64-byte FIFO shown in IIR bit 5, only under DLAB.
    bench.outb(LCR, 0);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR7_64BYTE);
    let plain = bench.inb(IIR_FCR) >> 5;
    bench.outb(IIR_FCR, FCR_ENABLE);
    bench.outb(LCR, LCR_DLAB);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR7_64BYTE);
    let under_dlab = bench.inb(IIR_FCR) >> 5;
    bench.outb(IIR_FCR, FCR_ENABLE);
    bench.outb(LCR, 0);
    if plain == 6 && under_dlab == 7 {
        return "16750";
    }

    // XScale: IER bit 6 (UUE) is writable.
    let saved_ier = bench.inb(IER);
    bench.outb(IER, saved_ier | IER_UUE);
    let uue = bench.inb(IER) & IER_UUE != 0;
    bench.outb(IER, saved_ier);
    if uue {
        return "xscale";
    }
    "16550A"
}

#[test]
fn autoconfig_detects_a_16550a() {
    let mut bench = Bench::new();
    bench.outb(LCR, 0x03);
    bench.outb(SCR, 0x42);
    assert_eq!(autoconfig(&mut bench), Ok("16550A"));
    // The probe leaves the port as it found it, with FIFOs off and interrupts masked.
    assert_eq!(bench.inb(LCR), 0x03);
    assert_eq!(bench.inb(MCR), 0);
    assert_eq!(bench.inb(IER), 0);
    assert_eq!(bench.inb(IIR_FCR), IIR_NO_INTERRUPT);
    assert_eq!(bench.inb(SCR), 0x42);
    assert_eq!(bench.output(), b"", "the probe transmits nothing");
    assert_eq!(
        bench.irq.rising_edges(),
        0,
        "no interrupt reaches the PIC: OUT2 is off"
    );
}

#[test]
fn scratch_test_tells_a_16450_in_16450_mode() {
    // The autoconfig_8250 branch, on the same chip with its IIR FIFO bits clear.
    let mut bench = Bench::new();
    let saved = bench.inb(SCR);
    bench.outb(SCR, 0xA5);
    let first = bench.inb(SCR);
    bench.outb(SCR, 0x5A);
    let second = bench.inb(SCR);
    bench.outb(SCR, saved);
    assert_eq!((first, second), (0xA5, 0x5A));
    assert_eq!(
        bench.inb(IIR_FCR) >> 6,
        0,
        "FIFOs off: reads as an 8250/16450"
    );
}

/// serial8250_do_startup up to enabling interrupts, with the UART_BUG_THRE check.
fn startup(bench: &mut Bench) -> bool {
    bench.outb(IIR_FCR, FCR_ENABLE);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
    bench.outb(IIR_FCR, 0);
    bench.inb(LSR);
    bench.inb(RBR_THR);
    bench.inb(IIR_FCR);
    bench.inb(MSR);
    bench.outb(LCR, 0x03);
    bench.outb(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);

    // Does THRE re-assert when ETBEI is enabled again after the interrupt was cleared?
    bench.outb(IER, IER_ETBEI);
    let _first = bench.inb(IIR_FCR);
    bench.outb(IER, 0);
    bench.outb(IER, IER_ETBEI);
    let second = bench.inb(IIR_FCR);
    bench.outb(IER, 0);
    let thre_bug = bench.inb(LSR) & LSR_TEMT != 0 && second & IIR_NO_INTERRUPT != 0;

    // set_termios: 115200 8N1, FIFOs with trigger 8 as Linux picks for a 16550A.
    bench.outb(LCR, LCR_DLAB | 0x03);
    bench.outb(DLL, 1);
    bench.outb(DLM, 0);
    bench.outb(LCR, 0x03);
    bench.outb(IIR_FCR, FCR_ENABLE | FCR_TRIGGER_8);
    bench.outb(IER, IER_ERBFI | IER_ELSI);
    thre_bug
}

#[test]
fn startup_finds_no_thre_bug() {
    let mut bench = Bench::new();
    assert!(
        !startup(&mut bench),
        "THRE must re-assert when ETBEI is re-enabled"
    );
    assert!(!bench.irq.level());
}

/// serial8250_console_putchar: wait (bounded, as Linux does) for THRE | TEMT, then write.
fn console_putchar(bench: &mut Bench, byte: u8) -> usize {
    let mut polls = 0;
    while polls < 10_000 {
        polls += 1;
        if bench.inb(LSR) & BOTH_EMPTY == BOTH_EMPTY {
            break;
        }
    }
    bench.outb(RBR_THR, byte);
    polls
}

#[test]
fn console_write_polls_lsr_then_writes_thr() {
    let mut bench = Bench::new();
    startup(&mut bench);
    bench.outb(IER, IER_ERBFI | IER_ELSI | IER_ETBEI);
    bench.inb(IIR_FCR); // the port's THRE interrupt, taken
    let edges_before = bench.irq.rising_edges();

    // serial8250_console_write: mask IER, emit with \n -> \r\n, wait, restore IER.
    let saved_ier = bench.inb(IER);
    bench.outb(IER, 0);
    let mut max_polls = 0;
    for &byte in b"Linux version 6.1\nok\n" {
        if byte == b'\n' {
            max_polls = max_polls.max(console_putchar(&mut bench, b'\r'));
        }
        max_polls = max_polls.max(console_putchar(&mut bench, byte));
    }
    assert!(!bench.irq.level(), "IER masked during the console write");
    while bench.inb(LSR) & BOTH_EMPTY != BOTH_EMPTY {}
    bench.outb(IER, saved_ier);

    assert_eq!(bench.output(), b"Linux version 6.1\r\nok\r\n");
    assert_eq!(max_polls, 1, "the transmitter is never busy");
    // Restoring ETBEI re-raises THRE, which restarts interrupt-driven transmission.
    assert!(bench.irq.level());
    assert_eq!(bench.irq.rising_edges(), edges_before + 1);
    assert_eq!(bench.inb(IIR_FCR), 0xC2);
}

#[test]
fn interrupt_driven_transmit_refills_on_each_thre() {
    // serial8250_start_tx sets ETBEI; each THRE interrupt lets the driver write up to the
    // FIFO size (16) bytes; when the buffer is empty it clears ETBEI.
    let mut bench = Bench::new();
    startup(&mut bench);
    let message: Vec<u8> = (0..100u8).map(|i| b'A' + i % 26).collect();
    let mut sent = 0;
    let mut interrupts = 0;
    bench.outb(IER, IER_ERBFI | IER_ELSI | IER_ETBEI);
    while bench.irq.level() {
        interrupts += 1;
        assert!(interrupts < 100, "interrupt storm");
        let iir = bench.inb(IIR_FCR);
        assert_eq!(iir, 0xC2);
        let chunk = (message.len() - sent).min(16);
        for &byte in &message[sent..sent + chunk] {
            bench.outb(RBR_THR, byte);
        }
        sent += chunk;
        if sent == message.len() {
            bench.outb(IER, IER_ERBFI | IER_ELSI);
        }
    }
    assert_eq!(bench.output(), message.as_slice());
    assert_eq!(interrupts, 7, "ceil(100 / 16) bursts");
    assert_eq!(bench.inb(IIR_FCR), 0xC1);
}

#[test]
fn interrupt_driven_receive_drains_the_fifo() {
    // serial8250_handle_irq -> serial8250_rx_chars: read RBR while LSR.DR, up to 256.
    let mut bench = Bench::new();
    startup(&mut bench);
    bench.uart.enqueue_input(b"root\n");
    assert_eq!(bench.inb(IIR_FCR), 0xC1, "5 bytes are below trigger 8");
    let deadline = bench.uart.next_deadline_ns().expect("a timeout is due");
    bench.clock.set(deadline);
    bench.uart.update();
    assert!(bench.irq.level());

    let iir = bench.inb(IIR_FCR);
    assert_eq!(iir, 0xCC);
    let mut received = Vec::new();
    while bench.inb(LSR) & LSR_DR != 0 && received.len() < 256 {
        received.push(bench.inb(RBR_THR));
    }
    assert_eq!(received, b"root\n");
    assert!(!bench.irq.level());
    assert_eq!(bench.uart.next_deadline_ns(), None);
}
