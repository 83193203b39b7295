//! The register set the stub offers gdb: gdbstub_arch's x86-64 core and SSE registers, then
//! the segment bases and control registers a system debugger needs (QEMU's
//! `gdb-xml/i386-64bit.xml` offers the same ones), described to gdb by our own target XML.
//!
//! The core registers keep gdbstub_arch's layout (and gdb's numbering: xmm0 is register 40,
//! mxcsr 56); the system registers follow as 64-bit registers 57 to 65, in [`SYSTEM_REGS`]
//! order. gdb shows them as `$fs_base`, `$gs_base`, `$k_gs_base`, `$cr0`, `$cr2`, `$cr3`,
//! `$cr4`, `$cr8` and `$efer` (`info registers cr0` decodes the flag bits).

use std::num::NonZeroUsize;

use gdbstub::arch::{Arch, RegId, Registers};
use gdbstub_arch::x86::reg::id::X86_64CoreRegId;
use gdbstub_arch::x86::reg::X86_64CoreRegs;

/// The gdbstub architecture of [`crate::DebugTarget`]: x86-64 with SSE, segment bases and
/// control registers.
#[allow(non_camel_case_types)]
pub enum X86_64_System {}

/// Segment bases, control registers and EFER, as gdb names them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct X86SystemRegs {
    /// FS base (the FS descriptor cache's base, `MSR_FS_BASE` in long mode).
    pub fs_base: u64,
    /// GS base.
    pub gs_base: u64,
    /// `MSR_KERNEL_GS_BASE` (what `swapgs` swaps in).
    pub k_gs_base: u64,
    /// CR0.
    pub cr0: u64,
    /// CR2 (the last page-fault address).
    pub cr2: u64,
    /// CR3 (the page-table base).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CR8 (the task priority).
    pub cr8: u64,
    /// EFER.
    pub efer: u64,
}

/// The system registers' gdb names, in register-number order (from [`FIRST_SYSTEM_REG`]).
pub const SYSTEM_REGS: [&str; 9] = [
    "fs_base",
    "gs_base",
    "k_gs_base",
    "cr0",
    "cr2",
    "cr3",
    "cr4",
    "cr8",
    "efer",
];

/// gdb's register number of `fs_base`, the first system register (after mxcsr, 56).
pub const FIRST_SYSTEM_REG: usize = 57;

impl X86SystemRegs {
    fn as_array(&self) -> [u64; 9] {
        [
            self.fs_base,
            self.gs_base,
            self.k_gs_base,
            self.cr0,
            self.cr2,
            self.cr3,
            self.cr4,
            self.cr8,
            self.efer,
        ]
    }

    fn from_array(values: [u64; 9]) -> Self {
        let [fs_base, gs_base, k_gs_base, cr0, cr2, cr3, cr4, cr8, efer] = values;
        Self {
            fs_base,
            gs_base,
            k_gs_base,
            cr0,
            cr2,
            cr3,
            cr4,
            cr8,
            efer,
        }
    }
}

/// Every register gdb sees: core + SSE, then the system registers.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct X86_64Regs {
    /// General, segment, x87 and SSE registers (gdbstub_arch's layout).
    pub core: X86_64CoreRegs,
    /// Segment bases, control registers, EFER.
    pub system: X86SystemRegs,
}

/// Bytes of [`X86_64CoreRegs`] in a `g` packet.
const CORE_BYTES: usize = 0x218;

impl Registers for X86_64Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.core.rip
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        self.core.gdb_serialize(&mut write_byte);
        for value in self.system.as_array() {
            for byte in value.to_le_bytes() {
                write_byte(Some(byte));
            }
        }
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        let system = bytes.get(CORE_BYTES..).ok_or(())?;
        if system.len() < SYSTEM_REGS.len() * 8 {
            return Err(());
        }
        self.core.gdb_deserialize(&bytes[..CORE_BYTES])?;
        let mut values = [0u64; 9];
        for (value, chunk) in values.iter_mut().zip(system.chunks_exact(8)) {
            *value = u64::from_le_bytes(chunk.try_into().map_err(|_| ())?);
        }
        self.system = X86SystemRegs::from_array(values);
        Ok(())
    }
}

