//! Property definitions: what a type declares, how values are checked and parsed.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use serde_json::Value;

use crate::{Error, Object, Result};

/// A getter closure: computes a property's live value from the object (usually its state).
pub type PropertyGetter = dyn Fn(&Object) -> Result<Value> + Send + Sync;

/// A setter closure: applies an already type- and range-checked value to the object.
pub type PropertySetter = dyn Fn(&Object, &Value) -> Result<()> + Send + Sync;

/// The type of a property and the values it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PropertyKind {
    /// `true` / `false`.
    Bool,
    /// A signed integer in `min..=max`.
    Int {
        /// Smallest accepted value.
        min: i64,
        /// Largest accepted value.
        max: i64,
    },
    /// An unsigned integer in `min..=max`.
    Uint {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// Any string.
    Str,
    /// One string out of a fixed list.
    Enum {
        /// The accepted strings.
        values: Vec<String>,
    },
    /// A (weak) reference to another object that is-a `target_type`, set by path.
    Link {
        /// The type (or interface) the target must be.
        target_type: String,
    },
    /// A child object of `child_type`, created with the object and placed under it.
    Child {
        /// The child's type.
        child_type: String,
    },
}

impl PropertyKind {
    /// The type name shown by introspection (`bool`, `uint16`, `int32`, `str`, `enum`,
    /// `link<T>`, `child<T>`), the narrowest integer type holding the declared range.
    pub fn type_name(&self) -> String {
        match self {
            PropertyKind::Bool => "bool".into(),
            PropertyKind::Int { min, max } => {
                let bits = [8u32, 16, 32]
                    .into_iter()
                    .find(|&b| *min >= -(1i64 << (b - 1)) && *max < (1i64 << (b - 1)))
                    .unwrap_or(64);
                format!("int{bits}")
            }
            PropertyKind::Uint { max, .. } => {
                let bits = [8u32, 16, 32]
                    .into_iter()
                    .find(|&b| *max < (1u64 << b))
                    .unwrap_or(64);
                format!("uint{bits}")
            }
            PropertyKind::Str => "str".into(),
            PropertyKind::Enum { .. } => "enum".into(),
            PropertyKind::Link { target_type } => format!("link<{target_type}>"),
            PropertyKind::Child { child_type } => format!("child<{child_type}>"),
        }
    }

    /// A phrase describing the accepted values, for error messages.
    fn expectation(&self) -> String {
        match self {
            PropertyKind::Bool => "a boolean".into(),
            PropertyKind::Int { min, max } => format!("an integer in {min}..={max}"),
            PropertyKind::Uint { min, max } => format!("an unsigned integer in {min}..={max}"),
            PropertyKind::Str => "a string".into(),
            PropertyKind::Enum { values } => format!("one of: {}", values.join(", ")),
            PropertyKind::Link { target_type } => {
                format!("a path to a '{target_type}' object, or null / \"\" to clear it")
            }
            PropertyKind::Child { .. } => "nothing: child properties are read-only".into(),
        }
    }
}

impl fmt::Display for PropertyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.type_name())
    }
}

/// A property declared by a type; every subtype inherits it.
///
/// Built with a constructor per kind and chained modifiers:
///
/// ```
/// use vmkit_object::PropertyDef;
/// let iobase = PropertyDef::uint("iobase", 0..=0xffff)
///     .default(0x3f8)
///     .description("I/O base port");
/// assert_eq!(iobase.kind().type_name(), "uint16");
/// ```
#[derive(Clone)]
pub struct PropertyDef {
    pub(crate) name: String,
    pub(crate) kind: PropertyKind,
    pub(crate) default: Option<Value>,
    pub(crate) description: Option<String>,
    pub(crate) read_only: bool,
    pub(crate) runtime_settable: bool,
    pub(crate) required: bool,
    pub(crate) getter: Option<Arc<PropertyGetter>>,
    pub(crate) setter: Option<Arc<PropertySetter>>,
}

impl fmt::Debug for PropertyDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PropertyDef")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("default", &self.default)
            .field("read_only", &self.is_read_only())
            .field("runtime_settable", &self.runtime_settable)
            .field("required", &self.required)
            .field("getter", &self.getter.is_some())
            .field("setter", &self.setter.is_some())
            .finish()
    }
}

