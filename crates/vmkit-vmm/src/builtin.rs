//! The built-in guest `vmkit` runs with no arguments: a real-mode program that greets on COM1
//! and then ends the machine the documented way (an i8042 reset under `-no-reboot`).

/// Where the built-in guest is loaded and started (real mode, CS:IP = 0000:1000).
pub const BUILTIN_ENTRY: u64 = 0x1000;
/// Where its message lives.
pub const BUILTIN_MESSAGE_ADDR: u64 = 0x1100;
/// What it prints.
pub const BUILTIN_GREETING: &str = "Hello from the vmkit built-in guest!\n";

/// The code at [`BUILTIN_ENTRY`]. The listing is checked against an assembler in the tests.
pub const BUILTIN_CODE: &[u8] = &[
    0xbe, 0x00, 0x11, //       mov si, 0x1100        ; the message
    0xac, //             next: lodsb
    0x84, 0xc0, //             test al, al
    0x74, 0x12, //             jz done
    0x88, 0xc3, //             mov bl, al
    0xba, 0xfd, 0x03, //       mov dx, 0x3fd         ; COM1 LSR
    0xec, //             wait: in al, dx
    0xa8, 0x20, //             test al, 0x20         ; THR empty?
    0x74, 0xfb, //             jz wait
    0xba, 0xf8, 0x03, //       mov dx, 0x3f8         ; COM1 THR
    0x88, 0xd8, //             mov al, bl
    0xee, //                   out dx, al
    0xeb, 0xe9, //             jmp next
    0xe4, 0x64, //       done: in al, 0x64           ; i8042 status
    0xa8, 0x02, //             test al, 2            ; input buffer full?
    0x75, 0xfa, //             jnz done
    0xb0, 0xfe, //             mov al, 0xfe          ; pulse the reset line
    0xe6, 0x64, //             out 0x64, al
    0xf4, //             halt: hlt
    0xeb, 0xfd, //             jmp halt
];

/// The message bytes, NUL-terminated, for [`BUILTIN_MESSAGE_ADDR`].
pub fn builtin_message() -> Vec<u8> {
    let mut bytes = BUILTIN_GREETING.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmkit_testutil::iced_x86::code_asm::*;

    #[test]
    fn listing_matches_the_assembler() {
        let assembled = vmkit_testutil::assemble(16, BUILTIN_ENTRY, |a| {
            let mut next = a.create_label();
            let mut wait = a.create_label();
            let mut done = a.create_label();
            let mut halt = a.create_label();
            a.mov(si, BUILTIN_MESSAGE_ADDR as u32)?;
            a.set_label(&mut next)?;
            a.lodsb()?;
            a.test(al, al)?;
            a.jz(done)?;
            a.mov(bl, al)?;
            a.mov(dx, 0x3fdu32)?;
            a.set_label(&mut wait)?;
            a.in_(al, dx)?;
            a.test(al, 0x20)?;
            a.jz(wait)?;
            a.mov(dx, 0x3f8u32)?;
            a.mov(al, bl)?;
            a.out(dx, al)?;
            a.jmp(next)?;
            a.set_label(&mut done)?;
            a.in_(al, 0x64)?;
            a.test(al, 2)?;
            a.jnz(done)?;
            a.mov(al, 0xfe)?;
            a.out(0x64, al)?;
            a.set_label(&mut halt)?;
            a.hlt()?;
            a.jmp(halt)
        });
        assert_eq!(assembled, BUILTIN_CODE);
        assert!(BUILTIN_ENTRY + BUILTIN_CODE.len() as u64 <= BUILTIN_MESSAGE_ADDR);
    }
}
