//! Objects: instances of registered types, their properties, tree links and lifecycle.

use std::any::{type_name, Any};
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
};

use serde_json::Value;

use crate::class::{Class, Context};
use crate::property::{check_name, PropertyDef, PropertyInfo, PropertyKind};
use crate::{Error, Registry, Result};

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

    // ---- properties ---------------------------------------------------------------------

    fn def(&self, name: &str) -> Option<(usize, &Arc<PropertyDef>)> {
        let class = &self.0.class;
        let index = *class.property_index.get(name)?;
        class.properties.get(index).map(|d| (index, d))
    }

    fn unknown(&self, property: &str) -> Error {
        Error::UnknownProperty {
            object_type: self.type_name().to_owned(),
            property: property.to_owned(),
        }
    }

    fn read_only(&self, property: &str) -> Error {
        Error::ReadOnly {
            object_type: self.type_name().to_owned(),
            property: property.to_owned(),
        }
    }

    /// Reads a property as JSON (`qom-get`). `type` is the type name; links and children
    /// read as the target's canonical path (`null` when unset, gone or not in a tree);
    /// getter-backed properties read the live value.
    pub fn get_property(&self, name: &str) -> Result<Value> {
        if name == "type" {
            return Ok(Value::String(self.type_name().to_owned()));
        }
        if let Some((index, def)) = self.def(name) {
            if let Some(getter) = &def.getter {
                return getter(self);
            }
            if let PropertyKind::Child { .. } = def.kind {
                return Ok(self.child(name).map_or(Value::Null, |c| path_value(&c)));
            }
            let values = read_lock(&self.0.values);
            return Ok(match values.get(index) {
                Some(Slot::Value(v)) => v.clone(),
                Some(Slot::Link(Some(weak))) => weak
                    .upgrade()
                    .map_or(Value::Null, |t| path_value(&Object(t))),
                _ => Value::Null,
            });
        }
        match self.child(name) {
            Some(child) => Ok(path_value(&child)),
            None => Err(self.unknown(name)),
        }
    }

    /// Sets a property from JSON (`qom-set`), checking in order: the property exists, is
    /// writable, the value has the right type and range (links: the path resolves to an
    /// object of the right type), and the object is unrealized unless the property is
    /// run-time settable.
    pub fn set_property(&self, name: &str, value: Value) -> Result<()> {
        let (index, def) = self.writable_def(name)?;
        def.check_value(self.type_name(), &value)?;
        let link = match def.kind {
            PropertyKind::Link { .. } => Some(self.resolve_link_value(def, &value)?),
            _ => None,
        };
        self.apply(index, def, value, link, true)
    }

    /// Sets a property from option text (`0x2f8`, `on`, `com2`), parsed by the property's
    /// type (see [`PropertyDef::parse_text`]), then as [`set_property`](Self::set_property).
    pub fn set_property_text(&self, name: &str, text: &str) -> Result<()> {
        let (_, def) = self.writable_def(name)?;
        let value = def.parse_text(self.type_name(), text)?;
        self.set_property(name, value)
    }

    /// Changes a stored property from the device's side: the type and range are checked,
    /// but read-only and realize state are not. For values the device computes (a status,
    /// a negotiated setting) that users may read but not write. A setter, if the property
    /// has one, runs as for any set.
    pub fn update_property(&self, name: &str, value: Value) -> Result<()> {
        let (index, def) = self.def(name).ok_or_else(|| self.unknown(name))?;
        if !def.is_stored() {
            return Err(self.read_only(name));
        }
        def.check_value(self.type_name(), &value)?;
        let link = match def.kind {
            PropertyKind::Link { .. } => Some(self.resolve_link_value(def, &value)?),
            _ => None,
        };
        self.apply(index, def, value, link, false)
    }

    /// Points a link property at `target` (or clears it), without going through a path:
    /// works for objects not in a tree.
    pub fn set_link(&self, name: &str, target: Option<&Object>) -> Result<()> {
        let (index, def) = self.writable_def(name)?;
        let PropertyKind::Link { target_type } = &def.kind else {
            return Err(Error::WrongType {
                object_type: self.type_name().to_owned(),
                property: name.to_owned(),
                expected: def.kind.type_name(),
                got: "an object link".into(),
            });
        };
        if let Some(t) = target {
            if !t.is_a(target_type) {
                return Err(
                    self.bad_link(name, format!("{} is not a '{target_type}'", t.describe()))
                );
            }
        }
        let weak = target.map(|t| Arc::downgrade(&t.0));
        let value = target.map_or(Value::Null, path_value);
        self.apply(index, def, value, Some(weak), true)
    }

    /// The object a link property points to, or a child property's child.
    pub fn get_link(&self, name: &str) -> Result<Option<Object>> {
        let (index, def) = self.def(name).ok_or_else(|| self.unknown(name))?;
        match def.kind {
            PropertyKind::Child { .. } => Ok(self.child(name)),
            PropertyKind::Link { .. } => Ok(match read_lock(&self.0.values).get(index) {
                Some(Slot::Link(Some(weak))) => weak.upgrade().map(Object),
                _ => None,
            }),
            _ => Err(Error::WrongType {
                object_type: self.type_name().to_owned(),
                property: name.to_owned(),
                expected: "a link or child property".into(),
                got: def.kind.type_name(),
            }),
        }
    }

    fn writable_def(&self, name: &str) -> Result<(usize, &Arc<PropertyDef>)> {
        if name == "type" {
            return Err(self.read_only(name));
        }
        match self.def(name) {
            Some((_, def)) if def.is_read_only() => Err(self.read_only(name)),
            Some(found) => Ok(found),
            None if self.child(name).is_some() => Err(self.read_only(name)),
            None => Err(self.unknown(name)),
        }
    }

    fn bad_link(&self, property: &str, reason: String) -> Error {
        Error::BadLink {
            object_type: self.type_name().to_owned(),
            property: property.to_owned(),
            reason,
        }
    }

    fn resolve_link_value(
        &self,
        def: &PropertyDef,
        value: &Value,
    ) -> Result<Option<Weak<ObjectInner>>> {
        let path = match value {
            Value::String(p) if !p.is_empty() => p,
            _ => return Ok(None),
        };
        let PropertyKind::Link { target_type } = &def.kind else {
            return Ok(None);
        };
        let root = self.root().ok_or_else(|| {
            self.bad_link(
                &def.name,
                format!("cannot resolve '{path}': this object is not in a tree yet (use set_link)"),
            )
        })?;
        let target = root
            .resolve_any(path)
            .map_err(|e| self.bad_link(&def.name, e.to_string()))?;
        if !target.is_a(target_type) {
            return Err(self.bad_link(
                &def.name,
                format!("{} is not a '{target_type}'", target.describe()),
            ));
        }
        Ok(Some(Arc::downgrade(&target.0)))
    }

    fn apply(
        &self,
        index: usize,
        def: &PropertyDef,
        value: Value,
        link: Option<Option<Weak<ObjectInner>>>,
        check_lifecycle: bool,
    ) -> Result<()> {
        // Held while applying so a concurrent realize sees the value before or after, whole.
        let gate = lock(&self.0.gate);
        if check_lifecycle && self.lifecycle() != Lifecycle::Unrealized && !def.runtime_settable {
            return Err(Error::SetAfterRealize {
                object_type: self.type_name().to_owned(),
                property: def.name.clone(),
            });
        }
        if let Some(setter) = &def.setter {
            setter(self, &value)?;
        }
        if def.is_stored() {
            let mut values = write_lock(&self.0.values);
            if let Some(slot) = values.get_mut(index) {
                *slot = match link {
                    Some(weak) => Slot::Link(weak),
                    None => Slot::Value(value),
                };
            }
        }
        drop(gate);
        Ok(())
    }

    /// Whether the property currently has a value (is not `null`).
    pub fn property_is_set(&self, name: &str) -> Result<bool> {
        Ok(!self.get_property(name)?.is_null())
    }

    fn typed_get<T>(
        &self,
        name: &str,
        expected: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T> {
        let value = self.get_property(name)?;
        if value.is_null() {
            return Err(Error::Unset {
                object_type: self.type_name().to_owned(),
                property: name.to_owned(),
            });
        }
        convert(&value).ok_or_else(|| Error::WrongType {
            object_type: self.type_name().to_owned(),
            property: name.to_owned(),
            expected: expected.to_owned(),
            got: value.to_string(),
        })
    }

    /// Reads a boolean property.
    pub fn get_bool(&self, name: &str) -> Result<bool> {
        self.typed_get(name, "a boolean", Value::as_bool)
    }

    /// Reads an unsigned integer property.
    pub fn get_u64(&self, name: &str) -> Result<u64> {
        self.typed_get(name, "an unsigned integer", Value::as_u64)
    }

    /// Reads a signed integer property.
    pub fn get_i64(&self, name: &str) -> Result<i64> {
        self.typed_get(name, "a signed integer", Value::as_i64)
    }

    /// Reads a string or enum property (or a link's / child's path).
    pub fn get_string(&self, name: &str) -> Result<String> {
        self.typed_get(name, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// Every property of the object (`qom-list`): `type`, the declared ones (ancestors'
    /// first), then children added at run time.
    pub fn list_properties(&self) -> Vec<PropertyInfo> {
        let class = &self.0.class;
        let mut list = Vec::with_capacity(class.properties.len() + 1);
        list.push(PropertyInfo {
            name: "type".into(),
            type_name: "str".into(),
            description: Some("the object's type name".into()),
            default: None,
            read_only: true,
            runtime_settable: false,
            required: false,
            enum_values: Vec::new(),
        });
        list.extend(class.properties.iter().map(|p| p.info()));
        for (name, child) in self.children() {
            if !class.property_index.contains_key(&name) {
                list.push(PropertyInfo {
                    name,
                    type_name: format!("child<{}>", child.type_name()),
                    description: None,
                    default: None,
                    read_only: true,
                    runtime_settable: false,
                    required: false,
                    enum_values: Vec::new(),
                });
            }
        }
        list
    }

    // ---- composition tree ---------------------------------------------------------------

    /// The object's name under its parent.
    pub fn name(&self) -> Option<String> {
        lock(&self.0.place).as_ref().map(|p| p.name.clone())
    }

    /// The object's parent in the composition tree.
    pub fn parent(&self) -> Option<Object> {
        lock(&self.0.place)
            .as_ref()
            .and_then(|p| p.parent.upgrade())
            .map(Object)
    }

    /// Whether this object is the root of a tree.
    pub fn is_root(&self) -> bool {
        self.0.is_root
    }

    /// The root of the tree the object is in, if it is in one.
    pub fn root(&self) -> Option<Object> {
        let mut current = self.clone();
        loop {
            if current.0.is_root {
                return Some(current);
            }
            current = current.parent()?;
        }
    }

    /// The canonical path (`/machine/peripheral/com2`), if the object is in a rooted tree.
    pub fn path(&self) -> Option<String> {
        let mut names = Vec::new();
        let mut current = self.clone();
        while !current.0.is_root {
            let (parent, name) = {
                let place = lock(&current.0.place);
                let place = place.as_ref()?;
                (place.parent.upgrade()?, place.name.clone())
            };
            names.push(name);
            current = Object(parent);
        }
        if names.is_empty() {
            return Some("/".into());
        }
        let mut path = String::new();
        for name in names.iter().rev() {
            path.push('/');
            path.push_str(name);
        }
        Some(path)
    }

    /// Adds `child` under this object as `name` and returns the name used. A name ending
    /// in `[*]` (e.g. `device[*]`) takes the first free index (`device[0]`, `device[1]`...).
    ///
    /// The parent holds the child: it lives at least as long as it stays in the tree.
    pub fn add_child(&self, name: &str, child: &Object) -> Result<String> {
        self.attach(name, child, false)
    }

    fn attach(&self, name: &str, child: &Object, declared: bool) -> Result<String> {
        check_name(name)?;
        if child.0.is_root {
            return Err(Error::AlreadyAttached {
                object: child.describe(),
            });
        }
        let mut ancestor = Some(self.clone());
        while let Some(a) = ancestor {
            if a == *child {
                return Err(Error::TreeCycle {
                    parent: self.describe(),
                    child: child.describe(),
                });
            }
            ancestor = a.parent();
        }
        let duplicate = |name: &str| Error::DuplicateChild {
            parent: self.describe(),
            name: name.to_owned(),
        };
        let mut children = lock(&self.0.children);
        let taken = |n: &str| {
            children.iter().any(|(c, _)| c == n)
                || n == "type"
                || (!declared && self.0.class.property_index.contains_key(n))
        };
        let actual = match name.strip_suffix("[*]") {
            Some(prefix) => (0u64..)
                .map(|i| format!("{prefix}[{i}]"))
                .find(|n| !taken(n))
                .ok_or_else(|| duplicate(name))?,
            None if taken(name) => {
                drop(children);
                return Err(duplicate(name));
            }
            None => name.to_owned(),
        };
        {
            let mut place = lock(&child.0.place);
            if place.is_some() {
                drop(place);
                drop(children);
                return Err(Error::AlreadyAttached {
                    object: child.describe(),
                });
            }
            *place = Some(Place {
                parent: Arc::downgrade(&self.0),
                name: actual.clone(),
            });
        }
        children.push((actual.clone(), child.clone()));
        Ok(actual)
    }

    /// The child named `name`.
    pub fn child(&self, name: &str) -> Option<Object> {
        lock(&self.0.children)
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.clone())
    }

    /// The children, in the order they were added.
    pub fn children(&self) -> Vec<(String, Object)> {
        lock(&self.0.children).clone()
    }

    /// Takes the child `name` (and its subtree) out of the tree and returns it. Nothing is
    /// unrealized: see [`ObjectTree::remove`](crate::ObjectTree::remove) for that.
    pub fn remove_child(&self, name: &str) -> Result<Object> {
        let child = {
            let mut children = lock(&self.0.children);
            let index = children.iter().position(|(n, _)| n == name);
            index.map(|i| children.remove(i).1)
        };
        let child = child.ok_or_else(|| {
            Error::PathNotFound(match self.path() {
                Some(p) if p == "/" => format!("/{name}"),
                Some(p) => format!("{p}/{name}"),
                None => name.to_owned(),
            })
        })?;
        *lock(&child.0.place) = None;
        Ok(child)
    }

    /// Takes the object out of its parent, if it has one.
    pub fn detach(&self) {
        let place = lock(&self.0.place)
            .as_ref()
            .map(|p| (p.parent.upgrade(), p.name.clone()));
        match place {
            Some((Some(parent), name)) => {
                // Only fails if someone else detached it meanwhile, which is the same outcome.
                let _ = Object(parent).remove_child(&name);
            }
            Some((None, _)) => *lock(&self.0.place) = None,
            None => {}
        }
    }

    /// Resolves `path` from this object: relative (`peripheral/com2`, `..`), or absolute
    /// (`/machine`) from this object's root.
    pub fn resolve(&self, path: &str) -> Result<Object> {
        let start = if path.starts_with('/') {
            self.root().ok_or(Error::InvalidPath {
                path: path.to_owned(),
                reason: "absolute paths need an object that is in a rooted tree",
            })?
        } else {
            self.clone()
        };
        start
            .walk(path)
            .ok_or_else(|| Error::PathNotFound(path.to_owned()))
    }

    fn walk(&self, path: &str) -> Option<Object> {
        let mut current = self.clone();
        for component in path.split('/') {
            current = match component {
                "" | "." => current,
                ".." => current.parent()?,
                name => current.child(name)?,
            };
        }
        Some(current)
    }

    /// Resolves an absolute path, or a partial one (QEMU style): a path that matches the
    /// end of exactly one object's canonical path in this object's subtree (`com2`,
    /// `peripheral/com2`).
    pub fn resolve_any(&self, path: &str) -> Result<Object> {
        if path.starts_with('/') {
            return self.resolve(path);
        }
        if path.is_empty() {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
                reason: "the path is empty",
            });
        }
        let mut found: Option<Object> = None;
        let mut stack = vec![self.clone()];
        while let Some(node) = stack.pop() {
            if let Some(hit) = node.walk_partial(path) {
                match &found {
                    Some(f) if *f != hit => return Err(Error::AmbiguousPath(path.to_owned())),
                    _ => found = Some(hit),
                }
            }
            stack.extend(node.children().into_iter().map(|(_, c)| c));
        }
        found.ok_or_else(|| Error::PathNotFound(path.to_owned()))
    }

    /// Walks a relative path of child names only from here.
    fn walk_partial(&self, path: &str) -> Option<Object> {
        let mut current = self.clone();
        for component in path.split('/').filter(|c| !c.is_empty()) {
            current = current.child(component)?;
        }
        Some(current)
    }

    // ---- lifecycle ----------------------------------------------------------------------

    /// The lifecycle state.
    pub fn lifecycle(&self) -> Lifecycle {
        Lifecycle::from_u8(self.0.lifecycle.load(Ordering::Acquire))
    }

    fn set_lifecycle(&self, state: Lifecycle) {
        let _gate = lock(&self.0.gate);
        self.0.lifecycle.store(state.as_u8(), Ordering::Release);
    }

    /// Whether the object is realized.
    pub fn is_realized(&self) -> bool {
        self.lifecycle() == Lifecycle::Realized
    }

    /// Realizes the object with an empty context.
    pub fn realize(&self) -> Result<()> {
        self.realize_with(&mut Context::none())
    }

    /// Realizes the object: checks required properties, then runs the class realize hook
    /// with `context`. On any error the object stays unrealized and the error
    /// ([`Error::RealizeFailed`]) names the object and the cause.
    ///
    /// While the hook runs, [`set_property`](Self::set_property) on this object refuses
    /// non-run-time properties; a hook that computes values uses
    /// [`update_property`](Self::update_property).
    pub fn realize_with(&self, context: &mut Context<'_>) -> Result<()> {
        self.transition(Lifecycle::Unrealized, Lifecycle::Realizing)?;
        let result = self
            .check_required()
            .and_then(|()| match &self.0.class.realize {
                Some(hook) => hook(self, context),
                None => Ok(()),
            });
        match result {
            Ok(()) => {
                self.set_lifecycle(Lifecycle::Realized);
                Ok(())
            }
            Err(source) => {
                self.set_lifecycle(Lifecycle::Unrealized);
                Err(Error::RealizeFailed {
                    object: self.describe(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Unrealizes the object with an empty context.
    pub fn unrealize(&self) -> Result<()> {
        self.unrealize_with(&mut Context::none())
    }

    /// Runs the class unrealize hook and marks the object unrealized; if the hook fails
    /// the object stays realized.
    pub fn unrealize_with(&self, context: &mut Context<'_>) -> Result<()> {
        self.transition(Lifecycle::Realized, Lifecycle::Unrealizing)?;
        let result = match &self.0.class.unrealize {
            Some(hook) => hook(self, context),
            None => Ok(()),
        };
        match result {
            Ok(()) => {
                self.set_lifecycle(Lifecycle::Unrealized);
                Ok(())
            }
            Err(source) => {
                self.set_lifecycle(Lifecycle::Realized);
                Err(Error::UnrealizeFailed {
                    object: self.describe(),
                    source: Box::new(source),
                })
            }
        }
    }

    /// Unrealizes every realized object of the subtree, children before their parent.
    pub fn unrealize_tree(&self, context: &mut Context<'_>) -> Result<()> {
        for (_, child) in self.children().iter().rev() {
            child.unrealize_tree(context)?;
        }
        if self.is_realized() {
            self.unrealize_with(context)?;
        }
        Ok(())
    }

    /// Runs the class reset hook if the object is realized (unrealized objects have
    /// nothing to reset). Returns whether the hook ran.
    pub fn reset(&self) -> bool {
        if !self.is_realized() {
            return false;
        }
        if let Some(hook) = &self.0.class.reset {
            hook(self);
        }
        true
    }

    /// Resets the object and then its subtree, parents before children.
    pub fn reset_tree(&self) {
        self.reset();
        for (_, child) in self.children() {
            child.reset_tree();
        }
    }

    fn transition(&self, from: Lifecycle, to: Lifecycle) -> Result<()> {
        let gate = lock(&self.0.gate);
        let current = self.lifecycle();
        if current == from {
            self.0.lifecycle.store(to.as_u8(), Ordering::Release);
            return Ok(());
        }
        drop(gate);
        Err(match current {
            Lifecycle::Realized => Error::AlreadyRealized(self.describe()),
            Lifecycle::Unrealized => Error::NotRealized(self.describe()),
            Lifecycle::Realizing | Lifecycle::Unrealizing => Error::Busy(self.describe()),
        })
    }

    fn check_required(&self) -> Result<()> {
        for def in self.0.class.properties.iter().filter(|d| d.required) {
            let set = match def.kind {
                PropertyKind::Link { .. } => self.get_link(&def.name)?.is_some(),
                _ => self.property_is_set(&def.name)?,
            };
            if !set {
                return Err(Error::MissingProperty {
                    object_type: self.type_name().to_owned(),
                    property: def.name.clone(),
                });
            }
        }
        Ok(())
    }
}

fn path_value(object: &Object) -> Value {
    object.path().map_or(Value::Null, Value::String)
}
