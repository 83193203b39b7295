//! Type registration: the [`TypeInfo`] builder and the [`Registry`] of classes.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::class::{
    Class, ClassData, Context, InitFn, LifecycleFn, ParentHook, ParentReset, ResetFn, StateFactory,
};
use crate::object::{read_lock, write_lock, ObjectType, Typed};
use crate::options::ObjectOptions;
use crate::property::{PropertyDef, PropertyInfo, PropertyKind};
use crate::{Error, Object, Result};

/// The root of every non-interface type. Abstract.
pub const TYPE_OBJECT: &str = "object";
/// The root of every interface type. Abstract.
pub const TYPE_INTERFACE: &str = "interface";
/// A plain object that only holds children: the tree's root and `/machine/peripheral`.
pub const TYPE_CONTAINER: &str = "container";

type UserLifecycle =
    Arc<dyn Fn(&Object, &mut Context<'_>, &ParentHook) -> Result<()> + Send + Sync>;
type UserReset = Arc<dyn Fn(&Object, &ParentReset) + Send + Sync>;
type ClassInit = Box<dyn FnOnce(&mut ClassData) + Send>;
/// A class's properties in order and their index by name.
type PropertyTable = (Vec<Arc<PropertyDef>>, HashMap<String, usize>);

/// The description of a type to register: QEMU's `TypeInfo`, as a builder.
///
/// ```
/// use vmkit_object::{PropertyDef, Registry, TypeInfo};
///
/// let registry = Registry::new();
/// registry
///     .register(
///         TypeInfo::new("isa-debug-exit")
///             .description("writes to its port end the VM")
///             .property(PropertyDef::uint("iobase", 0..=0xffff).default(0x501))
///             .property(PropertyDef::uint("iosize", 1..=4).default(2)),
///     )
///     .unwrap();
/// let dev = registry.new_object("isa-debug-exit").unwrap();
/// assert_eq!(dev.get_u64("iobase").unwrap(), 0x501);
/// ```
pub struct TypeInfo {
    name: String,
    parent: Option<String>,
    is_abstract: bool,
    is_interface: bool,
    description: Option<String>,
    interfaces: Vec<String>,
    properties: Vec<PropertyDef>,
    default_overrides: Vec<(String, Value)>,
    state: Option<StateFactory>,
    instance_init: Option<Arc<InitFn>>,
    class_data: ClassData,
    class_init: Vec<ClassInit>,
    realize: Option<UserLifecycle>,
    unrealize: Option<UserLifecycle>,
    reset: Option<UserReset>,
}

impl fmt::Debug for TypeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeInfo")
            .field("name", &self.name)
            .field("parent", &self.parent)
            .field("abstract", &self.is_abstract)
            .field("interface", &self.is_interface)
            .field("interfaces", &self.interfaces)
            .field("properties", &self.properties)
            .finish_non_exhaustive()
    }
}

impl TypeInfo {
    /// A concrete type whose parent is [`TYPE_OBJECT`] unless [`parent`](Self::parent)
    /// says otherwise.
    pub fn new(name: impl Into<String>) -> Self {
        TypeInfo {
            name: name.into(),
            parent: None,
            is_abstract: false,
            is_interface: false,
            description: None,
            interfaces: Vec::new(),
            properties: Vec::new(),
            default_overrides: Vec::new(),
            state: None,
            instance_init: None,
            class_data: ClassData::default(),
            class_init: Vec::new(),
            realize: None,
            unrealize: None,
            reset: None,
        }
    }

    /// An interface type (always abstract; parent [`TYPE_INTERFACE`] unless another
    /// interface is given). Interfaces carry class data only: no properties, state or hooks.
    pub fn new_interface(name: impl Into<String>) -> Self {
        let mut info = Self::new(name);
        info.is_interface = true;
        info.is_abstract = true;
        info
    }

