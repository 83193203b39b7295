//! `isa-serial`: a 16550A UART on the port bus.

use std::io::Write;
use std::sync::{Arc, Mutex};

use vmkit_hw::{Clock, IrqLine};
use vmkit_object::{Object, PropertyDef, TypeInfo, Value};
use vmkit_serial::{ComPort, Serial, PORT_RANGE_LEN};

use super::{
    hook_error, isa_context, map_ranges, register_timer, IsaContext, SerialBackend,
    TYPE_ISA_DEVICE, TYPE_ISA_SERIAL,
};
use crate::irq::{lock, IsaIrqLine};
use crate::{Error, Result};
use vmkit_hw::timers::{DeviceTimers, Timed};

/// The UART model as the `isa-serial` device builds it.
pub type IsaSerial = Serial<IsaIrqLine, Arc<dyn Clock>, Box<dyn Write + Send>>;

/// The IRQ of a serial port that is neither given nor implied by a COM index.
const DEFAULT_IRQ: u32 = 4;

#[derive(Default)]
struct SerialState {
    /// As set through the properties (`None`: derive at realize).
    index: Option<u8>,
    iobase: Option<u16>,
    irq: Option<u32>,
    live: Option<SerialHandle>,
}

/// What the VMM holds to talk to a realized serial port: push input, watch the room for
/// more, and read its configuration. Cheap to clone.
#[derive(Clone)]
pub struct SerialHandle {
    model: Arc<Mutex<IsaSerial>>,
    timers: DeviceTimers,
    rx_room: Option<Arc<dyn IrqLine>>,
    index: Option<u8>,
    iobase: u16,
    irq: u32,
}

impl SerialHandle {
    /// Pushes received bytes into the UART; returns how many it took (at most
    /// [`input_room`](Self::input_room)). Keep the rest and retry after the rx-room line
    /// rises. Arms the character timeout if this starts one.
    pub fn enqueue_input(&self, bytes: &[u8]) -> usize {
        let (accepted, deadline) = {
            let mut uart = lock(&self.model);
            let accepted = uart.enqueue_input(bytes);
            (accepted, uart.next_deadline_ns())
        };
        self.timers.deadline_changed(deadline);
        accepted
    }

    /// How many bytes [`enqueue_input`](Self::enqueue_input) would take now.
    pub fn input_room(&self) -> usize {
        lock(&self.model).input_room()
    }

    /// The backend's input-room line, if it gave one (high while there is room).
    pub fn rx_room_line(&self) -> Option<&Arc<dyn IrqLine>> {
        self.rx_room.as_ref()
    }

    /// The COM index (0 = COM1) the port was configured as, if any.
    pub fn index(&self) -> Option<u8> {
        self.index
    }

    /// The first port.
    pub fn iobase(&self) -> u16 {
        self.iobase
    }

    /// The ISA IRQ.
    pub fn irq(&self) -> u32 {
        self.irq
    }

    /// The most recent output error since the last call (the byte was dropped).
    pub fn take_output_error(&self) -> Option<vmkit_serial::Error> {
        lock(&self.model).take_output_error()
    }

    /// The UART model itself.
    pub fn model(&self) -> &Arc<Mutex<IsaSerial>> {
        &self.model
    }
}

impl std::fmt::Debug for SerialHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialHandle")
            .field("index", &self.index)
            .field("iobase", &format_args!("{:#x}", self.iobase))
            .field("irq", &self.irq)
            .finish_non_exhaustive()
    }
}

/// The handle of a realized `isa-serial` object.
///
/// # Errors
/// [`Error::Object`] if `object` is not an `isa-serial`; [`Error::NotRealized`] if it is
/// not realized.
pub fn serial_handle(object: &Object) -> Result<SerialHandle> {
    object.cast(TYPE_ISA_SERIAL)?;
    object
        .with_state::<SerialState, _>(|s| s.live.clone())?
        .ok_or_else(|| Error::NotRealized(object.describe()))
}

fn com_port(index: u8) -> Option<ComPort> {
    index
        .checked_add(1)
        .and_then(|n| ComPort::from_number(n).ok())
}

fn as_u64(value: &Value) -> Option<u64> {
    value.as_u64()
}

/// Picks index, iobase and IRQ from what was given, as QEMU's isa-serial does: a missing
/// index is the first COM port whose base is free (or the one whose base was given); a
/// missing iobase / irq comes from the index.
fn resolve(state: &SerialState, ctx: &IsaContext) -> Result<(Option<u8>, u16, u32)> {
    let index = match (state.index, state.iobase) {
        (Some(index), _) => Some(index),
        (None, Some(iobase)) => (0u8..4).find(|&i| com_port(i).is_some_and(|c| c.base() == iobase)),
        (None, None) => {
            let free =
                (0u8..4).find(|&i| com_port(i).is_some_and(|c| ctx.pio.lookup(c.base()).is_none()));
            Some(free.ok_or(Error::NoFreeComPort)?)
        }
    };
    let com = index.and_then(com_port);
    let iobase = match (state.iobase, com) {
        (Some(iobase), _) => iobase,
        (None, Some(com)) => com.base(),
        (None, None) => return Err(Error::NoFreeComPort),
    };
    let irq = state
        .irq
        .or_else(|| com.map(ComPort::irq))
        .unwrap_or(DEFAULT_IRQ);
    Ok((index, iobase, irq))
}

