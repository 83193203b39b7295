//! `i8042`, `mc146818rtc`, `port80` and `isa-debug-exit`: the PC glue devices.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmkit_hw::{Clock, IrqLine, WallClock};
use vmkit_object::{Object, PropertyDef, TypeInfo};
use vmkit_pcglue::debugcon::{DEBUGCON_DEFAULT_PORT, DEBUGCON_DEFAULT_READBACK};
use vmkit_pcglue::{
    Cmos, DebugCon, DebugExit, ExitRequest, PostPort, CMOS_INDEX_PORT, DEBUG_EXIT_DEFAULT_PORT,
    DEBUG_EXIT_DEFAULT_SIZE, I8042, I8042_AUX_IRQ, I8042_COMMAND_PORT, I8042_DATA_PORT,
    I8042_KBD_IRQ, POST_PORT,
};

use super::{
    fixed, hook_error, isa_context, map_ranges, IsaContext, MachineEvents, TYPE_DEBUGCON,
    TYPE_DEBUG_EXIT, TYPE_I8042, TYPE_ISA_DEVICE, TYPE_PORT80, TYPE_RTC,
};
use crate::irq::{lock, IsaIrqLine};
use crate::{Error, Result};
use vmkit_hw::timers::Locked;

/// The keyboard controller model as the `i8042` device builds it.
pub type IsaI8042 = I8042<Arc<dyn IrqLine>>;

/// The CMOS / RTC model as the `mc146818rtc` device builds it.
pub type IsaCmos = Cmos<Arc<dyn WallClock>, Arc<dyn Clock>>;

/// ISA IRQ of the RTC (shown for information: the model raises no interrupt).
const RTC_IRQ: u64 = 8;

/// The i8042's CPU reset output: a rising edge is a reset request.
struct ResetLine {
    events: Arc<dyn MachineEvents>,
    level: AtomicBool,
}

impl IrqLine for ResetLine {
    fn set_level(&self, high: bool) {
        if high && !self.level.swap(true, Ordering::AcqRel) {
            self.events.reset_requested();
        } else if !high {
            self.level.store(false, Ordering::Release);
        }
    }
}

/// isa-debug-exit's request, forwarded to the machine's events.
struct ExitToEvents(Arc<dyn MachineEvents>);

impl ExitRequest for ExitToEvents {
    fn request_exit(&self, status: u32) {
        self.0.exit_requested(status);
    }
}

/// A device model that only needs to be kept for reset and for handles.
struct Model<T>(Option<Arc<Mutex<T>>>);

impl<T> Default for Model<T> {
    fn default() -> Self {
        Self(None)
    }
}

#[derive(Default)]
struct PostState(Option<Arc<PostPort>>);

fn realize_i8042(object: &Object, ctx: &IsaContext) -> Result<()> {
    let reset: Arc<dyn IrqLine> = Arc::new(ResetLine {
        events: Arc::clone(&ctx.events),
        level: AtomicBool::new(false),
    });
    let kbd: Arc<dyn IrqLine> = Arc::new(IsaIrqLine::new(Arc::clone(&ctx.irq), I8042_KBD_IRQ)?);
    let aux: Arc<dyn IrqLine> = Arc::new(IsaIrqLine::new(Arc::clone(&ctx.irq), I8042_AUX_IRQ)?);
    let model = Arc::new(Mutex::new(I8042::with_interrupts(reset, kbd, aux)));
    // Two one-port ranges: 0x61 between them is the PIT's port B.
    map_ranges(
        object,
        ctx,
        &[(I8042_DATA_PORT, 1), (I8042_COMMAND_PORT, 1)],
        Arc::new(Locked(Arc::clone(&model))),
    )?;
    object.with_state::<Model<IsaI8042>, _>(|s| s.0 = Some(model))?;
    Ok(())
}

