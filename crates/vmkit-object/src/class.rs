//! Classes: the per-type data every object of a type shares, and the lifecycle hooks.

use std::any::{type_name, Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use crate::property::{PropertyDef, PropertyKind};
use crate::{Error, Object, Result};

/// A realize or unrealize hook as stored in a class (the parent call already bound).
pub type LifecycleFn = dyn Fn(&Object, &mut Context<'_>) -> Result<()> + Send + Sync;

/// A reset hook as stored in a class (the parent call already bound).
pub type ResetFn = dyn Fn(&Object) + Send + Sync;

/// An instance initialiser: runs on every new object, ancestors' first.
pub type InitFn = dyn Fn(&Object) -> Result<()> + Send + Sync;

/// Creates one state layer of a new object (an `Arc<Mutex<T>>` behind `dyn Any`).
pub(crate) type StateFactory = Arc<dyn Fn() -> Arc<dyn Any + Send + Sync> + Send + Sync>;

/// The inherited realize or unrealize implementation, handed to an overriding hook so it
/// can chain up (QEMU's `parent_realize`). Calling it when no ancestor has a hook is a no-op.
pub struct ParentHook(pub(crate) Option<Arc<LifecycleFn>>);

impl ParentHook {
    /// Runs the inherited hook.
    pub fn call(&self, object: &Object, context: &mut Context<'_>) -> Result<()> {
        match &self.0 {
            Some(hook) => hook(object, context),
            None => Ok(()),
        }
    }

    /// Whether an ancestor has a hook to chain to.
    pub fn exists(&self) -> bool {
        self.0.is_some()
    }
}

/// The inherited reset implementation, handed to an overriding reset hook.
pub struct ParentReset(pub(crate) Option<Arc<ResetFn>>);

impl ParentReset {
    /// Runs the inherited hook.
    pub fn call(&self, object: &Object) {
        if let Some(hook) = &self.0 {
            hook(object);
        }
    }
}

/// What the caller of realize / unrealize hands to the class hooks: typically the machine
/// being built (buses, interrupt controller, memory) so a device can wire itself.
///
/// ```
/// use vmkit_object::Context;
/// struct Wiring { ports: Vec<u16> }
/// let mut wiring = Wiring { ports: vec![] };
/// let mut ctx = Context::new(&mut wiring);
/// ctx.get::<Wiring>().unwrap().ports.push(0x3f8);
/// assert!(ctx.get::<u32>().is_err());
/// assert_eq!(wiring.ports, [0x3f8]);
/// ```
pub struct Context<'a> {
    user: Option<&'a mut dyn Any>,
}

impl<'a> Context<'a> {
    /// A context holding nothing.
    pub fn none() -> Self {
        Context { user: None }
    }

    /// A context holding `user`.
    pub fn new<T: Any>(user: &'a mut T) -> Self {
        Context { user: Some(user) }
    }

    /// The held value if it is a `T`, else [`Error::MissingContext`].
    pub fn get<T: Any>(&mut self) -> Result<&mut T> {
        self.try_get::<T>()
            .ok_or(Error::MissingContext(type_name::<T>()))
    }

    /// The held value if it is a `T`.
    pub fn try_get<T: Any>(&mut self) -> Option<&mut T> {
        self.user.as_deref_mut().and_then(|u| u.downcast_mut::<T>())
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("holds_value", &self.user.is_some())
            .finish()
    }
}

trait ClassValue: Any + Send + Sync {
    fn clone_value(&self) -> Box<dyn ClassValue>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Send + Sync + Clone> ClassValue for T {
    fn clone_value(&self) -> Box<dyn ClassValue> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Typed per-class data: at most one value per Rust type, inherited by copy.
///
/// This is where a type keeps class-level behaviour beyond realize / unrealize / reset:
/// e.g. a `DeviceClass { user_creatable: bool, on_hotplug: Arc<dyn Fn..> }`. A subtype
/// starts with a copy of its parent's data and may replace or edit values in its
/// [`TypeInfo::class_init`](crate::TypeInfo::class_init); keeping the old closure before
/// replacing it gives the subtype its "parent" implementation to call.
#[derive(Default)]
pub struct ClassData {
    values: HashMap<TypeId, Box<dyn ClassValue>>,
}

impl Clone for ClassData {
    fn clone(&self) -> Self {
        ClassData {
            values: self
                .values
                .iter()
                .map(|(k, v)| (*k, (**v).clone_value()))
                .collect(),
        }
    }
}

impl fmt::Debug for ClassData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassData")
            .field("values", &self.values.len())
            .finish()
    }
}

impl ClassData {
    /// Stores `value`, replacing any value of the same Rust type.
    pub fn insert<T: Any + Send + Sync + Clone>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Box::new(value));
    }

    /// The value of type `T`, if present.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| (**v).as_any().downcast_ref::<T>())
    }

    /// The value of type `T` for editing, if present.
    pub fn get_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.values
            .get_mut(&TypeId::of::<T>())
            .and_then(|v| (**v).as_any_mut().downcast_mut::<T>())
    }

    /// Whether a value of type `T` is present.
    pub fn contains<T: Any>(&self) -> bool {
        self.values.contains_key(&TypeId::of::<T>())
    }

    /// Copies in every value whose Rust type is not present yet (interface defaults).
    pub(crate) fn merge_missing(&mut self, other: &ClassData) {
        for (k, v) in &other.values {
            self.values.entry(*k).or_insert_with(|| (**v).clone_value());
        }
    }

    /// Copies in every value of `other`, replacing existing ones.
    pub(crate) fn merge_over(&mut self, other: ClassData) {
        self.values.extend(other.values);
    }
}

