//! Objects: instances of registered types, their properties, tree links and lifecycle.

use std::any::{type_name, Any};
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::AtomicU8;
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};

use serde_json::Value;

use crate::class::{Class, Context};
use crate::property::{check_name, PropertyDef, PropertyInfo, PropertyKind};
use crate::{Error, Registry, Result};

mod composition;
mod lifecycle;
mod properties;

// Locks are never held across user code that could panic halfway through an update, so a
// poisoned lock still guards consistent data: recover it instead of propagating the panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Where an object is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Created (or unrealized again): properties may be set.
    Unrealized,
    /// The realize hook is running.
    Realizing,
    /// Realized: only run-time-settable properties may be set.
    Realized,
    /// The unrealize hook is running.
    Unrealizing,
}

impl Lifecycle {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Lifecycle::Unrealized,
            1 => Lifecycle::Realizing,
            2 => Lifecycle::Realized,
            _ => Lifecycle::Unrealizing,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            Lifecycle::Unrealized => 0,
            Lifecycle::Realizing => 1,
            Lifecycle::Realized => 2,
            Lifecycle::Unrealizing => 3,
        }
    }
}

#[derive(Clone)]
enum Slot {
    Value(Value),
    Link(Option<Weak<ObjectInner>>),
    /// Child properties and getter-backed properties store nothing.
    Derived,
}

struct Place {
    parent: Weak<ObjectInner>,
    name: String,
}

struct ObjectInner {
    class: Arc<Class>,
    states: Vec<Arc<dyn Any + Send + Sync>>,
    values: RwLock<Vec<Slot>>,
    lifecycle: AtomicU8,
    /// Serialises property sets against lifecycle transitions.
    gate: Mutex<()>,
    place: Mutex<Option<Place>>,
    children: Mutex<Vec<(String, Object)>>,
    is_root: bool,
}

/// A handle to an object: cheap to clone, `Send + Sync`, compared by identity.
///
/// The object lives while any handle (or its parent in the composition tree) holds it;
/// link properties do not keep their targets alive.
#[derive(Clone)]
pub struct Object(Arc<ObjectInner>);

/// A handle that does not keep the object alive.
#[derive(Clone, Debug)]
pub struct WeakObject(Weak<ObjectInner>);

impl WeakObject {
    /// The object, if it still exists.
    pub fn upgrade(&self) -> Option<Object> {
        self.0.upgrade().map(Object)
    }
}

impl PartialEq for Object {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Object {}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("type", &self.type_name())
            .field("path", &self.path())
            .field("lifecycle", &self.lifecycle())
            .finish()
    }
}

/// A Rust state type that belongs to a registered QOM type, for typed creation and casts.
///
/// ```
/// use vmkit_object::{ObjectType, Registry, TypeInfo};
///
/// #[derive(Default)]
/// struct Counter { hits: u32 }
/// impl ObjectType for Counter { const TYPE_NAME: &'static str = "counter"; }
///
/// let registry = Registry::new();
/// registry.register(TypeInfo::new("counter").state(Counter::default)).unwrap();
/// let counter = registry.new_typed::<Counter>().unwrap();
/// counter.lock().hits += 1;
/// assert_eq!(counter.lock().hits, 1);
/// ```
pub trait ObjectType: Any + Send {
    /// The registered type whose [`TypeInfo::state`](crate::TypeInfo::state) makes `Self`.
    const TYPE_NAME: &'static str;
}

/// An object known to be-a `T::TYPE_NAME`, with direct access to its `T` state.
///
/// Dereferences to [`Object`]. The state handle can be cloned out and given to whatever
/// runs the device (a bus, a vCPU exit handler) without going through the object again.
pub struct Typed<T> {
    object: Object,
    state: Arc<Mutex<T>>,
}

impl<T> Clone for Typed<T> {
    fn clone(&self) -> Self {
        Typed {
            object: self.object.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

impl<T> fmt::Debug for Typed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Typed")
            .field("state", &type_name::<T>())
            .field("object", &self.object)
            .finish()
    }
}

impl<T> Deref for Typed<T> {
    type Target = Object;
    fn deref(&self) -> &Object {
        &self.object
    }
}

impl<T: ObjectType> Typed<T> {
    /// The untyped object.
    pub fn object(&self) -> &Object {
        &self.object
    }

