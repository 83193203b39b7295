//! The stub at the remote-protocol level, over TCP and unix sockets, against the mock
//! target: every answer is checked against what the mock holds and what it was asked.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmkit_gdb::mock::MockVcpus;
use vmkit_gdb::{DebugRegister, DebugRegisterKind, GdbServer, ListenAddr, SessionEnd};

struct Client<S: Read + Write> {
    stream: S,
}

fn packet(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |s, b| s.wrapping_add(b));
    format!("${body}#{sum:02x}").into_bytes()
}

/// Expands the protocol's run-length encoding (`X*N`: N - 29 more copies of X).
fn rle_decode(body: &str) -> String {
    let mut out = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '*' {
            let count = chars.next().map_or(0, |n| n as usize - 29);
            let last = out.chars().last().unwrap_or('0');
            out.extend(std::iter::repeat_n(last, count));
        } else {
            out.push(c);
        }
    }
    out
}

impl<S: Read + Write> Client<S> {
    fn send(&mut self, body: &str) {
        self.stream.write_all(&packet(body)).unwrap();
    }

    fn reply(&mut self) -> String {
        let mut text = Vec::new();
        let mut byte = [0u8];
        loop {
            let n = self.stream.read(&mut byte).expect("read a reply");
            assert_eq!(n, 1, "closed after {:?}", String::from_utf8_lossy(&text));
            text.push(byte[0]);
            if let Some(hash) = text.iter().position(|&b| b == b'#') {
                if text.len() == hash + 3 {
                    let start = text.iter().position(|&b| b == b'$').unwrap();
                    self.stream.write_all(b"+").unwrap();
                    return rle_decode(&String::from_utf8_lossy(&text[start + 1..hash]));
                }
            }
        }
    }

    fn ask(&mut self, body: &str) -> String {
        self.send(body);
        self.reply()
    }
}

