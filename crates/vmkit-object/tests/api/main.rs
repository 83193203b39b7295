//! Behaviour tests of vmkit-object's public API, one module per area.

mod casts;
mod classes;
mod fixture;
mod lifecycle;
mod options;
mod properties;
mod proptests;
mod registry;
mod threads;
mod tree;