    /// The parent type.
    #[must_use]
    pub fn parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }

    /// Marks the type abstract: it can be a parent but objects cannot be created from it.
    #[must_use]
    pub fn abstract_type(mut self) -> Self {
        self.is_abstract = true;
        self
    }

    /// A description shown by `list_types`.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Declares that the type implements the interface `interface`.
    #[must_use]
    pub fn implements(mut self, interface: impl Into<String>) -> Self {
        self.interfaces.push(interface.into());
        self
    }

    /// Declares a property (inherited by every subtype).
    #[must_use]
    pub fn property(mut self, def: PropertyDef) -> Self {
        self.properties.push(def);
        self
    }

    /// Declares a child of `child_type` created with every object and placed under it as
    /// `name` (shorthand for [`PropertyDef::child`]).
    #[must_use]
    pub fn child(self, name: impl Into<String>, child_type: impl Into<String>) -> Self {
        self.property(PropertyDef::child(name, child_type))
    }

    /// Gives an inherited (or own) property a different default for this type and below.
    #[must_use]
    pub fn default_value(mut self, property: impl Into<String>, value: impl Into<Value>) -> Self {
        self.default_overrides.push((property.into(), value.into()));
        self
    }

    /// The type's own instance state: `make` runs for every new object and its result is
    /// kept as an `Arc<Mutex<T>>`, reachable with [`Object::state`] and [`Object::downcast`].
    ///
    /// Every type in the ancestry can have its own state layer (a device base type keeps
    /// its part, the concrete device its own), like C struct embedding without the casts.
    #[must_use]
    pub fn state<T, F>(mut self, make: F) -> Self
    where
        T: Any + Send,
        F: Fn() -> T + Send + Sync + 'static,
    {
        self.state = Some(Arc::new(move || {
            let layer: Arc<dyn Any + Send + Sync> = Arc::new(Mutex::new(make()));
            layer
        }));
        self
    }

    /// Runs on every new object after its state, property defaults and declared children
    /// exist; ancestors' initialisers run first. An error aborts the creation.
    #[must_use]
    pub fn instance_init(
        mut self,
        init: impl Fn(&Object) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.instance_init = Some(Arc::new(init));
        self
    }

    /// Sets class data of type `T` for this type and its subtypes (replacing the parent's).
    #[must_use]
    pub fn class_data<T: Any + Send + Sync + Clone>(mut self, value: T) -> Self {
        self.class_data.insert(value);
        self
    }

    /// Edits the class data inherited from the parent (QEMU's `class_init`). Runs once,
    /// at registration, after [`class_data`](Self::class_data) values are in place.
    #[must_use]
    pub fn class_init(mut self, init: impl FnOnce(&mut ClassData) + Send + 'static) -> Self {
        self.class_init.push(Box::new(init));
        self
    }

    /// The realize hook: validates and wires the object. It overrides the inherited hook,
    /// which it receives as a [`ParentHook`] to chain to. An error leaves the object
    /// unrealized.
    #[must_use]
    pub fn realize<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Object, &mut Context<'_>, &ParentHook) -> Result<()> + Send + Sync + 'static,
    {
        self.realize = Some(Arc::new(hook));
        self
    }

    /// The unrealize hook, overriding the inherited one (given as a [`ParentHook`]).
    #[must_use]
    pub fn unrealize<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Object, &mut Context<'_>, &ParentHook) -> Result<()> + Send + Sync + 'static,
    {
        self.unrealize = Some(Arc::new(hook));
        self
    }

    /// The reset hook, overriding the inherited one (given as a [`ParentReset`]).
    #[must_use]
    pub fn reset<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Object, &ParentReset) + Send + Sync + 'static,
    {
        self.reset = Some(Arc::new(hook));
        self
    }

    /// The type's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn effective_parent(&self) -> Option<String> {
        match (&self.parent, self.is_interface) {
            (Some(p), _) => Some(p.clone()),
            (None, false) => Some(TYPE_OBJECT.to_owned()),
            (None, true) => Some(TYPE_INTERFACE.to_owned()),
        }
    }

    /// Types this one needs registered first, with what each is needed for.
    fn dependencies(&self) -> Vec<(&'static str, String)> {
        let mut deps: Vec<(&'static str, String)> = Vec::new();
        if let Some(p) = self.effective_parent() {
            deps.push(("parent", p));
        }
        deps.extend(self.interfaces.iter().map(|i| ("interface", i.clone())));
        deps.extend(self.properties.iter().filter_map(|p| match &p.kind {
            PropertyKind::Child { child_type } => Some(("child", child_type.clone())),
            _ => None,
        }));
        deps
    }
}

