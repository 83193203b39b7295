//! Device state by object path: QEMU's VMState and `vmstate_register`, over the
//! composition tree.
//!
//! A device model owns a plain, versioned state (its crate's `State` type, serde); the
//! machine registers, for each object whose state it wants saved, a [`VmStateHandler`]
//! under the object's canonical path (`/machine/unattached/device[3]`,
//! `/machine/peripheral/com1`). [`VmStateRegistry::save_all`] then yields the machine's
//! state as the tree of its objects' states, one [`VmStateSection`] per path, and
//! [`VmStateRegistry::restore_all`] puts every object back, refusing a section for a path
//! it does not know, a missing section, or another state version (QEMU's "Unknown
//! savevm section" and "version_id ... too large" checks).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use vmkit_object::{json, Value, VmStateHandler, VmStateRegistry};
//!
//! struct Counter(Mutex<u64>);
//! impl VmStateHandler for Counter {
//!     fn save(&self) -> Result<Value, String> {
//!         Ok(json!(*self.0.lock().unwrap()))
//!     }
//!     fn load(&self, state: &Value) -> Result<(), String> {
//!         *self.0.lock().unwrap() = state.as_u64().ok_or("not a number")?;
//!         Ok(())
//!     }
//! }
//! let a = Arc::new(Counter(Mutex::new(41)));
//! let source = VmStateRegistry::new();
//! source.register("/machine/unattached/device[0]", "counter", 1, a.clone()).unwrap();
//! let saved = source.save_all().unwrap();
//!
//! let b = Arc::new(Counter(Mutex::new(0)));
//! let dest = VmStateRegistry::new();
//! dest.register("/machine/unattached/device[0]", "counter", 1, b.clone()).unwrap();
//! dest.restore_all(&saved).unwrap();
//! assert_eq!(*b.0.lock().unwrap(), 41);
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::error::{Error, Result};

/// Saves and loads one object's state as JSON data.
pub trait VmStateHandler: Send + Sync {
    /// The object's state now (the machine is stopped while this runs).
    fn save(&self) -> std::result::Result<Value, String>;
    /// Puts the object into `state`; on error the object is left as it was where it can be.
    fn load(&self, state: &Value) -> std::result::Result<(), String>;
}

/// One object's saved state in a machine's state tree.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VmStateSection {
    /// The object's canonical path.
    pub path: String,
    /// The state's name (QEMU's vmsd name, e.g. `"i8254"`).
    pub id: String,
    /// The state's layout version.
    pub version: u32,
    /// The state itself.
    pub data: Value,
}

struct Entry {
    id: String,
    version: u32,
    handler: Arc<dyn VmStateHandler>,
}

/// The registered state handlers of a machine, by object path.
#[derive(Default)]
pub struct VmStateRegistry {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl std::fmt::Debug for VmStateRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.paths()).finish()
    }
}

fn fail(path: &str, reason: impl Into<String>) -> Error {
    Error::VmState {
        path: path.to_string(),
        reason: reason.into(),
    }
}