/// The class of a registered type: its place in the hierarchy, its properties (own and
/// inherited), class data and lifecycle hooks. Shared by every object of the type.
pub struct Class {
    pub(crate) name: String,
    pub(crate) parent: Option<String>,
    pub(crate) is_abstract: bool,
    pub(crate) is_interface: bool,
    pub(crate) description: Option<String>,
    pub(crate) ancestors: Vec<String>,
    pub(crate) interfaces: Vec<String>,
    pub(crate) is_a: HashSet<String>,
    pub(crate) properties: Vec<Arc<PropertyDef>>,
    pub(crate) property_index: HashMap<String, usize>,
    pub(crate) data: ClassData,
    pub(crate) realize: Option<Arc<LifecycleFn>>,
    pub(crate) unrealize: Option<Arc<LifecycleFn>>,
    pub(crate) reset: Option<Arc<ResetFn>>,
    pub(crate) state_factories: Vec<StateFactory>,
    pub(crate) instance_inits: Vec<Arc<InitFn>>,
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Class")
            .field("name", &self.name)
            .field("parent", &self.parent)
            .field("abstract", &self.is_abstract)
            .field("interface", &self.is_interface)
            .field("interfaces", &self.interfaces)
            .field("properties", &self.properties.len())
            .finish()
    }
}

impl Class {
    /// The type name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The parent type's name (`None` only for the roots `object` and `interface`).
    pub fn parent(&self) -> Option<&str> {
        self.parent.as_deref()
    }

    /// Whether objects of exactly this type cannot be created.
    pub fn is_abstract(&self) -> bool {
        self.is_abstract
    }

    /// Whether this is an interface type.
    pub fn is_interface(&self) -> bool {
        self.is_interface
    }

    /// The description given at registration.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The type names from the root of the hierarchy down to this type.
    pub fn ancestors(&self) -> &[String] {
        &self.ancestors
    }

    /// Every interface this type implements, its own and inherited.
    pub fn interfaces(&self) -> &[String] {
        &self.interfaces
    }

    /// Whether this type is `type_name`, descends from it, or implements it as an interface.
    pub fn is_a(&self, type_name: &str) -> bool {
        self.is_a.contains(type_name)
    }

    /// Every property definition, ancestors' first.
    pub fn properties(&self) -> &[Arc<PropertyDef>] {
        &self.properties
    }

    /// The definition of `name`, if the type has it.
    pub fn property(&self, name: &str) -> Option<&Arc<PropertyDef>> {
        self.property_index
            .get(name)
            .and_then(|&i| self.properties.get(i))
    }

    /// The class data of Rust type `T`, if any ancestor, interface or the type set it.
    pub fn data<T: Any>(&self) -> Option<&T> {
        self.data.get::<T>()
    }

    /// Whether the class (or an ancestor) has a realize hook.
    pub fn has_realize(&self) -> bool {
        self.realize.is_some()
    }

    pub(crate) fn child_properties(&self) -> impl Iterator<Item = (&str, &str)> {
        self.properties.iter().filter_map(|p| match &p.kind {
            PropertyKind::Child { child_type } => Some((p.name.as_str(), child_type.as_str())),
            _ => None,
        })
    }
}