/// One row of [`Registry::list_types`]: what `qom-list-types` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSummary {
    /// Type name.
    pub name: String,
    /// Parent type name.
    pub parent: Option<String>,
    /// Whether the type is abstract.
    pub is_abstract: bool,
    /// Whether the type is an interface.
    pub is_interface: bool,
    /// Description, if given.
    pub description: Option<String>,
}

impl TypeSummary {
    /// QEMU's `ObjectTypeInfo` shape: `{"name", "parent"?, "abstract"?}`.
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("name".into(), Value::String(self.name.clone()));
        if let Some(p) = &self.parent {
            map.insert("parent".into(), Value::String(p.clone()));
        }
        if self.is_abstract {
            map.insert("abstract".into(), Value::Bool(true));
        }
        Value::Object(map)
    }
}

/// The registry of types. Cheap to clone (a shared handle); safe to use from any thread.
///
/// A new registry holds the built-in types [`TYPE_OBJECT`], [`TYPE_INTERFACE`] and
/// [`TYPE_CONTAINER`].
#[derive(Clone)]
pub struct Registry {
    types: Arc<RwLock<HashMap<String, Arc<Class>>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("types", &read_lock(&self.types).len())
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// A registry holding only the built-in types.
    pub fn new() -> Self {
        let registry = Registry {
            types: Arc::new(RwLock::new(HashMap::new())),
        };
        let mut types = write_lock(&registry.types);
        for (name, is_interface) in [(TYPE_OBJECT, false), (TYPE_INTERFACE, true)] {
            let mut info = TypeInfo::new(name).abstract_type();
            info.is_interface = is_interface;
            // Roots have no parent, so they cannot fail on lookups.
            if let Ok(class) = build_class(info, None, &|_| None) {
                types.insert(name.to_owned(), Arc::new(class));
            }
        }
        let container_info = TypeInfo::new(TYPE_CONTAINER)
            .description("an object that only holds children")
            .parent(TYPE_OBJECT);
        let object_class = types.get(TYPE_OBJECT).cloned();
        if let Some(object_class) = object_class {
            if let Ok(class) = build_class(container_info, Some(object_class), &|_| None) {
                types.insert(TYPE_CONTAINER.to_owned(), Arc::new(class));
            }
        }
        drop(types);
        registry
    }

    /// Registers one type. Its parent, interfaces and child types must already be
    /// registered; the name must be new.
    pub fn register(&self, info: TypeInfo) -> Result<()> {
        self.register_all([info])
    }

    /// Registers a batch of types in any order: each may name parents, interfaces and child
    /// types from the batch. Unknown names, duplicates and cycles are errors, and nothing of
    /// the batch is registered unless all of it is.
    pub fn register_all(&self, infos: impl IntoIterator<Item = TypeInfo>) -> Result<()> {
        let mut types = write_lock(&self.types);
        let mut pending: HashMap<String, TypeInfo> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        for info in infos {
            check_type_name(&info.name)?;
            if types.contains_key(&info.name) || pending.contains_key(&info.name) {
                return Err(Error::DuplicateType(info.name));
            }
            order.push(info.name.clone());
            pending.insert(info.name.clone(), info);
        }

        let mut deps: HashMap<String, Vec<String>> = HashMap::new();
        for name in &order {
            let Some(info) = pending.get(name) else {
                continue;
            };
            let mut in_batch = Vec::new();
            for (what, dep) in info.dependencies() {
                if &dep == name {
                    return Err(Error::TypeCycle(vec![name.clone(), name.clone()]));
                }
                if pending.contains_key(&dep) {
                    in_batch.push(dep);
                } else if !types.contains_key(&dep) {
                    return Err(if what == "parent" {
                        Error::UnknownParent {
                            type_name: name.clone(),
                            parent: dep,
                        }
                    } else {
                        Error::UnknownDependency {
                            type_name: name.clone(),
                            what,
                            name: dep,
                        }
                    });
                }
            }
            deps.insert(name.clone(), in_batch);
        }

        let sorted = topological_order(&order, &deps)?;
        let mut built: HashMap<String, Arc<Class>> = HashMap::new();
        for name in sorted {
            let Some(info) = pending.remove(&name) else {
                continue;
            };
            let lookup = |n: &str| built.get(n).or_else(|| types.get(n)).cloned();
            let parent = match info.effective_parent() {
                Some(p) => Some(lookup(&p).ok_or_else(|| Error::UnknownParent {
                    type_name: name.clone(),
                    parent: p.clone(),
                })?),
                None => None,
            };
            let class = build_class(info, parent, &lookup)?;
            built.insert(name, Arc::new(class));
        }
        types.extend(built);
        Ok(())
    }

