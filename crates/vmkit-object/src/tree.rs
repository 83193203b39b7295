//! The composition tree with QEMU's layout and the control-socket operations on it.

use serde_json::Value;

use crate::class::Context;
use crate::options::ObjectOptions;
use crate::property::PropertyInfo;
use crate::registry::TYPE_CONTAINER;
use crate::{Error, Object, Registry, Result};

/// A composition tree rooted at a `container` object, laid out as QEMU lays it out:
///
/// - `/machine`: the machine object ([`set_machine`](Self::set_machine));
/// - `/machine/unattached/device[N]`: board-created objects with no other parent;
/// - `/machine/peripheral/<id>` and `/machine/peripheral-anon/device[N]`: `-device` objects;
/// - `/objects/<id>`: `-object` objects.
///
/// It also carries the control-socket operations: `qom-list` ([`list`](Self::list)),
/// `qom-get` ([`get`](Self::get)), `qom-set` ([`set`](Self::set)), `device_add`
/// ([`device_add`](Self::device_add)) and `device_del` ([`remove`](Self::remove)).
#[derive(Debug, Clone)]
pub struct ObjectTree {
    registry: Registry,
    root: Object,
}

impl ObjectTree {
    /// An empty tree (just `/`) whose objects come from `registry`.
    pub fn new(registry: &Registry) -> Result<Self> {
        let root = Object::instantiate(registry.class(TYPE_CONTAINER)?, registry, true)?;
        Ok(ObjectTree {
            registry: registry.clone(),
            root,
        })
    }

    /// The registry objects are created from.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The root object, `/`.
    pub fn root(&self) -> &Object {
        &self.root
    }

    /// Resolves an absolute path (`/machine/peripheral/com2`) or a partial one that
    /// matches exactly one object (`com2`).
    pub fn resolve(&self, path: &str) -> Result<Object> {
        self.root.resolve_any(path)
    }

    /// Adds `object` under the object at `parent_path` as `name` (`device[*]` picks the
    /// first free index) and returns its canonical path.
    pub fn add(&self, parent_path: &str, name: &str, object: &Object) -> Result<String> {
        let parent = self.resolve(parent_path)?;
        parent.add_child(name, object)?;
        Ok(canonical(object))
    }

    /// Places `machine` at `/machine` and creates the `unattached`, `peripheral` and
    /// `peripheral-anon` containers under it.
    pub fn set_machine(&self, machine: &Object) -> Result<()> {
        self.root.add_child("machine", machine)?;
        for name in ["unattached", "peripheral", "peripheral-anon"] {
            self.container(machine, name)?;
        }
        Ok(())
    }

    /// The object at `/machine`.
    pub fn machine(&self) -> Result<Object> {
        self.root
            .child("machine")
            .ok_or_else(|| Error::PathNotFound("/machine".into()))
    }

    /// The container `name` under `parent`, created if missing.
    fn container(&self, parent: &Object, name: &str) -> Result<Object> {
        if let Some(existing) = parent.child(name) {
            return Ok(existing);
        }
        let container = self.registry.new_object(TYPE_CONTAINER)?;
        parent.add_child(name, &container)?;
        Ok(container)
    }

    /// Places `object` at `/machine/unattached/device[N]` and returns the path.
    pub fn add_unattached(&self, object: &Object) -> Result<String> {
        let unattached = self.container(&self.machine()?, "unattached")?;
        unattached.add_child("device[*]", object)?;
        Ok(canonical(object))
    }

    /// Places `object` at `/machine/peripheral/<id>`, or at
    /// `/machine/peripheral-anon/device[N]` without an id, and returns the path.
    pub fn add_peripheral(&self, object: &Object, id: Option<&str>) -> Result<String> {
        let machine = self.machine()?;
        match id {
            Some(id) => self
                .container(&machine, "peripheral")?
                .add_child(id, object)?,
            None => self
                .container(&machine, "peripheral-anon")?
                .add_child("device[*]", object)?,
        };
        Ok(canonical(object))
    }

    /// `-device` / `device_add` with an empty context: see [`device_add_with`](Self::device_add_with).
    pub fn device_add(&self, options: &str) -> Result<Object> {
        self.device_add_with(options, &mut Context::none())
    }

    /// Creates the object described by `options` (`isa-serial,id=com2,iobase=0x2f8`),
    /// places it as a peripheral, sets its properties in order and realizes it with
    /// `context`. On any error the object is taken out of the tree again and dropped.
    pub fn device_add_with(&self, options: &str, context: &mut Context<'_>) -> Result<Object> {
        let options = ObjectOptions::parse(options)?;
        let object = self.registry.new_object(&options.type_name)?;
        self.add_peripheral(&object, options.id.as_deref())?;
        self.configure(&object, &options, context)?;
        Ok(object)
    }

    /// `-object` / `object-add` with an empty context: see
    /// [`object_add_with`](Self::object_add_with).
    pub fn object_add(&self, options: &str) -> Result<Object> {
        self.object_add_with(options, &mut Context::none())
    }

    /// `-object` / `object-add`: like [`device_add_with`](Self::device_add_with) but the id
    /// is required and the object goes to `/objects/<id>`.
    pub fn object_add_with(&self, options: &str, context: &mut Context<'_>) -> Result<Object> {
        let parsed = ObjectOptions::parse(options)?;
        let id = parsed.id.as_deref().ok_or_else(|| Error::OptionSyntax {
            text: options.to_owned(),
            reason: "objects need an id=".into(),
        })?;
        let object = self.registry.new_object(&parsed.type_name)?;
        self.container(&self.root, "objects")?
            .add_child(id, &object)?;
        self.configure(&object, &parsed, context)?;
        Ok(object)
    }

    fn configure(
        &self,
        object: &Object,
        options: &ObjectOptions,
        context: &mut Context<'_>,
    ) -> Result<()> {
        let result = options
            .properties
            .iter()
            .try_for_each(|(key, value)| object.set_property_text(key, value))
            .and_then(|()| object.realize_with(context));
        if result.is_err() {
            object.detach();
        }
        result
    }

    /// `device_del`: unrealizes the subtree at `path` (children first) and takes it out of
    /// the tree. The objects are dropped once no other handle holds them. If an unrealize
    /// hook fails the subtree stays in place.
    pub fn remove(&self, path: &str) -> Result<Object> {
        self.remove_with(path, &mut Context::none())
    }

    /// [`remove`](Self::remove) with a context for the unrealize hooks.
    pub fn remove_with(&self, path: &str, context: &mut Context<'_>) -> Result<Object> {
        let object = self.resolve(path)?;
        if object.is_root() {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
                reason: "the root cannot be removed",
            });
        }
        object.unrealize_tree(context)?;
        object.detach();
        Ok(object)
    }

    /// `qom-list`: the properties (and children) of the object at `path`.
    pub fn list(&self, path: &str) -> Result<Vec<PropertyInfo>> {
        Ok(self.resolve(path)?.list_properties())
    }

    /// `qom-get`.
    pub fn get(&self, path: &str, property: &str) -> Result<Value> {
        self.resolve(path)?.get_property(property)
    }

    /// `qom-set`.
    pub fn set(&self, path: &str, property: &str, value: Value) -> Result<()> {
        self.resolve(path)?.set_property(property, value)
    }
}

fn canonical(object: &Object) -> String {
    object.path().unwrap_or_default()
}
