//! Realize, unrealize and reset.

use std::sync::atomic::Ordering;

use super::*;

impl Object {
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