    /// Whether a type of this name is registered.
    pub fn contains(&self, type_name: &str) -> bool {
        read_lock(&self.types).contains_key(type_name)
    }

    /// The class of `type_name`.
    pub fn class(&self, type_name: &str) -> Result<Arc<Class>> {
        read_lock(&self.types)
            .get(type_name)
            .cloned()
            .ok_or_else(|| Error::UnknownType(type_name.to_owned()))
    }

    /// Creates an object of `type_name` (QEMU's `object_new`): state layers, property
    /// defaults, declared children, then instance initialisers. The object is unrealized
    /// and not in any tree.
    pub fn new_object(&self, type_name: &str) -> Result<Object> {
        let class = self.class(type_name)?;
        Object::instantiate(class, self, false)
    }

    /// Creates an object of `T::TYPE_NAME` and returns it with direct access to its `T`
    /// state.
    pub fn new_typed<T: ObjectType>(&self) -> Result<Typed<T>> {
        self.new_object(T::TYPE_NAME)?.downcast::<T>()
    }

    /// Creates an object from parsed option text and sets its properties (in the order
    /// given). `id` is not a property and is left to the caller: see
    /// [`ObjectTree::device_add`](crate::ObjectTree::device_add), which also places the
    /// object and resolves link paths.
    pub fn new_object_from_options(&self, options: &ObjectOptions) -> Result<Object> {
        let object = self.new_object(&options.type_name)?;
        for (key, value) in &options.properties {
            object.set_property_text(key, value)?;
        }
        Ok(object)
    }

    /// The registered types, sorted by name: only those that are-a `implements` (a type or
    /// an interface) if given, and abstract ones only if `include_abstract`.
    pub fn list_types(&self, implements: Option<&str>, include_abstract: bool) -> Vec<TypeSummary> {
        let types = read_lock(&self.types);
        let mut list: Vec<TypeSummary> = types
            .values()
            .filter(|c| include_abstract || !c.is_abstract)
            .filter(|c| implements.is_none_or(|i| c.is_a(i)))
            .map(|c| TypeSummary {
                name: c.name.clone(),
                parent: c.parent.clone(),
                is_abstract: c.is_abstract,
                is_interface: c.is_interface,
                description: c.description.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The properties every object of `type_name` has (`device-list-properties`),
    /// ancestors' first, without the `type` pseudo-property.
    pub fn type_properties(&self, type_name: &str) -> Result<Vec<PropertyInfo>> {
        Ok(self
            .class(type_name)?
            .properties
            .iter()
            .map(|p| p.info())
            .collect())
    }
}

fn check_type_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        "type names must not be empty"
    } else if name.contains(['/', ',', '=']) {
        "type names must not contain '/', ',' or '='"
    } else if name.chars().any(char::is_whitespace) {
        "type names must not contain whitespace"
    } else {
        return Ok(());
    };
    Err(Error::InvalidName {
        name: name.to_owned(),
        reason,
    })
}

/// Orders `names` so every type comes after its in-batch dependencies; reports a cycle.
fn topological_order(names: &[String], deps: &HashMap<String, Vec<String>>) -> Result<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit(
        name: &str,
        deps: &HashMap<String, Vec<String>>,
        marks: &mut HashMap<String, Mark>,
        path: &mut Vec<String>,
        out: &mut Vec<String>,
    ) -> Result<()> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = path.iter().position(|p| p == name).unwrap_or(0);
                let mut cycle: Vec<String> = path.get(start..).unwrap_or_default().to_vec();
                cycle.push(name.to_owned());
                return Err(Error::TypeCycle(cycle));
            }
            None => {}
        }
        marks.insert(name.to_owned(), Mark::Visiting);
        path.push(name.to_owned());
        for dep in deps.get(name).map(Vec::as_slice).unwrap_or_default() {
            visit(dep, deps, marks, path, out)?;
        }
        path.pop();
        marks.insert(name.to_owned(), Mark::Done);
        out.push(name.to_owned());
        Ok(())
    }
    let mut marks = HashMap::new();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        visit(name, deps, &mut marks, &mut Vec::new(), &mut out)?;
    }
    Ok(out)
}