fn realize_rtc(object: &Object, ctx: &IsaContext) -> Result<()> {
    let cmos = Cmos::new(Arc::clone(&ctx.wall_clock), Arc::clone(&ctx.clock), ctx.ram)?;
    let model = Arc::new(Mutex::new(cmos));
    map_ranges(
        object,
        ctx,
        &[(CMOS_INDEX_PORT, 2)],
        Arc::new(Locked(Arc::clone(&model))),
    )?;
    object.with_state::<Model<IsaCmos>, _>(|s| s.0 = Some(model))?;
    Ok(())
}

fn realize_port80(object: &Object, ctx: &IsaContext) -> Result<()> {
    // Lock-free: Linux writes here for every `outb_p`.
    let post = Arc::new(PostPort::new());
    map_ranges(object, ctx, &[(POST_PORT, 1)], post.clone())?;
    object.with_state::<PostState, _>(|s| s.0 = Some(post))?;
    Ok(())
}

fn realize_debug_exit(object: &Object, ctx: &IsaContext) -> Result<()> {
    let base = u16::try_from(object.get_u64("iobase")?).unwrap_or(u16::MAX);
    let size = u16::try_from(object.get_u64("iosize")?).unwrap_or(u16::MAX);
    let device = DebugExit::with_range(ExitToEvents(Arc::clone(&ctx.events)), base, size)?;
    map_ranges(
        object,
        ctx,
        &[(base, size)],
        Arc::new(Locked(Arc::new(Mutex::new(device)))),
    )?;
    Ok(())
}

fn realize_debugcon(object: &Object, ctx: &mut IsaContext) -> Result<()> {
    let port = u16::try_from(object.get_u64("iobase")?).unwrap_or(u16::MAX);
    let readback = u8::try_from(object.get_u64("readback")?).unwrap_or(u8::MAX);
    let chardev = match object.get_property("chardev")? {
        vmkit_object::Value::String(id) if !id.is_empty() => Some(id),
        _ => None,
    };
    let backend = ctx.take_backend(chardev.as_deref())?;
    let device = DebugCon::new(port, readback, backend.output);
    map_ranges(
        object,
        ctx,
        &[(port, vmkit_pcglue::debugcon::DEBUGCON_PORT_LEN)],
        Arc::new(Locked(Arc::new(Mutex::new(device)))),
    )
}

/// The CMOS / RTC model of a realized `mc146818rtc` object (e.g. to read or set the
/// guest's clock offset).
///
/// # Errors
/// [`Error::Object`] if `object` is not an `mc146818rtc`; [`Error::NotRealized`] if it is
/// not realized.
pub fn cmos_handle(object: &Object) -> Result<Arc<Mutex<IsaCmos>>> {
    object.cast(TYPE_RTC)?;
    object
        .with_state::<Model<IsaCmos>, _>(|s| s.0.clone())?
        .ok_or_else(|| Error::NotRealized(object.describe()))
}

/// The keyboard controller model of a realized `i8042` object (e.g. for migration).
///
/// # Errors
/// [`Error::Object`] if `object` is not an `i8042`; [`Error::NotRealized`] if it is not
/// realized.
pub fn i8042_handle(object: &Object) -> Result<Arc<Mutex<IsaI8042>>> {
    object.cast(TYPE_I8042)?;
    object
        .with_state::<Model<IsaI8042>, _>(|s| s.0.clone())?
        .ok_or_else(|| Error::NotRealized(object.describe()))
}

/// The POST port of a realized `port80` object (the last POST code written).
///
/// # Errors
/// [`Error::Object`] if `object` is not a `port80`; [`Error::NotRealized`] if it is not
/// realized.
pub fn post_handle(object: &Object) -> Result<Arc<PostPort>> {
    object.cast(TYPE_PORT80)?;
    object
        .with_state::<PostState, _>(|s| s.0.clone())?
        .ok_or_else(|| Error::NotRealized(object.describe()))
}

type Realize = fn(&Object, &IsaContext) -> Result<()>;