    /// The state, shared.
    pub fn state(&self) -> &Arc<Mutex<T>> {
        &self.state
    }

    /// Locks the state.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        lock(&self.state)
    }

    /// Drops the typed view.
    pub fn into_object(self) -> Object {
        self.object
    }
}

impl Object {
    pub(crate) fn instantiate(
        class: Arc<Class>,
        registry: &Registry,
        is_root: bool,
    ) -> Result<Self> {
        if class.is_abstract {
            return Err(Error::AbstractType(class.name.clone()));
        }
        let states = class.state_factories.iter().map(|make| make()).collect();
        let values = class
            .properties
            .iter()
            .map(|p| match p.kind {
                PropertyKind::Link { .. } => Slot::Link(None),
                _ if p.is_stored() => Slot::Value(p.default.clone().unwrap_or(Value::Null)),
                _ => Slot::Derived,
            })
            .collect();
        let object = Object(Arc::new(ObjectInner {
            class: Arc::clone(&class),
            states,
            values: RwLock::new(values),
            lifecycle: AtomicU8::new(Lifecycle::Unrealized.as_u8()),
            gate: Mutex::new(()),
            place: Mutex::new(None),
            children: Mutex::new(Vec::new()),
            is_root,
        }));
        for (name, child_type) in class.child_properties() {
            let child = registry.new_object(child_type)?;
            object.attach(name, &child, true)?;
        }
        for init in &class.instance_inits {
            init(&object)?;
        }
        Ok(object)
    }

    // ---- identity and casts -------------------------------------------------------------

    /// The object's concrete type name.
    pub fn type_name(&self) -> &str {
        &self.0.class.name
    }

    /// The object's class.
    pub fn class(&self) -> &Arc<Class> {
        &self.0.class
    }

    /// Whether the object is-a `type_name`: its type, an ancestor, or an implemented
    /// interface.
    pub fn is_a(&self, type_name: &str) -> bool {
        self.0.class.is_a(type_name)
    }

    /// A checked cast by type name (QEMU's `OBJECT_CHECK`): `self` if it is-a `target`,
    /// else an error naming both types.
    pub fn cast(&self, target: &str) -> Result<&Object> {
        if self.is_a(target) {
            Ok(self)
        } else {
            Err(Error::InvalidCast {
                object_type: self.type_name().to_owned(),
                target: target.to_owned(),
            })
        }
    }

    /// A checked cast to `T`'s type that also gives typed access to the `T` state.
    pub fn downcast<T: ObjectType>(&self) -> Result<Typed<T>> {
        self.cast(T::TYPE_NAME)?;
        Ok(Typed {
            object: self.clone(),
            state: self.state::<T>()?,
        })
    }

    /// The state layer of Rust type `T` (from some [`TypeInfo::state`](crate::TypeInfo::state)
    /// in the object's ancestry; the most derived one if several have the same type).
    pub fn state<T: Any + Send>(&self) -> Result<Arc<Mutex<T>>> {
        self.0
            .states
            .iter()
            .rev()
            .find_map(|layer| Arc::clone(layer).downcast::<Mutex<T>>().ok())
            .ok_or_else(|| Error::NoState {
                object_type: self.type_name().to_owned(),
                state_type: type_name::<T>(),
            })
    }

    /// Runs `f` on the locked `T` state.
    pub fn with_state<T: Any + Send, R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let state = self.state::<T>()?;
        let mut guard = lock(&state);
        Ok(f(&mut guard))
    }

    /// A handle that does not keep the object alive.
    pub fn downgrade(&self) -> WeakObject {
        WeakObject(Arc::downgrade(&self.0))
    }

    /// "'type' object at /path" (or "(not in a tree)"), for messages.
    pub fn describe(&self) -> String {
        match self.path() {
            Some(path) => format!("'{}' object at {path}", self.type_name()),
            None => format!("'{}' object (not in a tree)", self.type_name()),
        }
    }
}

fn path_value(object: &Object) -> Value {
    object.path().map_or(Value::Null, Value::String)
}