/// Builds a type's class from its parent's: QEMU's `type_initialize`, done once at
/// registration.
fn build_class(
    info: TypeInfo,
    parent: Option<Arc<Class>>,
    lookup: &dyn Fn(&str) -> Option<Arc<Class>>,
) -> Result<Class> {
    let TypeInfo {
        name,
        parent: _,
        is_abstract,
        is_interface,
        description,
        interfaces: own_interfaces,
        properties: own_properties,
        default_overrides,
        state,
        instance_init,
        class_data,
        class_init,
        realize,
        unrealize,
        reset,
    } = info;
    let invalid = |reason: String| Error::InvalidTypeInfo {
        type_name: name.clone(),
        reason,
    };

    check_kind(&parent, is_interface, &invalid)?;
    if is_interface
        && (!own_properties.is_empty()
            || state.is_some()
            || instance_init.is_some()
            || realize.is_some()
            || unrealize.is_some()
            || reset.is_some())
    {
        return Err(invalid(
            "interfaces carry class data only: no properties, state, initialisers or hooks".into(),
        ));
    }

    let mut ancestors = inherited(&parent, |p| &p.ancestors);
    ancestors.push(name.clone());
    let (is_a, interfaces, mut data) = inherit_interfaces(&name, &parent, &own_interfaces, lookup)?;
    data.merge_over(class_data);
    for init in class_init {
        init(&mut data);
    }
    let (properties, property_index) = inherit_properties(
        &name,
        &parent,
        own_properties,
        default_overrides,
        lookup,
        &invalid,
    )?;

    let realize = bind_lifecycle(realize, parent.as_ref().and_then(|p| p.realize.clone()));
    let unrealize = bind_lifecycle(unrealize, parent.as_ref().and_then(|p| p.unrealize.clone()));
    let reset = bind_reset(reset, parent.as_ref().and_then(|p| p.reset.clone()));

    let mut state_factories = inherited(&parent, |p| &p.state_factories);
    state_factories.extend(state);
    let mut instance_inits = inherited(&parent, |p| &p.instance_inits);
    instance_inits.extend(instance_init);

    Ok(Class {
        parent: parent.as_ref().map(|p| p.name.clone()),
        name,
        is_abstract,
        is_interface,
        description,
        ancestors,
        interfaces,
        is_a,
        properties,
        property_index,
        data,
        realize,
        unrealize,
        reset,
        state_factories,
        instance_inits,
    })
}

/// A copy of what the parent class has in `field`, or the empty value for a root type.
fn inherited<T: Clone + Default>(parent: &Option<Arc<Class>>, field: impl Fn(&Class) -> &T) -> T {
    parent.as_deref().map(field).cloned().unwrap_or_default()
}

/// Interfaces derive only from interfaces, and classes never from one.
fn check_kind(
    parent: &Option<Arc<Class>>,
    is_interface: bool,
    invalid: &dyn Fn(String) -> Error,
) -> Result<()> {
    let Some(p) = parent else {
        return Ok(());
    };
    if is_interface && !p.is_interface {
        return Err(invalid(format!(
            "an interface's parent must be an interface, and '{}' is not one",
            p.name
        )));
    }
    if !is_interface && p.is_interface {
        return Err(invalid(format!(
            "'{}' is an interface: list it with implements(), not parent()",
            p.name
        )));
    }
    Ok(())
}