fn realize(object: &Object, ctx: &mut IsaContext) -> Result<()> {
    let chardev = match object.get_property("chardev")? {
        Value::String(id) if !id.is_empty() => Some(id),
        _ => None,
    };
    let (index, iobase, irq) = object.with_state::<SerialState, _>(|s| resolve(s, ctx))??;
    let line = IsaIrqLine::new(Arc::clone(&ctx.irq), irq)?;
    let backend = ctx.take_backend(chardev.as_deref())?;
    let rx_room = backend.rx_room.clone();
    let mut uart = Serial::new(line, Arc::clone(&ctx.clock), backend.output);
    if let Some(room) = &rx_room {
        uart = uart.with_input_room_line(Box::new(Arc::clone(room)));
    }
    let model = Arc::new(Mutex::new(uart));
    let port = Arc::new(Timed::new(Arc::clone(&model), ctx.timers.clone()));
    if let Err(e) = map_ranges(object, ctx, &[(iobase, PORT_RANGE_LEN)], port) {
        // Give the backend back so a corrected device_add can use it.
        if let (Some(id), Ok(uart)) = (chardev, Arc::try_unwrap(model)) {
            let uart = uart.into_inner().unwrap_or_else(|p| p.into_inner());
            ctx.serial_backends.insert(
                id,
                SerialBackend {
                    output: uart.into_output(),
                    rx_room,
                },
            );
        }
        return Err(e);
    }
    register_timer(object, ctx, model.clone())?;
    let handle = SerialHandle {
        model,
        timers: ctx.timers.clone(),
        rx_room,
        index,
        iobase,
        irq,
    };
    object.with_state::<SerialState, _>(|s| s.live = Some(handle))?;
    Ok(())
}

/// A live-value property of the serial state: the effective value once realized, the
/// configured one before (null when it will be derived).
fn live_property(
    def: PropertyDef,
    get: fn(&SerialState) -> Option<u64>,
    set: fn(&mut SerialState, Option<u64>) -> vmkit_object::Result<()>,
) -> PropertyDef {
    def.getter(move |object| {
        object.with_state::<SerialState, _>(|s| get(s).map_or(Value::Null, Value::from))
    })
    .setter(move |object, value| object.with_state::<SerialState, _>(|s| set(s, as_u64(value)))?)
}

fn narrow<T: TryFrom<u64>>(value: Option<u64>) -> vmkit_object::Result<Option<T>> {
    value
        .map(|v| {
            T::try_from(v).map_err(|_| vmkit_object::Error::failed(format!("{v} is out of range")))
        })
        .transpose()
}

pub(super) fn type_info() -> TypeInfo {
    TypeInfo::new(TYPE_ISA_SERIAL)
        .parent(TYPE_ISA_DEVICE)
        .description("16550A UART (COM port)")
        .state(SerialState::default)
        .property(live_property(
            PropertyDef::uint("index", 0..=3).description(
                "COM port number - 1; gives iobase/irq their COM1-COM4 defaults \
                 (default: the first COM port whose ports are free)",
            ),
            |s| s.live.as_ref().map_or(s.index, |l| l.index).map(u64::from),
            |s, v| {
                s.index = narrow(v)?;
                Ok(())
            },
        ))
        .property(live_property(
            PropertyDef::uint("iobase", 0..=0xffff)
                .description("first of the 8 I/O ports (default: from index)"),
            |s| {
                s.live
                    .as_ref()
                    .map(|l| l.iobase)
                    .or(s.iobase)
                    .map(u64::from)
            },
            |s, v| {
                s.iobase = narrow(v)?;
                Ok(())
            },
        ))
        .property(live_property(
            PropertyDef::uint("irq", 0..=15).description("ISA IRQ (default: from index, else 4)"),
            |s| s.live.as_ref().map(|l| l.irq).or(s.irq).map(u64::from),
            |s, v| {
                s.irq = narrow(v)?;
                Ok(())
            },
        ))
        .property(
            PropertyDef::string("chardev")
                .description("id of the serial backend; none: output is discarded"),
        )
        .realize(|object, ctx, parent| {
            parent.call(object, ctx)?;
            let ctx = isa_context(ctx)?;
            realize(object, ctx).map_err(hook_error)
        })
        .unrealize(|object, ctx, parent| {
            object.with_state::<SerialState, _>(|s| s.live = None)?;
            parent.call(object, ctx)
        })
        .reset(|object, parent| {
            parent.call(object);
            if let Ok(Some(live)) = object.with_state::<SerialState, _>(|s| s.live.clone()) {
                lock(&live.model).reset();
            }
        })
}
