//! The composition tree: names, parents, children and path resolution.

use super::*;

impl Object {
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

    pub(super) fn attach(&self, name: &str, child: &Object, declared: bool) -> Result<String> {
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
}