/// The type names the class answers `is_a` for, its interfaces in order, and the class data
/// merged from the parent and the interfaces (the class's own data is merged by the caller).
fn inherit_interfaces(
    name: &str,
    parent: &Option<Arc<Class>>,
    own_interfaces: &[String],
    lookup: &dyn Fn(&str) -> Option<Arc<Class>>,
) -> Result<(HashSet<String>, Vec<String>, ClassData)> {
    let mut is_a: HashSet<String> = inherited(parent, |p| &p.is_a);
    is_a.insert(name.to_string());
    let mut interfaces = inherited(parent, |p| &p.interfaces);
    let mut data = inherited(parent, |p| &p.data);
    for iface_name in own_interfaces {
        let iface = lookup(iface_name).ok_or_else(|| Error::UnknownDependency {
            type_name: name.to_string(),
            what: "interface",
            name: iface_name.clone(),
        })?;
        if !iface.is_interface {
            return Err(Error::NotAnInterface {
                type_name: name.to_string(),
                interface: iface_name.clone(),
            });
        }
        is_a.extend(iface.is_a.iter().cloned());
        for a in &iface.ancestors {
            if a != TYPE_INTERFACE && !interfaces.contains(a) {
                interfaces.push(a.clone());
            }
        }
        data.merge_missing(&iface.data);
    }
    Ok((is_a, interfaces, data))
}

/// The parent's properties followed by the class's own (each checked, no name twice, child
/// types concrete), with the class's default overrides applied.
fn inherit_properties(
    name: &str,
    parent: &Option<Arc<Class>>,
    own_properties: Vec<PropertyDef>,
    default_overrides: Vec<(String, Value)>,
    lookup: &dyn Fn(&str) -> Option<Arc<Class>>,
    invalid: &dyn Fn(String) -> Error,
) -> Result<PropertyTable> {
    let mut properties = inherited(parent, |p| &p.properties);
    let mut property_index = inherited(parent, |p| &p.property_index);
    for def in own_properties {
        def.validate(name)?;
        if property_index.contains_key(&def.name) {
            return Err(Error::DuplicateProperty {
                type_name: name.to_string(),
                property: def.name,
            });
        }
        if let PropertyKind::Child { child_type } = &def.kind {
            let child = lookup(child_type).ok_or_else(|| Error::UnknownDependency {
                type_name: name.to_string(),
                what: "child",
                name: child_type.clone(),
            })?;
            if child.is_abstract {
                return Err(invalid(format!(
                    "child '{}' has abstract type '{child_type}'",
                    def.name
                )));
            }
        }
        property_index.insert(def.name.clone(), properties.len());
        properties.push(Arc::new(def));
    }
    for (property, value) in default_overrides {
        let slot = property_index
            .get(&property)
            .and_then(|&i| properties.get_mut(i))
            .ok_or_else(|| {
                invalid(format!(
                    "cannot change the default of '{property}': no such property"
                ))
            })?;
        let mut def = PropertyDef::clone(slot);
        def.default = Some(value);
        def.validate(name)?;
        *slot = Arc::new(def);
    }
    Ok((properties, property_index))
}

/// A class's own realize/unrealize hook bound to the inherited one (which it may call
/// through its `ParentHook`), or the inherited hook when the class has none.
fn bind_lifecycle(
    own: Option<UserLifecycle>,
    inherited: Option<Arc<LifecycleFn>>,
) -> Option<Arc<LifecycleFn>> {
    let Some(hook) = own else {
        return inherited;
    };
    let parent_hook = ParentHook(inherited);
    Some(Arc::new(move |o: &Object, c: &mut Context<'_>| {
        hook(o, c, &parent_hook)
    }))
}

/// As [`bind_lifecycle`], for the reset hook.
fn bind_reset(own: Option<UserReset>, inherited: Option<Arc<ResetFn>>) -> Option<Arc<ResetFn>> {
    let Some(hook) = own else {
        return inherited;
    };
    let parent_reset = ParentReset(inherited);
    Some(Arc::new(move |o: &Object| hook(o, &parent_reset)))
}
