//! The crate's single error type.

/// Everything that can go wrong when registering types, creating objects, touching
/// properties, walking the composition tree or running the lifecycle.
///
/// Messages name the types, properties and paths involved so a user who typed a bad
/// `-device` option or a control-socket command can fix it without reading code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A type or property name is empty or contains a reserved character.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// No type of this name is registered.
    #[error("type '{0}' is not registered")]
    UnknownType(String),
    /// A type names a parent that is not registered (and not in the same batch).
    #[error("cannot register type '{type_name}': its parent '{parent}' is not registered")]
    UnknownParent {
        /// The type being registered.
        type_name: String,
        /// The missing parent.
        parent: String,
    },
    /// A type names an interface or child type that is not registered.
    #[error("cannot register type '{type_name}': {what} type '{name}' is not registered")]
    UnknownDependency {
        /// The type being registered.
        type_name: String,
        /// What the missing type was needed for ("interface", "child").
        what: &'static str,
        /// The missing type.
        name: String,
    },
    /// A type of this name is already registered.
    #[error("type '{0}' is already registered")]
    DuplicateType(String),
    /// The parent / interface / child relations of a batch of types form a cycle.
    #[error("type hierarchy cycle: {}", .0.join(" -> "))]
    TypeCycle(Vec<String>),
    /// A type lists something that is not an interface in its interfaces.
    #[error("cannot register type '{type_name}': '{interface}' is not an interface type")]
    NotAnInterface {
        /// The type being registered.
        type_name: String,
        /// The type that was listed as an interface.
        interface: String,
    },
    /// A type definition is inconsistent (bad parent kind, bad default, bad range...).
    #[error("cannot register type '{type_name}': {reason}")]
    InvalidTypeInfo {
        /// The type being registered.
        type_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A property name is declared twice along a type's ancestry.
    #[error("cannot register type '{type_name}': property '{property}' is already defined")]
    DuplicateProperty {
        /// The type being registered.
        type_name: String,
        /// The property declared twice.
        property: String,
    },
    /// An abstract type (or an interface) was asked to create an object.
    #[error("type '{0}' is abstract and cannot be instantiated")]
    AbstractType(String),
    /// A checked cast to a type the object is not.
    #[error("cannot cast object of type '{object_type}' to '{target}'")]
    InvalidCast {
        /// The object's concrete type.
        object_type: String,
        /// The requested type or interface.
        target: String,
    },
    /// The object is of the right QOM type but carries no state of the requested Rust type.
    #[error("object of type '{object_type}' has no state of Rust type {state_type}")]
    NoState {
        /// The object's concrete type.
        object_type: String,
        /// The Rust type that was asked for.
        state_type: &'static str,
    },
    /// Get or set of a property the object does not have.
    #[error("object of type '{object_type}' has no property '{property}'")]
    UnknownProperty {
        /// The object's concrete type.
        object_type: String,
        /// The unknown property.
        property: String,
    },
    /// A value of the wrong JSON type for a property.
    #[error("property '{property}' of '{object_type}' expects {expected}, got {got}")]
    WrongType {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
        /// What the property accepts.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A number outside the property's declared range.
    #[error("property '{property}' of '{object_type}': {value} is out of range {min}..={max}")]
    OutOfRange {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
        /// The rejected value.
        value: String,
        /// Smallest accepted value.
        min: String,
        /// Largest accepted value.
        max: String,
    },
    /// A string that is not one of an enum property's values.
    #[error("property '{property}' of '{object_type}': {value:?} is not one of: {allowed}")]
    InvalidEnum {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
        /// The rejected value.
        value: String,
        /// The accepted values, comma separated.
        allowed: String,
    },
    /// Option text that cannot be parsed as the property's type.
    #[error("property '{property}' of '{object_type}': {value:?} is not {expected}")]
    InvalidValue {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
        /// The rejected text.
        value: String,
        /// What the property accepts.
        expected: String,
    },
    /// A set of a read-only property (including `type` and child properties).
    #[error("property '{property}' of '{object_type}' is read-only")]
    ReadOnly {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
    },
    /// A set of a property after realize that is not marked settable at run time.
    #[error(
        "property '{property}' of '{object_type}' cannot be changed once the object is realized"
    )]
    SetAfterRealize {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
    },
    /// A typed read of a property that has no value yet.
    #[error("property '{property}' of '{object_type}' is not set")]
    Unset {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
    },
    /// A link property given a target that does not exist or has the wrong type.
    #[error("link property '{property}' of '{object_type}': {reason}")]
    BadLink {
        /// The object's concrete type.
        object_type: String,
        /// The property.
        property: String,
        /// What is wrong with the target.
        reason: String,
    },
    /// No object at this path.
    #[error("no object at path '{0}'")]
    PathNotFound(String),
    /// A partial path matches more than one object.
    #[error("path '{0}' is ambiguous: it matches more than one object")]
    AmbiguousPath(String),
    /// A path that cannot be resolved for a structural reason.
    #[error("invalid path '{path}': {reason}")]
    InvalidPath {
        /// The path.
        path: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A child name already used by a child or property of the parent.
    #[error("{parent} already has a child or property named '{name}'")]
    DuplicateChild {
        /// The parent, described.
        parent: String,
        /// The clashing name.
        name: String,
    },
    /// An object that already has a parent (or is a root) was added as a child.
    #[error("{object} already has a place in a composition tree")]
    AlreadyAttached {
        /// The object, described.
        object: String,
    },
    /// Adding the child would make the composition tree a cycle.
    #[error("cannot add {child} under {parent}: it is the parent itself or one of its ancestors")]
    TreeCycle {
        /// The would-be parent, described.
        parent: String,
        /// The would-be child, described.
        child: String,
    },
    /// Realize of an object that is already realized.
    #[error("{0} is already realized")]
    AlreadyRealized(String),
    /// Unrealize of an object that is not realized.
    #[error("{0} is not realized")]
    NotRealized(String),
    /// Realize or unrealize while another caller is realizing or unrealizing the object.
    #[error("{0} is being realized or unrealized by another caller")]
    Busy(String),
    /// A required property has no value at realize time.
    #[error("required property '{property}' of '{object_type}' is not set")]
    MissingProperty {
        /// The object's concrete type.
        object_type: String,
        /// The missing property.
        property: String,
    },
    /// Realize failed; the object stays unrealized.
    #[error("realize of {object} failed: {source}")]
    RealizeFailed {
        /// The object, described.
        object: String,
        /// The reason (from validation or the class realize hook).
        #[source]
        source: Box<Error>,
    },
    /// Unrealize failed; the object stays realized.
    #[error("unrealize of {object} failed: {source}")]
    UnrealizeFailed {
        /// The object, described.
        object: String,
        /// The reason (from the class unrealize hook).
        #[source]
        source: Box<Error>,
    },
    /// A lifecycle hook asked its context for a value of a type it does not hold.
    #[error("the realize context does not hold a value of type {0}")]
    MissingContext(&'static str),
    /// Option text (`type,key=value,...`) that is not well formed.
    #[error("invalid option text {text:?}: {reason}")]
    OptionSyntax {
        /// The whole option text.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A device-specific failure reported by a hook or accessor.
    #[error("{0}")]
    Failed(String),
    /// Saving or restoring the state of the object at `path` failed.
    #[error("device state of '{path}': {reason}")]
    VmState {
        /// The object's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// A device-specific failure, for hooks and property accessors to return.
    pub fn failed(message: impl Into<String>) -> Self {
        Error::Failed(message.into())
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