impl VmStateRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `handler` for the object at `path` (QEMU's `vmstate_register`); a path
    /// can have one handler.
    pub fn register(
        &self,
        path: &str,
        id: &str,
        version: u32,
        handler: Arc<dyn VmStateHandler>,
    ) -> Result<()> {
        let mut entries = self.lock();
        if entries.contains_key(path) {
            return Err(fail(path, "a state handler is already registered there"));
        }
        entries.insert(
            path.to_string(),
            Entry {
                id: id.to_string(),
                version,
                handler,
            },
        );
        Ok(())
    }

    /// Removes the handler at `path` (hot-unplug); false if there was none.
    pub fn unregister(&self, path: &str) -> bool {
        self.lock().remove(path).is_some()
    }

    /// The registered paths, sorted.
    pub fn paths(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The state of the object at `path`.
    pub fn save(&self, path: &str) -> Result<VmStateSection> {
        let entries = self.lock();
        let entry = entries
            .get(path)
            .ok_or_else(|| fail(path, "no state handler is registered there"))?;
        let data = entry.handler.save().map_err(|e| fail(path, e))?;
        Ok(VmStateSection {
            path: path.to_string(),
            id: entry.id.clone(),
            version: entry.version,
            data,
        })
    }

    /// Every registered object's state, in path order.
    pub fn save_all(&self) -> Result<Vec<VmStateSection>> {
        self.paths().iter().map(|p| self.save(p)).collect()
    }

    /// Puts the object at `section.path` into `section`'s state after checking its name
    /// and version.
    pub fn restore(&self, section: &VmStateSection) -> Result<()> {
        let path = section.path.as_str();
        let handler = {
            let entries = self.lock();
            let entry = entries
                .get(path)
                .ok_or_else(|| fail(path, format!("unknown section '{}'", section.id)))?;
            if entry.id != section.id {
                return Err(fail(
                    path,
                    format!(
                        "section is '{}', this machine has '{}' there",
                        section.id, entry.id
                    ),
                ));
            }
            if entry.version != section.version {
                return Err(fail(
                    path,
                    format!(
                        "'{}' state version {} is not supported (this build has {})",
                        section.id, section.version, entry.version
                    ),
                ));
            }
            Arc::clone(&entry.handler)
        };
        handler.load(&section.data).map_err(|e| fail(path, e))
    }

    /// Restores every section; every registered path must have exactly one.
    pub fn restore_all(&self, sections: &[VmStateSection]) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for section in sections {
            if !seen.insert(section.path.clone()) {
                return Err(fail(&section.path, "the state has two sections for it"));
            }
        }
        if let Some(missing) = self.paths().into_iter().find(|p| !seen.contains(p)) {
            return Err(fail(&missing, "the state has no section for it"));
        }
        for section in sections {
            self.restore(section)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Cell(Mutex<Value>);
    impl VmStateHandler for Cell {
        fn save(&self) -> std::result::Result<Value, String> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn load(&self, state: &Value) -> std::result::Result<(), String> {
            if state.is_null() {
                return Err("null state".into());
            }
            *self.0.lock().unwrap() = state.clone();
            Ok(())
        }
    }

    fn registry(values: &[(&str, Value)]) -> (VmStateRegistry, Vec<Arc<Cell>>) {
        let r = VmStateRegistry::new();
        let cells: Vec<_> = values
            .iter()
            .map(|(path, v)| {
                let c = Arc::new(Cell(Mutex::new(v.clone())));
                r.register(path, "cell", 1, c.clone()).unwrap();
                c
            })
            .collect();
        (r, cells)
    }

    #[test]
    fn the_tree_round_trips_and_mismatches_are_refused() {
        let (a, _) = registry(&[("/machine/a", 1.into()), ("/machine/b", "x".into())]);
        let saved = a.save_all().unwrap();
        assert_eq!(saved.len(), 2);
        let (b, cells) = registry(&[("/machine/a", 0.into()), ("/machine/b", 0.into())]);
        b.restore_all(&saved).unwrap();
        assert_eq!(*cells[1].0.lock().unwrap(), Value::from("x"));

        let (c, _) = registry(&[("/machine/a", 0.into())]);
        let err = c.restore_all(&saved).unwrap_err().to_string();
        assert!(
            err.contains("/machine/b") && err.contains("unknown section"),
            "{err}"
        );
        let err = b.restore_all(&saved[..1]).unwrap_err().to_string();
        assert!(
            err.contains("/machine/b") && err.contains("no section"),
            "{err}"
        );
        let mut bad = saved.clone();
        bad[0].version = 7;
        let err = b.restore_all(&bad).unwrap_err().to_string();
        assert!(err.contains("version 7"), "{err}");
        bad[0].version = 1;
        bad[0].data = Value::Null;
        assert!(b
            .restore_all(&bad)
            .unwrap_err()
            .to_string()
            .contains("null state"));
        assert!(a
            .register("/machine/a", "cell", 1, cells[0].clone())
            .is_err());
    }
}