impl PropertyDef {
    fn new(name: impl Into<String>, kind: PropertyKind) -> Self {
        PropertyDef {
            name: name.into(),
            kind,
            default: None,
            description: None,
            read_only: false,
            runtime_settable: false,
            required: false,
            getter: None,
            setter: None,
        }
    }

    /// A boolean property.
    pub fn bool(name: impl Into<String>) -> Self {
        Self::new(name, PropertyKind::Bool)
    }

    /// A signed integer property accepting `range`.
    pub fn int(name: impl Into<String>, range: RangeInclusive<i64>) -> Self {
        let (min, max) = range.into_inner();
        Self::new(name, PropertyKind::Int { min, max })
    }

    /// An unsigned integer property accepting `range`.
    pub fn uint(name: impl Into<String>, range: RangeInclusive<u64>) -> Self {
        let (min, max) = range.into_inner();
        Self::new(name, PropertyKind::Uint { min, max })
    }

    /// A string property.
    pub fn string(name: impl Into<String>) -> Self {
        Self::new(name, PropertyKind::Str)
    }

    /// An enum property: a string out of `values`.
    pub fn enumeration<S: AsRef<str>>(name: impl Into<String>, values: &[S]) -> Self {
        let values = values.iter().map(|v| v.as_ref().to_owned()).collect();
        Self::new(name, PropertyKind::Enum { values })
    }

    /// A link to another object that is-a `target_type` (a type or an interface).
    ///
    /// Links are weak: they never keep their target alive, and read as `null` once the
    /// target is gone. Set them with a path (absolute or partial) or [`Object::set_link`].
    pub fn link(name: impl Into<String>, target_type: impl Into<String>) -> Self {
        Self::new(
            name,
            PropertyKind::Link {
                target_type: target_type.into(),
            },
        )
    }

    /// A child of `child_type`, created together with every object of the declaring type
    /// and placed under it with the property's name. Reads return the child's path.
    pub fn child(name: impl Into<String>, child_type: impl Into<String>) -> Self {
        Self::new(
            name,
            PropertyKind::Child {
                child_type: child_type.into(),
            },
        )
    }

    /// The value the property has when an object is created.
    ///
    /// Without a default a property is unset (`null`) until someone sets it.
    #[must_use]
    pub fn default(mut self, value: impl Into<Value>) -> Self {
        self.default = Some(value.into());
        self
    }

    /// A human-readable description shown by introspection.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Rejects every set through [`Object::set_property`]; the device can still change
    /// the stored value with [`Object::update_property`].
    #[must_use]
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// Allows sets after the object is realized (all others are refused once realized).
    #[must_use]
    pub fn runtime_settable(mut self) -> Self {
        self.runtime_settable = true;
        self
    }

    /// Makes realize fail while the property is unset.
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Computes the value on every read instead of returning a stored one, so a read
    /// reflects the live device state. A property with a getter and no setter is read-only.
    #[must_use]
    pub fn getter(
        mut self,
        getter: impl Fn(&Object) -> Result<Value> + Send + Sync + 'static,
    ) -> Self {
        self.getter = Some(Arc::new(getter));
        self
    }

    /// Applies every accepted set to the object (usually its state). The value has been
    /// checked against the property's type and range first. Without a getter the value is
    /// also stored so reads return the last value set.
    ///
    /// The setter runs while the object's lifecycle is locked against realize; it must not
    /// call [`Object::set_property`] or realize on the same object.
    #[must_use]
    pub fn setter(
        mut self,
        setter: impl Fn(&Object, &Value) -> Result<()> + Send + Sync + 'static,
    ) -> Self {
        self.setter = Some(Arc::new(setter));
        self
    }

    /// The property's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The property's kind.
    pub fn kind(&self) -> &PropertyKind {
        &self.kind
    }

    /// The default value, if any.
    pub fn default_value(&self) -> Option<&Value> {
        self.default.as_ref()
    }

