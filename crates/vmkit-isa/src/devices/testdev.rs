//! `pc-testdev`: QEMU's x86 test device (kvm-unit-tests), on the PIO bus and, when the
//! context has one, the MMIO bus.

use std::sync::{Arc, Mutex};

use vm_device::bus::{MmioAddress, MmioAddressOffset};
use vm_device::{DeviceMmio, MutDeviceMmio};
use vmkit_bus::{MmioBus, MmioRange};
use vmkit_object::{Object, TypeInfo};
use vmkit_pcglue::testdev::{
    PcTestdev, TESTDEV_IOMEM_BASE, TESTDEV_IOMEM_LEN, TESTDEV_IOPORT, TESTDEV_IRQ_BASE,
    TESTDEV_IRQ_PORTS, TESTDEV_LOW_PORTS_LEN,
};

use super::{hook_error, isa_context, map_ranges, range_name, IsaContext, TYPE_ISA_DEVICE};
use crate::irq::{lock, IrqRouter};
use crate::Result;
use vmkit_hw::timers::Locked;

/// QEMU's `pc-testdev`.
pub const TYPE_PC_TESTDEV: &str = "pc-testdev";

/// The model as the `pc-testdev` device builds it: its IRQ lines drive the ISA router.
pub type IsaTestdev = PcTestdev<RouterIrq>;

/// The IRQ-line ports' output: ISA IRQs of the machine's router.
pub struct RouterIrq(Arc<dyn IrqRouter>);

impl vmkit_pcglue::TestdevIrq for RouterIrq {
    fn set_irq(&mut self, irq: u32, high: bool) {
        self.0.set_irq(irq, high);
    }
}

/// MMIO access to the window under the model's lock (a poisoned lock is recovered).
struct LockedMmio(Arc<Mutex<IsaTestdev>>);

impl DeviceMmio for LockedMmio {
    fn mmio_read(&self, base: MmioAddress, offset: MmioAddressOffset, data: &mut [u8]) {
        lock(&self.0).mmio_read(base, offset, data);
    }

    fn mmio_write(&self, base: MmioAddress, offset: MmioAddressOffset, data: &[u8]) {
        lock(&self.0).mmio_write(base, offset, data);
    }
}

#[derive(Default)]
struct TestdevState {
    model: Option<Arc<Mutex<IsaTestdev>>>,
    window: Option<(Arc<str>, MmioBus)>,
}

fn realize(object: &Object, ctx: &IsaContext) -> Result<()> {
    let model = Arc::new(Mutex::new(PcTestdev::new(RouterIrq(Arc::clone(&ctx.irq)))));
    let mut window = None;
    if let Some(mmio) = &ctx.mmio {
        let name = range_name(object);
        mmio.insert(
            MmioRange::new(TESTDEV_IOMEM_BASE, TESTDEV_IOMEM_LEN)?,
            Arc::clone(&name),
            Arc::new(LockedMmio(Arc::clone(&model))),
        )?;
        window = Some((name, mmio.clone()));
    }
    let mapped = map_ranges(
        object,
        ctx,
        &[
            (TESTDEV_IOPORT, TESTDEV_LOW_PORTS_LEN),
            (TESTDEV_IRQ_BASE, TESTDEV_IRQ_PORTS),
        ],
        Arc::new(Locked(Arc::clone(&model))),
    );
    if let Err(e) = mapped {
        if let Some((name, mmio)) = &window {
            mmio.remove_named(name);
        }
        return Err(e);
    }
    object.with_state::<TestdevState, _>(|s| {
        s.model = Some(model);
        s.window = window;
    })?;
    Ok(())
}

pub(super) fn type_info() -> TypeInfo {
    TypeInfo::new(TYPE_PC_TESTDEV)
        .parent(TYPE_ISA_DEVICE)
        .description(
            "QEMU's x86 test device (kvm-unit-tests): scratch ports 0xe0-0xeb, IRQ lines \
             0x2000-0x2017, 64 KiB memory at 0xff000000",
        )
        .state(TestdevState::default)
        .realize(|object, ctx, parent| {
            parent.call(object, ctx)?;
            realize(object, isa_context(ctx)?).map_err(hook_error)
        })
        .unrealize(|object, ctx, parent| {
            let window = object.with_state::<TestdevState, _>(|s| {
                s.model = None;
                s.window.take()
            })?;
            if let Some((name, mmio)) = window {
                mmio.remove_named(&name);
            }
            parent.call(object, ctx)
        })
        .reset(|object, parent| {
            parent.call(object);
            if let Ok(Some(model)) = object.with_state::<TestdevState, _>(|s| s.model.clone()) {
                lock(&model).reset();
            }
        })
}
