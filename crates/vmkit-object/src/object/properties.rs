//! Reading and writing an object's properties and links.

use serde_json::Value;

use super::*;

impl Object {
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
}