    /// The description, if any.
    pub fn description_text(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// Whether [`Object::set_property`] refuses this property.
    pub fn is_read_only(&self) -> bool {
        self.read_only
            || matches!(self.kind, PropertyKind::Child { .. })
            || (self.getter.is_some() && self.setter.is_none())
    }

    /// Whether the property may be set after realize.
    pub fn is_runtime_settable(&self) -> bool {
        self.runtime_settable
    }

    /// Whether realize requires the property to be set.
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Whether the object stores this property's value (no getter, not a child).
    pub(crate) fn is_stored(&self) -> bool {
        self.getter.is_none() && !matches!(self.kind, PropertyKind::Child { .. })
    }

    /// The introspection record for this property.
    pub fn info(&self) -> PropertyInfo {
        PropertyInfo {
            name: self.name.clone(),
            type_name: self.kind.type_name(),
            description: self.description.clone(),
            default: self.default.clone(),
            read_only: self.is_read_only(),
            runtime_settable: self.runtime_settable,
            required: self.required,
            enum_values: match &self.kind {
                PropertyKind::Enum { values } => values.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// Checks the definition itself at registration time.
    pub(crate) fn validate(&self, type_name: &str) -> Result<()> {
        check_name(&self.name)?;
        let invalid = |reason: String| Error::InvalidTypeInfo {
            type_name: type_name.to_owned(),
            reason,
        };
        if self.name == "type" {
            return Err(invalid(
                "property name 'type' is reserved for the object's type name".into(),
            ));
        }
        match &self.kind {
            PropertyKind::Int { min, max } if min > max => {
                return Err(invalid(format!(
                    "property '{}' has an empty range {min}..={max}",
                    self.name
                )));
            }
            PropertyKind::Uint { min, max } if min > max => {
                return Err(invalid(format!(
                    "property '{}' has an empty range {min}..={max}",
                    self.name
                )));
            }
            PropertyKind::Enum { values } => {
                if values.is_empty() {
                    return Err(invalid(format!(
                        "enum property '{}' has no values",
                        self.name
                    )));
                }
                for (i, v) in values.iter().enumerate() {
                    if values.iter().skip(i + 1).any(|w| w == v) {
                        return Err(invalid(format!(
                            "enum property '{}' lists '{v}' twice",
                            self.name
                        )));
                    }
                }
            }
            PropertyKind::Link { .. } | PropertyKind::Child { .. } if self.default.is_some() => {
                return Err(invalid(format!(
                    "{} property '{}' cannot have a default",
                    self.kind.type_name(),
                    self.name
                )));
            }
            PropertyKind::Child { .. } if self.getter.is_some() || self.setter.is_some() => {
                return Err(invalid(format!(
                    "child property '{}' cannot have a getter or setter",
                    self.name
                )));
            }
            _ => {}
        }
        if let Some(default) = &self.default {
            self.check_value(type_name, default)
                .map_err(|e| invalid(format!("bad default: {e}")))?;
        }
        Ok(())
    }

    /// Checks that `value` has the right JSON type and lies in range. Link values are only
    /// checked to be a path string or null; resolving the path is the object's job.
    pub fn check_value(&self, object_type: &str, value: &Value) -> Result<()> {
        let wrong_type = || Error::WrongType {
            object_type: object_type.to_owned(),
            property: self.name.clone(),
            expected: self.kind.expectation(),
            got: describe_json(value),
        };
        let out_of_range = |value: String, min: String, max: String| Error::OutOfRange {
            object_type: object_type.to_owned(),
            property: self.name.clone(),
            value,
            min,
            max,
        };
        match (&self.kind, value) {
            (PropertyKind::Bool, Value::Bool(_)) => Ok(()),
            (PropertyKind::Int { min, max }, Value::Number(n)) => {
                if let Some(v) = n.as_i64() {
                    if (*min..=*max).contains(&v) {
                        return Ok(());
                    }
                    Err(out_of_range(
                        v.to_string(),
                        min.to_string(),
                        max.to_string(),
                    ))
                } else if let Some(v) = n.as_u64() {
                    Err(out_of_range(
                        v.to_string(),
                        min.to_string(),
                        max.to_string(),
                    ))
                } else {
                    Err(wrong_type())
                }
            }
            (PropertyKind::Uint { min, max }, Value::Number(n)) => {
                if let Some(v) = n.as_u64() {
                    if (*min..=*max).contains(&v) {
                        return Ok(());
                    }
                    Err(out_of_range(
                        v.to_string(),
                        min.to_string(),
                        max.to_string(),
                    ))
                } else if let Some(v) = n.as_i64() {
                    Err(out_of_range(
                        v.to_string(),
                        min.to_string(),
                        max.to_string(),
                    ))
                } else {
                    Err(wrong_type())
                }
            }
            (PropertyKind::Str, Value::String(_)) => Ok(()),
            (PropertyKind::Enum { values }, Value::String(s)) => {
                if values.iter().any(|v| v == s) {
                    Ok(())
                } else {
                    Err(Error::InvalidEnum {
                        object_type: object_type.to_owned(),
                        property: self.name.clone(),
                        value: s.clone(),
                        allowed: values.join(", "),
                    })
                }
            }
            (PropertyKind::Link { .. }, Value::String(_) | Value::Null) => Ok(()),
            (PropertyKind::Child { .. }, _) => Err(Error::ReadOnly {
                object_type: object_type.to_owned(),
                property: self.name.clone(),
            }),
            _ => Err(wrong_type()),
        }
    }

    /// Parses option text (`0x2f8`, `on`, `com2`) into a JSON value of this property's type.
    ///
    /// Integers are decimal, `0x` hexadecimal or `0b` binary, with an optional `-`;
    /// booleans are `on`/`off`, `true`/`false` or `yes`/`no`. Range checks happen on set.
    pub fn parse_text(&self, object_type: &str, text: &str) -> Result<Value> {
        let invalid = |expected: &str| Error::InvalidValue {
            object_type: object_type.to_owned(),
            property: self.name.clone(),
            value: text.to_owned(),
            expected: expected.to_owned(),
        };
        match &self.kind {
            PropertyKind::Bool => match text {
                "on" | "true" | "yes" => Ok(Value::Bool(true)),
                "off" | "false" | "no" => Ok(Value::Bool(false)),
                _ => Err(invalid("a boolean (on/off, true/false, yes/no)")),
            },
            PropertyKind::Int { .. } | PropertyKind::Uint { .. } => {
                let expected = if matches!(self.kind, PropertyKind::Int { .. }) {
                    "an integer (decimal, 0x hex or 0b binary)"
                } else {
                    "an unsigned integer (decimal, 0x hex or 0b binary)"
                };
                match parse_integer(text) {
                    Some(v) => integer_value(v).ok_or_else(|| {
                        let (min, max) = match self.kind {
                            PropertyKind::Int { min, max } => (min.to_string(), max.to_string()),
                            PropertyKind::Uint { min, max } => (min.to_string(), max.to_string()),
                            _ => (String::new(), String::new()),
                        };
                        Error::OutOfRange {
                            object_type: object_type.to_owned(),
                            property: self.name.clone(),
                            value: text.to_owned(),
                            min,
                            max,
                        }
                    }),
                    None => Err(invalid(expected)),
                }
            }
            PropertyKind::Str | PropertyKind::Enum { .. } | PropertyKind::Link { .. } => {
                Ok(Value::String(text.to_owned()))
            }
            PropertyKind::Child { .. } => Err(Error::ReadOnly {
                object_type: object_type.to_owned(),
                property: self.name.clone(),
            }),
        }
    }
}

/// The introspection record of one property, as `qom-list` and `device-list-properties`
/// report it.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyInfo {
    /// Property name.
    pub name: String,
    /// Type name (`bool`, `uint16`, `str`, `link<T>`, `child<T>`...).
    pub type_name: String,
    /// Description, if the type gave one.
    pub description: Option<String>,
    /// Default value, if any.
    pub default: Option<Value>,
    /// Whether sets are refused.
    pub read_only: bool,
    /// Whether sets are allowed after realize.
    pub runtime_settable: bool,
    /// Whether realize requires a value.
    pub required: bool,
    /// For enums, the accepted strings; empty otherwise.
    pub enum_values: Vec<String>,
}

impl PropertyInfo {
    /// The record as JSON in QEMU's `ObjectPropertyInfo` shape:
    /// `{"name", "type", "description"?, "default-value"?}`.
    pub fn to_json(&self) -> Value {
        let mut map = serde_json::Map::new();
        map.insert("name".into(), Value::String(self.name.clone()));
        map.insert("type".into(), Value::String(self.type_name.clone()));
        if let Some(d) = &self.description {
            map.insert("description".into(), Value::String(d.clone()));
        }
        if let Some(d) = &self.default {
            map.insert("default-value".into(), d.clone());
        }
        Value::Object(map)
    }
}

/// Checks a property or child name: non-empty, no `/` (path separator).
pub(crate) fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: "names must not be empty",
        });
    }
    if name.contains('/') {
        return Err(Error::InvalidName {
            name: name.to_owned(),
            reason: "names must not contain '/'",
        });
    }
    Ok(())
}