/// A glue device type: chained realize, state cleared on unrealize.
fn glue_type<S: Default + Send + 'static>(
    name: &str,
    description: &str,
    realize: Realize,
    clear: fn(&mut S),
) -> TypeInfo {
    TypeInfo::new(name)
        .parent(TYPE_ISA_DEVICE)
        .description(description)
        .state(S::default)
        .realize(move |object, ctx, parent| {
            parent.call(object, ctx)?;
            realize(object, isa_context(ctx)?).map_err(hook_error)
        })
        .unrealize(move |object, ctx, parent| {
            object.with_state::<S, _>(clear)?;
            parent.call(object, ctx)
        })
}

pub(super) fn type_infos() -> Vec<TypeInfo> {
    vec![
        TypeInfo::new(TYPE_DEBUGCON)
            .parent(TYPE_ISA_DEVICE)
            .description("QEMU's debug console: bytes written to the port go to a chardev")
            .property(
                PropertyDef::uint("iobase", 0..=0xffff)
                    .default(u64::from(DEBUGCON_DEFAULT_PORT))
                    .description("the port (SeaBIOS logs to 0x402)"),
            )
            .property(
                PropertyDef::uint("readback", 0..=0xff)
                    .default(u64::from(DEBUGCON_DEFAULT_READBACK))
                    .description("what a read of the port returns"),
            )
            .property(
                PropertyDef::string("chardev")
                    .description("id of the character backend; none: output is discarded"),
            )
            .realize(|object, ctx, parent| {
                parent.call(object, ctx)?;
                realize_debugcon(object, isa_context(ctx)?).map_err(hook_error)
            }),
        glue_type::<Model<IsaI8042>>(
            TYPE_I8042,
            "8042 keyboard controller: CPU reset (0xFE), A20, no keyboard attached",
            realize_i8042,
            |s| s.0 = None,
        )
        .property(fixed(
            "iobase",
            u64::from(I8042_DATA_PORT),
            "data port (status/command at 0x64)",
        ))
        .property(fixed("irq", u64::from(I8042_KBD_IRQ), "keyboard ISA IRQ"))
        .property(fixed(
            "aux-irq",
            u64::from(I8042_AUX_IRQ),
            "auxiliary (mouse) ISA IRQ",
        ))
        .reset(|object, parent| {
            parent.call(object);
            if let Ok(Some(model)) = object.with_state::<Model<IsaI8042>, _>(|s| s.0.clone()) {
                lock(&model).reset();
            }
        }),
        glue_type::<Model<IsaCmos>>(
            TYPE_RTC,
            "MC146818A real-time clock and CMOS RAM with the BIOS memory-size bytes",
            realize_rtc,
            |s| s.0 = None,
        )
        .property(fixed(
            "iobase",
            u64::from(CMOS_INDEX_PORT),
            "index port (data at 0x71)",
        ))
        .property(fixed(
            "irq",
            RTC_IRQ,
            "ISA IRQ (not raised: no periodic/alarm interrupts)",
        ))
        .reset(|object, parent| {
            parent.call(object);
            if let Ok(Some(model)) = object.with_state::<Model<IsaCmos>, _>(|s| s.0.clone()) {
                lock(&model).reset();
            }
        }),
        glue_type::<PostState>(
            TYPE_PORT80,
            "POST-code port 0x80 (also Linux's I/O delay port)",
            realize_port80,
            |s| s.0 = None,
        )
        .property(fixed("iobase", u64::from(POST_PORT), "the port")),
        glue_type::<()>(
            TYPE_DEBUG_EXIT,
            "QEMU's isa-debug-exit: writing v exits the VMM with status (v << 1) | 1",
            realize_debug_exit,
            |_| {},
        )
        .property(
            PropertyDef::uint("iobase", 0..=0xffff)
                .default(DEBUG_EXIT_DEFAULT_PORT)
                .description("first port"),
        )
        .property(
            PropertyDef::uint("iosize", 1..=0xffff)
                .default(DEBUG_EXIT_DEFAULT_SIZE)
                .description("number of ports"),
        ),
    ]
}
