//! `i8259` and `i8254`: the userspace interrupt model's PIC pair and PIT.

use std::sync::{Arc, Mutex};

use vmkit_hw::Clock;
use vmkit_i8254::{Pit, PIT_BASE, PIT_IRQ, PIT_PORT_COUNT, SYSTEM_CONTROL_PORT_B};
use vmkit_i8259::{ELCR_BASE, ELCR_PORT_COUNT, PIC_MASTER_BASE, PIC_PORT_COUNT, PIC_SLAVE_BASE};
use vmkit_object::{Object, TypeInfo};

use super::{
    fixed, hook_error, isa_context, map_ranges, register_timer, InterruptModel, IsaContext,
    TYPE_I8254, TYPE_I8259, TYPE_ISA_DEVICE,
};
use crate::irq::{lock, IsaIrqLine, UserspacePic};
use crate::{Error, Result};
use vmkit_hw::timers::{Locked, Timed};

/// The PIT model as the `i8254` device builds it.
pub type IsaPit = Pit<IsaIrqLine, Arc<dyn Clock>>;

#[derive(Default)]
struct PicState {
    pic: Option<Arc<UserspacePic>>,
}

#[derive(Default)]
struct PitState {
    pit: Option<Arc<Mutex<IsaPit>>>,
}

fn realize_pic(object: &Object, ctx: &IsaContext) -> Result<()> {
    let InterruptModel::Userspace(pic) = &ctx.model else {
        return Err(Error::NeedsUserspaceModel {
            device: TYPE_I8259,
            reason: "KVM's in-kernel irqchip (KVM_CREATE_IRQCHIP) already emulates the 8259A \
                     pair at ports 0x20, 0xa0 and 0x4d0",
        });
    };
    let device = Arc::new(Locked(Arc::clone(pic.pic())));
    map_ranges(
        object,
        ctx,
        &[
            (PIC_MASTER_BASE, PIC_PORT_COUNT),
            (PIC_SLAVE_BASE, PIC_PORT_COUNT),
            (ELCR_BASE, ELCR_PORT_COUNT),
        ],
        device,
    )?;
    object.with_state::<PicState, _>(|s| s.pic = Some(Arc::clone(pic)))?;
    Ok(())
}

fn realize_pit(object: &Object, ctx: &IsaContext) -> Result<()> {
    if ctx.model.is_kernel() {
        return Err(Error::NeedsUserspaceModel {
            device: TYPE_I8254,
            reason: "with the in-kernel irqchip the VMM creates KVM's PIT (KVM_CREATE_PIT2), \
                     which owns ports 0x40-0x43 and, with KVM_PIT_SPEAKER_DUMMY, port 0x61",
        });
    }
    let irq0 = IsaIrqLine::new(Arc::clone(&ctx.irq), u32::from(PIT_IRQ))?;
    let pit = Arc::new(Mutex::new(Pit::new(irq0, Arc::clone(&ctx.clock))));
    let port = Arc::new(Timed::new(Arc::clone(&pit), ctx.timers.clone()));
    map_ranges(
        object,
        ctx,
        &[(PIT_BASE, PIT_PORT_COUNT), (SYSTEM_CONTROL_PORT_B, 1)],
        port,
    )?;
    register_timer(object, ctx, pit.clone())?;
    object.with_state::<PitState, _>(|s| s.pit = Some(pit))?;
    Ok(())
}

/// The PIT model of a realized `i8254` object (for tests, tracing and migration).
///
/// # Errors
/// [`Error::Object`] if `object` is not an `i8254`; [`Error::NotRealized`] if it is not
/// realized.
pub fn pit_handle(object: &Object) -> Result<Arc<Mutex<IsaPit>>> {
    object.cast(TYPE_I8254)?;
    object
        .with_state::<PitState, _>(|s| s.pit.clone())?
        .ok_or_else(|| Error::NotRealized(object.describe()))
}

pub(super) fn type_infos() -> Vec<TypeInfo> {
    vec![
        TypeInfo::new(TYPE_I8259)
            .parent(TYPE_ISA_DEVICE)
            .description(
                "the PC/AT 8259A pair with ELCR, in userspace (userspace interrupt model only)",
            )
            .state(PicState::default)
            .property(fixed(
                "iobase",
                u64::from(PIC_MASTER_BASE),
                "master 8259A ports",
            ))
            .property(fixed(
                "slave-iobase",
                u64::from(PIC_SLAVE_BASE),
                "slave 8259A ports",
            ))
            .property(fixed("elcr-iobase", u64::from(ELCR_BASE), "ELCR ports"))
            .realize(|object, ctx, parent| {
                parent.call(object, ctx)?;
                realize_pic(object, isa_context(ctx)?).map_err(hook_error)
            })
            .unrealize(|object, ctx, parent| {
                object.with_state::<PicState, _>(|s| s.pic = None)?;
                parent.call(object, ctx)
            })
            .reset(|object, parent| {
                parent.call(object);
                if let Ok(Some(pic)) = object.with_state::<PicState, _>(|s| s.pic.clone()) {
                    pic.reset();
                }
            }),
        TypeInfo::new(TYPE_I8254)
            .parent(TYPE_ISA_DEVICE)
            .description(
                "the 8254 PIT and port 0x61, in userspace (userspace interrupt model only)",
            )
            .state(PitState::default)
            .property(fixed(
                "iobase",
                u64::from(PIT_BASE),
                "counter and control ports",
            ))
            .property(fixed("irq", u64::from(PIT_IRQ), "ISA IRQ of counter 0"))
            .realize(|object, ctx, parent| {
                parent.call(object, ctx)?;
                realize_pit(object, isa_context(ctx)?).map_err(hook_error)
            })
            .unrealize(|object, ctx, parent| {
                object.with_state::<PitState, _>(|s| s.pit = None)?;
                parent.call(object, ctx)
            })
            .reset(|object, parent| {
                parent.call(object);
                if let Ok(Some(pit)) = object.with_state::<PitState, _>(|s| s.pit.clone()) {
                    lock(&pit).reset();
                }
            }),
    ]
}