/// A short description of a JSON value's type and content, for error messages.
fn describe_json(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Parses `[-](0x<hex>|0b<bin>|<dec>)` into an i128 (the magnitude fits in a u64): the
/// number syntax of option text, for callers that must read numbers exactly as properties do.
///
/// ```
/// assert_eq!(vmkit_object::parse_integer("0x2f8"), Some(0x2f8));
/// assert_eq!(vmkit_object::parse_integer("0b11"), Some(3));
/// assert_eq!(vmkit_object::parse_integer("+1"), None);
/// ```
pub fn parse_integer(text: &str) -> Option<i128> {
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (digits, radix) = if let Some(h) = magnitude
        .strip_prefix("0x")
        .or_else(|| magnitude.strip_prefix("0X"))
    {
        (h, 16)
    } else if let Some(b) = magnitude
        .strip_prefix("0b")
        .or_else(|| magnitude.strip_prefix("0B"))
    {
        (b, 2)
    } else {
        (magnitude, 10)
    };
    // from_str_radix would accept a leading '+'; only plain digits are allowed here.
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let value = i128::from(u64::from_str_radix(digits, radix).ok()?);
    Some(if negative { -value } else { value })
}

/// The JSON number for `v`, or None if it fits neither i64 nor u64.
fn integer_value(v: i128) -> Option<Value> {
    if let Ok(u) = u64::try_from(v) {
        Some(Value::from(u))
    } else {
        i64::try_from(v).ok().map(Value::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_text_forms() {
        assert_eq!(parse_integer("0x2f8"), Some(0x2f8));
        assert_eq!(parse_integer("0X2F8"), Some(0x2f8));
        assert_eq!(parse_integer("0b101"), Some(5));
        assert_eq!(parse_integer("760"), Some(760));
        assert_eq!(parse_integer("-3"), Some(-3));
        assert_eq!(
            parse_integer("18446744073709551615"),
            Some(i128::from(u64::MAX))
        );
        assert_eq!(parse_integer("18446744073709551616"), None);
        for bad in ["", "-", "0x", "+5", "12a", "0x-1", " 1", "1.5", "--1"] {
            assert_eq!(parse_integer(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn type_names_follow_ranges() {
        assert_eq!(PropertyDef::uint("a", 0..=15).kind().type_name(), "uint8");
        assert_eq!(
            PropertyDef::uint("a", 0..=0xffff).kind().type_name(),
            "uint16"
        );
        assert_eq!(
            PropertyDef::uint("a", 0..=0x1_0000).kind().type_name(),
            "uint32"
        );
        assert_eq!(
            PropertyDef::uint("a", 0..=u64::MAX).kind().type_name(),
            "uint64"
        );
        assert_eq!(PropertyDef::int("a", -128..=127).kind().type_name(), "int8");
        assert_eq!(
            PropertyDef::int("a", -129..=127).kind().type_name(),
            "int16"
        );
        assert_eq!(
            PropertyDef::int("a", i64::MIN..=0).kind().type_name(),
            "int64"
        );
        assert_eq!(
            PropertyDef::link("a", "dev").kind().type_name(),
            "link<dev>"
        );
        assert_eq!(
            PropertyDef::child("a", "dev").kind().type_name(),
            "child<dev>"
        );
    }

    #[test]
    fn text_beyond_i64_is_out_of_range_not_garbage() {
        let def = PropertyDef::int("offset", -10..=10);
        let err = def.parse_text("t", "-18446744073709551615").unwrap_err();
        assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
    }
}