/// A register number gdb may name: a core one, or a system one (index into [`SYSTEM_REGS`]).
#[derive(Debug, Clone, Copy)]
pub enum X86_64RegId {
    /// One of gdbstub_arch's (0 to 56).
    Core(X86_64CoreRegId),
    /// `fs_base` (0) to `efer` (8).
    System(usize),
}

impl RegId for X86_64RegId {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        if id < FIRST_SYSTEM_REG {
            let (core, size) = X86_64CoreRegId::from_raw_id(id)?;
            return Some((X86_64RegId::Core(core), size));
        }
        let index = id - FIRST_SYSTEM_REG;
        (index < SYSTEM_REGS.len()).then(|| (X86_64RegId::System(index), NonZeroUsize::new(8)))
    }
}

impl Arch for X86_64_System {
    type Usize = u64;
    type Registers = X86_64Regs;
    type RegId = X86_64RegId;
    type BreakpointKind = usize;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

/// The target description: gdb's own feature names for the core, SSE and segment-base
/// registers (so gdb's x86-64 support recognises them), and the control registers as a
/// feature of ours with their flag bits named.
pub const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
<architecture>i386:x86-64</architecture>
<feature name="org.gnu.gdb.i386.core">
<flags id="i386_eflags" size="4">
<field name="CF" start="0" end="0"/><field name="" start="1" end="1"/>
<field name="PF" start="2" end="2"/><field name="AF" start="4" end="4"/>
<field name="ZF" start="6" end="6"/><field name="SF" start="7" end="7"/>
<field name="TF" start="8" end="8"/><field name="IF" start="9" end="9"/>
<field name="DF" start="10" end="10"/><field name="OF" start="11" end="11"/>
<field name="NT" start="14" end="14"/><field name="RF" start="16" end="16"/>
<field name="VM" start="17" end="17"/><field name="AC" start="18" end="18"/>
<field name="VIF" start="19" end="19"/><field name="VIP" start="20" end="20"/>
<field name="ID" start="21" end="21"/>
</flags>
<reg name="rax" bitsize="64" type="int64" regnum="0"/>
<reg name="rbx" bitsize="64" type="int64"/>
<reg name="rcx" bitsize="64" type="int64"/>
<reg name="rdx" bitsize="64" type="int64"/>
<reg name="rsi" bitsize="64" type="int64"/>
<reg name="rdi" bitsize="64" type="int64"/>
<reg name="rbp" bitsize="64" type="data_ptr"/>
<reg name="rsp" bitsize="64" type="data_ptr"/>
<reg name="r8" bitsize="64" type="int64"/>
<reg name="r9" bitsize="64" type="int64"/>
<reg name="r10" bitsize="64" type="int64"/>
<reg name="r11" bitsize="64" type="int64"/>
<reg name="r12" bitsize="64" type="int64"/>
<reg name="r13" bitsize="64" type="int64"/>
<reg name="r14" bitsize="64" type="int64"/>
<reg name="r15" bitsize="64" type="int64"/>
<reg name="rip" bitsize="64" type="code_ptr"/>
<reg name="eflags" bitsize="32" type="i386_eflags"/>
<reg name="cs" bitsize="32" type="int32"/>
<reg name="ss" bitsize="32" type="int32"/>
<reg name="ds" bitsize="32" type="int32"/>
<reg name="es" bitsize="32" type="int32"/>
<reg name="fs" bitsize="32" type="int32"/>
<reg name="gs" bitsize="32" type="int32"/>
<reg name="st0" bitsize="80" type="i387_ext"/>
<reg name="st1" bitsize="80" type="i387_ext"/>
<reg name="st2" bitsize="80" type="i387_ext"/>
<reg name="st3" bitsize="80" type="i387_ext"/>
<reg name="st4" bitsize="80" type="i387_ext"/>
<reg name="st5" bitsize="80" type="i387_ext"/>
<reg name="st6" bitsize="80" type="i387_ext"/>
<reg name="st7" bitsize="80" type="i387_ext"/>
<reg name="fctrl" bitsize="32" type="int" group="float"/>
<reg name="fstat" bitsize="32" type="int" group="float"/>
<reg name="ftag" bitsize="32" type="int" group="float"/>
<reg name="fiseg" bitsize="32" type="int" group="float"/>
<reg name="fioff" bitsize="32" type="int" group="float"/>
<reg name="foseg" bitsize="32" type="int" group="float"/>
<reg name="fooff" bitsize="32" type="int" group="float"/>
<reg name="fop" bitsize="32" type="int" group="float"/>
</feature>
<feature name="org.gnu.gdb.i386.sse">
<vector id="v4f" type="ieee_single" count="4"/>
<vector id="v2d" type="ieee_double" count="2"/>
<vector id="v16i8" type="int8" count="16"/>
<vector id="v8i16" type="int16" count="8"/>
<vector id="v4i32" type="int32" count="4"/>
<vector id="v2i64" type="int64" count="2"/>
<union id="vec128">
<field name="v4_float" type="v4f"/><field name="v2_double" type="v2d"/>
<field name="v16_int8" type="v16i8"/><field name="v8_int16" type="v8i16"/>
<field name="v4_int32" type="v4i32"/><field name="v2_int64" type="v2i64"/>
<field name="uint128" type="uint128"/>
</union>
<flags id="i386_mxcsr" size="4">
<field name="IE" start="0" end="0"/><field name="DE" start="1" end="1"/>
<field name="ZE" start="2" end="2"/><field name="OE" start="3" end="3"/>
<field name="UE" start="4" end="4"/><field name="PE" start="5" end="5"/>
<field name="DAZ" start="6" end="6"/><field name="IM" start="7" end="7"/>
<field name="DM" start="8" end="8"/><field name="ZM" start="9" end="9"/>
<field name="OM" start="10" end="10"/><field name="UM" start="11" end="11"/>
<field name="PM" start="12" end="12"/><field name="FZ" start="15" end="15"/>
</flags>
<reg name="xmm0" bitsize="128" type="vec128" regnum="40"/>
<reg name="xmm1" bitsize="128" type="vec128"/>
<reg name="xmm2" bitsize="128" type="vec128"/>
<reg name="xmm3" bitsize="128" type="vec128"/>
<reg name="xmm4" bitsize="128" type="vec128"/>
<reg name="xmm5" bitsize="128" type="vec128"/>
<reg name="xmm6" bitsize="128" type="vec128"/>
<reg name="xmm7" bitsize="128" type="vec128"/>
<reg name="xmm8" bitsize="128" type="vec128"/>
<reg name="xmm9" bitsize="128" type="vec128"/>
<reg name="xmm10" bitsize="128" type="vec128"/>
<reg name="xmm11" bitsize="128" type="vec128"/>
<reg name="xmm12" bitsize="128" type="vec128"/>
<reg name="xmm13" bitsize="128" type="vec128"/>
<reg name="xmm14" bitsize="128" type="vec128"/>
<reg name="xmm15" bitsize="128" type="vec128"/>
<reg name="mxcsr" bitsize="32" type="i386_mxcsr" group="vector"/>
</feature>
<feature name="org.gnu.gdb.i386.segments">
<reg name="fs_base" bitsize="64" type="int" regnum="57"/>
<reg name="gs_base" bitsize="64" type="int"/>
</feature>
<feature name="org.vmkit.gdb.x86.sys">
<flags id="x86_cr0" size="8">
<field name="PE" start="0" end="0"/><field name="MP" start="1" end="1"/>
<field name="EM" start="2" end="2"/><field name="TS" start="3" end="3"/>
<field name="ET" start="4" end="4"/><field name="NE" start="5" end="5"/>
<field name="WP" start="16" end="16"/><field name="AM" start="18" end="18"/>
<field name="NW" start="29" end="29"/><field name="CD" start="30" end="30"/>
<field name="PG" start="31" end="31"/>
</flags>
<flags id="x86_cr4" size="8">
<field name="VME" start="0" end="0"/><field name="PVI" start="1" end="1"/>
<field name="TSD" start="2" end="2"/><field name="DE" start="3" end="3"/>
<field name="PSE" start="4" end="4"/><field name="PAE" start="5" end="5"/>
<field name="MCE" start="6" end="6"/><field name="PGE" start="7" end="7"/>
<field name="PCE" start="8" end="8"/><field name="OSFXSR" start="9" end="9"/>
<field name="OSXMMEXCPT" start="10" end="10"/><field name="UMIP" start="11" end="11"/>
<field name="LA57" start="12" end="12"/><field name="VMXE" start="13" end="13"/>
<field name="SMXE" start="14" end="14"/><field name="FSGSBASE" start="16" end="16"/>
<field name="PCIDE" start="17" end="17"/><field name="OSXSAVE" start="18" end="18"/>
<field name="SMEP" start="20" end="20"/><field name="SMAP" start="21" end="21"/>
<field name="PKE" start="22" end="22"/>
</flags>
<flags id="x86_efer" size="8">
<field name="SCE" start="0" end="0"/><field name="LME" start="8" end="8"/>
<field name="LMA" start="10" end="10"/><field name="NXE" start="11" end="11"/>
<field name="SVME" start="12" end="12"/><field name="LMSLE" start="13" end="13"/>
<field name="FFXSR" start="14" end="14"/><field name="TCE" start="15" end="15"/>
</flags>
<reg name="k_gs_base" bitsize="64" type="int" regnum="59" group="system"/>
<reg name="cr0" bitsize="64" type="x86_cr0" group="system"/>
<reg name="cr2" bitsize="64" type="int" group="system"/>
<reg name="cr3" bitsize="64" type="int" group="system"/>
<reg name="cr4" bitsize="64" type="x86_cr4" group="system"/>
<reg name="cr8" bitsize="64" type="int" group="system"/>
<reg name="efer" bitsize="64" type="x86_efer" group="system"/>
</feature>
</target>"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn serialized(regs: &X86_64Regs) -> Vec<u8> {
        let mut bytes = Vec::new();
        regs.gdb_serialize(|b| bytes.push(b.unwrap_or(0)));
        bytes
    }

    #[test]
    fn system_registers_follow_the_core_and_round_trip() {
        let mut regs = X86_64Regs::default();
        regs.core.rip = 0x1234;
        regs.system = X86SystemRegs::from_array([1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let bytes = serialized(&regs);
        assert_eq!(bytes.len(), CORE_BYTES + 9 * 8);
        // cr0 (the fourth system register) at its place.
        let cr0 = CORE_BYTES + 3 * 8;
        assert_eq!(
            u64::from_le_bytes(bytes[cr0..cr0 + 8].try_into().unwrap()),
            4
        );
        let mut back = X86_64Regs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, regs);
        // A short packet is refused, not half-applied.
        let mut short = X86_64Regs::default();
        assert!(short.gdb_deserialize(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(short, X86_64Regs::default());
    }

    #[test]
    fn register_numbers_cover_every_serialized_byte() {
        let mut total = 0;
        let mut id = 0;
        while let Some((_, size)) = X86_64RegId::from_raw_id(id) {
            total += size.map_or(0, NonZeroUsize::get);
            id += 1;
        }
        assert_eq!(id, FIRST_SYSTEM_REG + SYSTEM_REGS.len());
        assert_eq!(total, serialized(&X86_64Regs::default()).len());
    }

    #[test]
    fn the_description_names_every_register_once_in_order() {
        let names: Vec<&str> = TARGET_XML
            .split("<reg name=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        assert_eq!(names.len(), FIRST_SYSTEM_REG + SYSTEM_REGS.len());
        assert_eq!(names[40], "xmm0");
        assert_eq!(names[56], "mxcsr");
        assert_eq!(&names[FIRST_SYSTEM_REG..], &SYSTEM_REGS);
    }
}