fn tcp_client(server: &GdbServer) -> Client<TcpStream> {
    let stream = TcpStream::connect(server.local_tcp_addr().unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    Client { stream }
}

fn serve(mock: MockVcpus) -> (GdbServer, Arc<Mutex<Vec<String>>>) {
    let log = mock.log();
    let server = GdbServer::spawn(ListenAddr::Tcp("127.0.0.1:0".into()), mock).unwrap();
    (server, log)
}

fn logged(log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// RIP from a `g` reply: after 16 64-bit registers.
fn rip_of(regs: &str) -> u64 {
    u64::from_str_radix(&regs[256..272], 16)
        .unwrap()
        .swap_bytes()
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn attach_stops_the_guest_and_lists_one_thread_per_vcpu() {
    let (server, log) = serve(MockVcpus::new(3));
    let mut gdb = tcp_client(&server);
    let stop = gdb.ask("?");
    assert!(stop.starts_with("T05thread:"), "{stop}");
    assert_eq!(logged(&log).first().map(String::as_str), Some("pause"));
    let threads = gdb.ask("qfThreadInfo");
    assert_eq!(threads, "m01,02,03");
    assert_eq!(gdb.ask("qsThreadInfo"), "l");
    // Thread 3 is vCPU 2: RIP 0x1200, RAX 2.
    assert_eq!(gdb.ask("Hg3"), "OK");
    let regs = gdb.ask("g");
    assert_eq!(rip_of(&regs), 0x1200);
    assert_eq!(&regs[..16], "0200000000000000");
    assert_eq!(gdb.ask("Hg1"), "OK");
    assert_eq!(rip_of(&gdb.ask("g")), 0x1000);
}

#[test]
fn memory_reads_and_writes_go_through_translation() {
    let (server, _) = serve(MockVcpus::new(1));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    // The mock's memory holds the low address byte at each address.
    assert_eq!(gdb.ask("m10fe,4"), "feff0001", "across a page boundary");
    assert_eq!(gdb.ask("M2000,2:abcd"), "OK");
    assert_eq!(gdb.ask("m1fff,4"), "ffabcd02");
    // Unmapped (beyond the mock's 64 KiB): an error, not a crash.
    assert!(gdb.ask("m20000,4").starts_with('E'));
    assert!(gdb.ask("M20000,1:00").starts_with('E'));
    // A read that runs off the end returns what was mapped.
    assert_eq!(gdb.ask("mfffe,4"), "feff");
}

#[test]
fn hardware_breakpoints_fill_the_four_debug_registers() {
    let (server, log) = serve(MockVcpus::new(1));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    for addr in [0x1100, 0x1200, 0x1300, 0x1400] {
        assert_eq!(gdb.ask(&format!("Z1,{addr:x},1")), "OK");
    }
    let fifth = gdb.ask("Z1,1500,1");
    assert!(
        fifth.starts_with('E'),
        "a fifth breakpoint has no register: {fifth}"
    );
    assert_eq!(gdb.ask("z1,1200,1"), "OK");
    assert_eq!(gdb.ask("z1,1300,1"), "OK");
    assert_eq!(gdb.ask("z1,1400,1"), "OK");
    // Continue runs to the one left (the mock stops at the first armed execute register).
    let stop = gdb.ask("vCont;c");
    assert!(
        stop.starts_with("T05") && stop.contains("hwbreak:"),
        "{stop}"
    );
    assert!(stop.contains("thread:01"), "{stop}");
    assert_eq!(rip_of(&gdb.ask("g")), 0x1100);
    let log = logged(&log);
    assert!(log.contains(&"debug registers 4".to_string()), "{log:?}");
    assert_eq!(log.last().map(String::as_str), Some("continue"));
}

/// The mock's byte at `gpa`.
fn byte_at(memory: &vmkit_gdb::mock::MockMemory, gpa: usize) -> u8 {
    memory.lock().unwrap()[gpa]
}

#[test]
fn software_breakpoints_are_planted_int3s_hidden_from_reads_and_put_back() {
    let mock = MockVcpus::new(1);
    let memory = mock.memory();
    let (server, log) = serve(mock);
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    // More breakpoints than there are debug registers.
    let addrs = [0x1234usize, 0x1240, 0x1250, 0x1260, 0x1270, 0x1280];
    for addr in addrs {
        assert_eq!(gdb.ask(&format!("Z0,{addr:x},1")), "OK");
        assert_eq!(byte_at(&memory, addr), 0xcc, "an int3 at {addr:#x}");
    }
    assert!(logged(&log).contains(&"int3s 6".to_string()));
    assert!(
        !logged(&log)
            .iter()
            .any(|l| l.starts_with("debug registers")),
        "no debug register used"
    );
    // Reads show the guest's bytes; a write over a planted byte keeps the int3 in memory
    // and changes the byte put back later.
    assert_eq!(gdb.ask("m1232,4"), "32333435");
    assert_eq!(gdb.ask("M1240,1:aa"), "OK");
    assert_eq!(byte_at(&memory, 0x1240), 0xcc);
    assert_eq!(gdb.ask("m1240,1"), "aa");
    // The mock runs into the first one.
    let stop = gdb.ask("vCont;c");
    assert!(
        stop.starts_with("T05") && stop.contains("swbreak:"),
        "{stop}"
    );
    assert_eq!(rip_of(&gdb.ask("g")), 0x1234);
    for addr in addrs {
        assert_eq!(gdb.ask(&format!("z0,{addr:x},1")), "OK");
    }
    assert_eq!(byte_at(&memory, 0x1234), 0x34);
    assert_eq!(byte_at(&memory, 0x1240), 0xaa);
    assert_eq!(byte_at(&memory, 0x1280), 0x80);
    assert_eq!(logged(&log).last().map(String::as_str), Some("int3s 0"));
    // Not mapped: no int3 can go there, a debug register does; removing what was never set
    // is an error, not a crash.
    assert_eq!(gdb.ask("Z0,ffffffffffff0000,1"), "OK");
    assert!(logged(&log).contains(&"debug registers 1".to_string()));
    assert_eq!(gdb.ask("z0,ffffffffffff0000,1"), "OK");
    assert!(gdb.ask("z0,4321,1").starts_with('E'));
    // A breakpoint left in place goes when the client does.
    assert_eq!(gdb.ask("Z0,1300,1"), "OK");
    assert_eq!(byte_at(&memory, 0x1300), 0xcc);
    drop(gdb);
    wait_until("the session ends", || !server.client_connected());
    assert_eq!(byte_at(&memory, 0x1300), 0x00);
}

#[test]
fn software_breakpoints_use_debug_registers_where_int3_would_not_stop() {
    // Real mode (CR0.PE clear): the mock, like nested KVM, would not stop at an int3.
    let mock = MockVcpus::new(1).with_system_registers(vmkit_gdb::X86SystemRegs {
        cr0: 0x10,
        ..Default::default()
    });
    let memory = mock.memory();
    let (server, log) = serve(mock);
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    assert_eq!(gdb.ask("Z0,1234,1"), "OK");
    assert_eq!(byte_at(&memory, 0x1234), 0x34, "no int3 written");
    assert!(logged(&log).contains(&"debug registers 1".to_string()));
    let stop = gdb.ask("vCont;c");
    assert!(stop.contains("swbreak:"), "{stop}");
    assert_eq!(rip_of(&gdb.ask("g")), 0x1234);
}

#[test]
fn control_registers_are_in_the_register_set_gdb_is_told_about() {
    let system = vmkit_gdb::X86SystemRegs {
        fs_base: 0x1111,
        gs_base: 0x2222,
        k_gs_base: 0x3333,
        cr0: 0x8000_0011,
        cr2: 0x4444,
        cr3: 0x8000,
        cr4: 0x20,
        cr8: 0x5,
        efer: 0x500,
    };
    let (server, log) = serve(MockVcpus::new(1).with_system_registers(system));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    // gdb reads the description in chunks ("m" more, "l" last).
    let mut xml = String::new();
    loop {
        let chunk = gdb.ask(&format!(
            "qXfer:features:read:target.xml:{:x},400",
            xml.len()
        ));
        xml.push_str(&chunk[1..]);
        if chunk.starts_with('l') {
            break;
        }
        assert!(chunk.starts_with('m') && chunk.len() > 1, "{chunk}");
    }
    for needle in [
        "org.gnu.gdb.i386.core",
        "<reg name=\"cr3\"",
        "<reg name=\"efer\"",
    ] {
        assert!(xml.contains(needle), "{needle} in {xml}");
    }
    let regs = gdb.ask("g");
    // 0x218 bytes of core registers, then nine 64-bit system registers.
    assert_eq!(regs.len(), 2 * (0x218 + 9 * 8));
    let system_reg = |regs: &str, n: usize| {
        let at = 2 * (0x218 + 8 * n);
        u64::from_str_radix(&regs[at..at + 16], 16)
            .unwrap()
            .swap_bytes()
    };
    let values: Vec<u64> = (0..9).map(|n| system_reg(&regs, n)).collect();
    assert_eq!(
        values,
        [
            0x1111,
            0x2222,
            0x3333,
            0x8000_0011,
            0x4444,
            0x8000,
            0x20,
            0x5,
            0x500
        ]
    );
    // A write of CR3 (register 62) through G reaches the vCPU.
    let mut new = regs.clone();
    let at = 2 * (0x218 + 8 * 5);
    new.replace_range(at..at + 16, "0090000000000000");
    assert_eq!(gdb.ask(&format!("G{new}")), "OK");
    assert_eq!(system_reg(&gdb.ask("g"), 5), 0x9000);
    assert!(logged(&log).contains(&"write registers 0".to_string()));
}

#[test]
fn memory_is_read_through_the_page_tables_when_translation_fails() {
    // 4-level tables at 0x8000: 0xffff_8000_0020_0000 is a 2 MiB page at physical 0, and
    // 0xffff_8000_0000_5000 a 4 KiB page at physical 0x3000.
    let mock =
        MockVcpus::new(1)
            .without_translate()
            .with_system_registers(vmkit_gdb::X86SystemRegs {
                cr0: 0x8000_0011,
                cr3: 0x8000,
                cr4: 0x20,
                efer: 0x500,
                ..Default::default()
            });
    {
        let memory = mock.memory();
        let mut m = memory.lock().unwrap();
        let mut put =
            |gpa: usize, value: u64| m[gpa..gpa + 8].copy_from_slice(&value.to_le_bytes());
        put(0x8000 + 256 * 8, 0x9003); // PML4[256]: 0xffff_8000_0000_0000
        put(0x9000, 0xa003); // PDPT[0]
        put(0xa000, 0xb003); // PD[0] -> page table
        put(0xa008, 0x83); // PD[1]: a 2 MiB page at 0
        put(0xb000 + 5 * 8, 0x3003); // PT[5] -> 0x3000
    }
    let (server, _) = serve(mock);
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    assert_eq!(gdb.ask("mffff800000201234,2"), "3435");
    assert_eq!(gdb.ask("mffff800000005010,2"), "1011");
    assert_eq!(gdb.ask("Mffff800000005010,1:77"), "OK");
    assert_eq!(
        gdb.ask("mffff800000203010,1"),
        "77",
        "the same byte by its other alias"
    );
    // Not mapped (PT[6] empty), not canonical: errors.
    assert!(gdb.ask("mffff800000006000,1").starts_with('E'));
    assert!(gdb.ask("m0000800000000000,1").starts_with('E'));
}

#[test]
fn watchpoints_report_the_watched_address() {
    let (server, _) = serve(MockVcpus::new(1));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    assert_eq!(gdb.ask("Z2,2000,4"), "OK");
    let stop = gdb.ask("vCont;c");
    assert!(
        stop.starts_with("T05") && stop.contains("watch:2000"),
        "{stop}"
    );
    assert_eq!(gdb.ask("z2,2000,4"), "OK");
    // Misaligned or odd lengths do not fit a debug register.
    assert!(gdb.ask("Z2,2001,4").starts_with('E'));
    assert!(gdb.ask("Z2,2000,3").starts_with('E'));
    assert_eq!(gdb.ask("Z4,2008,8"), "OK", "awatch");
    let stop = gdb.ask("vCont;c");
    assert!(stop.contains("awatch:2008"), "{stop}");
}

#[test]
fn stepi_steps_only_the_chosen_vcpu() {
    let (server, log) = serve(MockVcpus::new(2));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    let stop = gdb.ask("vCont;s:2");
    assert!(stop.starts_with("T05thread:02"), "{stop}");
    assert_eq!(gdb.ask("Hg2"), "OK");
    assert_eq!(rip_of(&gdb.ask("g")), 0x1101);
    assert_eq!(gdb.ask("Hg1"), "OK");
    assert_eq!(rip_of(&gdb.ask("g")), 0x1000, "vCPU 0 did not move");
    assert!(logged(&log).contains(&"step 1".to_string()));
}

#[test]
fn register_writes_reach_the_vcpu() {
    let (server, log) = serve(MockVcpus::new(1));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    let regs = gdb.ask("g");
    let mut new = regs.clone();
    new.replace_range(..16, "efbeadde00000000");
    assert_eq!(gdb.ask(&format!("G{new}")), "OK");
    assert_eq!(&gdb.ask("g")[..16], "efbeadde00000000");
    assert!(logged(&log).contains(&"write registers 0".to_string()));
}

#[test]
fn ctrl_c_interrupts_a_running_guest() {
    let (server, log) = serve(MockVcpus::new(1));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    gdb.send("vCont;c");
    wait_until("the guest resumes", || {
        logged(&log).last().map(String::as_str) == Some("continue")
    });
    gdb.stream.write_all(&[0x03]).unwrap();
    let stop = gdb.reply();
    assert!(stop.starts_with("T02"), "SIGINT: {stop}");
    assert_eq!(logged(&log).last().map(String::as_str), Some("pause"));
}

#[test]
fn the_machine_ending_is_reported_as_an_exit() {
    let (server, _) = serve(MockVcpus::new(1).exit_after(5));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    assert_eq!(gdb.ask("vCont;c"), "W05");
    wait_until("the session ends", || !server.client_connected());
    assert_eq!(server.sessions(), vec![SessionEnd::TargetExited(5)]);
}

#[test]
fn detach_resumes_and_kill_ends_and_a_new_client_may_come() {
    let (server, log) = serve(MockVcpus::new(1));
    let mut gdb = tcp_client(&server);
    gdb.ask("?");
    assert_eq!(gdb.ask("Z1,1100,1"), "OK");
    assert_eq!(gdb.ask("D"), "OK");
    wait_until("the session ends", || !server.client_connected());
    assert_eq!(logged(&log).last().map(String::as_str), Some("detach"));
    // A next client is served.
    let mut again = tcp_client(&server);
    again.ask("?");
    again.send("k");
    wait_until("the second session ends", || server.sessions().len() == 2);
    assert_eq!(
        server.sessions(),
        vec![SessionEnd::Detached, SessionEnd::Killed]
    );
    assert!(logged(&log).contains(&"kill".to_string()));
}

#[test]
fn garbage_and_a_second_client_do_not_take_the_stub_down() {
    let (server, log) = serve(MockVcpus::new(1));
    let mut first = tcp_client(&server);
    first.ask("?");
    let mut second = tcp_client(&server);
    let mut buf = [0u8; 8];
    assert_eq!(second.stream.read(&mut buf).unwrap_or(0), 0, "refused");
    assert_eq!(
        first.ask("qNoSuchThing"),
        "",
        "unknown packets: empty reply"
    );
    first.stream.write_all(b"garbage\xff\x00").unwrap();
    wait_until("the broken session ends", || server.sessions().len() == 1);
    assert!(matches!(server.sessions()[0], SessionEnd::Failed(_)));
    // The guest runs on after a failed session.
    assert_eq!(logged(&log).last().map(String::as_str), Some("detach"));
    let mut third = tcp_client(&server);
    assert!(third.ask("?").starts_with("T05"));
}

#[test]
fn unix_sockets_work_too() {
    let path = std::env::temp_dir().join(format!("vmkit-gdb-proto-{}.sock", std::process::id()));
    std::fs::write(&path, b"").unwrap(); // not a socket: bind must refuse, not delete it
    let err = GdbServer::spawn(ListenAddr::Unix(path.clone()), MockVcpus::new(1)).unwrap_err();
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
    let server = GdbServer::spawn(ListenAddr::Unix(path.clone()), MockVcpus::new(1)).unwrap();
    let stream = std::os::unix::net::UnixStream::connect(&path).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut gdb = Client { stream };
    assert!(gdb.ask("?").starts_with("T05"));
    drop(server);
    std::fs::remove_file(&path).ok();
}

#[test]
fn listen_addresses_as_qemu_spells_them() {
    let parse = |t: &str| t.parse::<ListenAddr>();
    assert_eq!(
        parse("tcp::1234").unwrap(),
        ListenAddr::Tcp("0.0.0.0:1234".into())
    );
    assert_eq!(
        parse("tcp:localhost:99,server").unwrap(),
        ListenAddr::Tcp("localhost:99".into())
    );
    assert_eq!(
        parse("1234").unwrap(),
        ListenAddr::Tcp("0.0.0.0:1234".into())
    );
    assert_eq!(
        parse("unix:/run/g.sock,server,nowait").unwrap(),
        ListenAddr::Unix("/run/g.sock".into())
    );
    for bad in ["tcp:", "tcp::99999", "unix:", "pipe:x", "tcp::1,bogus"] {
        let err = parse(bad).unwrap_err().to_string();
        assert!(err.contains(bad.split(',').next().unwrap()), "{bad}: {err}");
    }
}

#[test]
fn dr7_encoding_matches_the_sdm() {
    let exec = DebugRegister {
        addr: 0,
        len: 1,
        kind: DebugRegisterKind::Execute,
    };
    assert_eq!(exec.dr7_bits(0), 0b10);
    let write4 = DebugRegister {
        addr: 0,
        len: 4,
        kind: DebugRegisterKind::Write,
    };
    // G1, R/W1 = 01, LEN1 = 11.
    assert_eq!(write4.dr7_bits(1), (1 << 3) | (0b01 << 20) | (0b11 << 22));
    let rw8 = DebugRegister {
        addr: 0,
        len: 8,
        kind: DebugRegisterKind::ReadWrite,
    };
    assert_eq!(rw8.dr7_bits(3), (1 << 7) | (0b11 << 28) | (0b10 << 30));
}
