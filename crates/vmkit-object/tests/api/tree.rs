//! The composition tree: canonical paths, resolution, children, removal.

use std::sync::atomic::Ordering;

use vmkit_object::{json, Error, ObjectTree, Value};

use crate::fixture::{fixture, Fixture};

fn pc_tree() -> (Fixture, ObjectTree) {
    let f = fixture();
    let tree = ObjectTree::new(&f.registry).unwrap();
    tree.set_machine(&f.registry.new_object("pc").unwrap())
        .unwrap();
    (f, tree)
}

#[test]
fn machine_layout_and_canonical_paths() {
    let (f, tree) = pc_tree();
    assert_eq!(tree.root().path().as_deref(), Some("/"));
    let machine = tree.machine().unwrap();
    assert_eq!(machine.path().as_deref(), Some("/machine"));
    let names: Vec<String> = machine.children().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["pic", "unattached", "peripheral", "peripheral-anon"]
    );
    assert_eq!(tree.resolve("/machine/pic").unwrap().type_name(), "i8259");
    assert_eq!(machine.get_property("pic").unwrap(), "/machine/pic");

    let pit = f.registry.new_object("i8259").unwrap();
    assert_eq!(pit.path(), None, "not in a tree yet");
    assert_eq!(
        tree.add_unattached(&pit).unwrap(),
        "/machine/unattached/device[0]"
    );
    let pit2 = f.registry.new_object("i8259").unwrap();
    assert_eq!(
        tree.add_unattached(&pit2).unwrap(),
        "/machine/unattached/device[1]"
    );
    assert_eq!(pit2.name().as_deref(), Some("device[1]"));
    assert_eq!(
        pit2.parent().unwrap().path().as_deref(),
        Some("/machine/unattached")
    );

    let com2 = f.registry.new_object("isa-serial").unwrap();
    assert_eq!(
        tree.add_peripheral(&com2, Some("com2")).unwrap(),
        "/machine/peripheral/com2"
    );
    let anon = f.registry.new_object("isa-serial").unwrap();
    assert_eq!(
        tree.add_peripheral(&anon, None).unwrap(),
        "/machine/peripheral-anon/device[0]"
    );
    assert_eq!(
        tree.add(
            "/machine/pic",
            "sub",
            &f.registry.new_object("i8259").unwrap()
        )
        .unwrap(),
        "/machine/pic/sub"
    );
}

#[test]
fn indexed_names_reuse_the_first_free_index() {
    let (f, tree) = pc_tree();
    let mk = || f.registry.new_object("i8259").unwrap();
    let objects: Vec<_> = (0..3).map(|_| mk()).collect();
    for o in &objects {
        tree.add_unattached(o).unwrap();
    }
    tree.remove("/machine/unattached/device[1]").unwrap();
    let again = mk();
    assert_eq!(
        tree.add_unattached(&again).unwrap(),
        "/machine/unattached/device[1]"
    );
    assert_eq!(
        tree.add_unattached(&mk()).unwrap(),
        "/machine/unattached/device[3]"
    );
}

#[test]
fn resolution_absolute_relative_partial() {
    let (_f, tree) = pc_tree();
    let com1 = tree.device_add("isa-serial,id=com1").unwrap();
    tree.device_add("isa-serial,id=com2").unwrap();
    let machine = tree.machine().unwrap();
    assert_eq!(machine.resolve("peripheral/com1").unwrap(), com1);
    assert_eq!(
        com1.resolve("../com2").unwrap().name().as_deref(),
        Some("com2")
    );
    assert_eq!(com1.resolve("/machine").unwrap(), machine);
    assert_eq!(com1.resolve(".").unwrap(), com1);
    assert_eq!(tree.resolve("/").unwrap(), *tree.root());
    assert_eq!(tree.resolve("com1").unwrap(), com1);
    assert_eq!(tree.resolve("peripheral/com1").unwrap(), com1);

    let err = tree.resolve("/machine/peripheral/com9").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no object at path '/machine/peripheral/com9'"
    );
    assert!(matches!(tree.resolve("com9"), Err(Error::PathNotFound(_))));
    assert!(matches!(tree.resolve("/.."), Err(Error::PathNotFound(_))));
    // Two objects named device[0] exist (an unattached one and an anonymous peripheral).
    tree.device_add("isa-debug-exit").unwrap();
    tree.add_unattached(&tree.registry().new_object("i8259").unwrap())
        .unwrap();
    assert!(matches!(
        tree.resolve("device[0]"),
        Err(Error::AmbiguousPath(_))
    ));
    assert!(tree.resolve("unattached/device[0]").is_ok());
    assert!(matches!(tree.resolve(""), Err(Error::InvalidPath { .. })));
    // Absolute paths from an object outside any tree cannot work.
    let loose = tree.registry().new_object("i8259").unwrap();
    assert!(matches!(
        loose.resolve("/machine"),
        Err(Error::InvalidPath { .. })
    ));
}

#[test]
fn tree_errors() {
    let (f, tree) = pc_tree();
    let machine = tree.machine().unwrap();
    let pic = machine.child("pic").unwrap();
    // Duplicate names, including a declared property's name.
    let other = f.registry.new_object("i8259").unwrap();
    let err = machine.add_child("pic", &other).unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateChild { name, .. } if name == "pic"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "'pc' object at /machine already has a child or property named 'pic'"
    );
    assert!(matches!(
        machine.add_child("boot-device", &other),
        Err(Error::DuplicateChild { .. })
    ));
    assert!(matches!(
        machine.add_child("type", &other),
        Err(Error::DuplicateChild { .. })
    ));
    // One parent only.
    let err = tree.root().add_child("pic2", &pic).unwrap_err();
    assert!(matches!(err, Error::AlreadyAttached { .. }), "{err}");
    // No cycles: neither itself nor an ancestor.
    assert!(matches!(
        pic.add_child("me", &pic),
        Err(Error::TreeCycle { .. })
    ));
    let err = pic.add_child("up", &machine).unwrap_err();
    assert!(matches!(err, Error::TreeCycle { .. }), "{err}");
    // The root cannot move, nor be removed.
    assert!(matches!(
        pic.add_child("root", tree.root()),
        Err(Error::AlreadyAttached { .. })
    ));
    assert!(matches!(tree.remove("/"), Err(Error::InvalidPath { .. })));
    // Bad names.
    assert!(matches!(
        machine.add_child("", &other),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        machine.add_child("a/b", &other),
        Err(Error::InvalidName { .. })
    ));
    assert!(
        matches!(machine.remove_child("nope"), Err(Error::PathNotFound(p)) if p == "/machine/nope")
    );
    assert!(matches!(
        tree.set_machine(&other),
        Err(Error::DuplicateChild { .. })
    ));
}

#[test]
fn removing_a_subtree_unrealizes_and_drops_it() {
    let (f, tree) = pc_tree();
    let com1 = tree.device_add("isa-serial,id=com1").unwrap();
    // A child under the device, to show the whole subtree goes.
    let inner = f.registry.new_object("isa-serial").unwrap();
    com1.add_child("inner", &inner).unwrap();
    inner.realize().unwrap();
    let weak_inner = inner.downgrade();
    drop(inner);
    assert!(com1.is_realized());

    let removed = tree.remove("/machine/peripheral/com1").unwrap();
    assert_eq!(removed, com1);
    assert!(!com1.is_realized());
    assert!(
        !weak_inner.upgrade().unwrap().is_realized(),
        "children are unrealized too"
    );
    assert_eq!(com1.path(), None);
    assert!(tree.resolve("/machine/peripheral/com1").is_err());
    assert!(tree
        .machine()
        .unwrap()
        .resolve("peripheral")
        .unwrap()
        .children()
        .is_empty());
    assert_eq!(
        f.serial_drops.load(Ordering::SeqCst),
        0,
        "still held by the test"
    );
    drop(removed);
    drop(com1);
    assert_eq!(
        f.serial_drops.load(Ordering::SeqCst),
        2,
        "device and its child dropped"
    );
    assert!(weak_inner.upgrade().is_none());
}

#[test]
fn control_socket_operations() {
    let (_f, tree) = pc_tree();
    tree.device_add("isa-serial,id=com1,chardev=s0").unwrap();
    let list = tree.list("/machine/peripheral/com1").unwrap();
    assert!(list
        .iter()
        .any(|p| p.name == "iobase" && p.type_name == "uint16"));
    assert_eq!(
        tree.get("/machine/peripheral/com1", "chardev").unwrap(),
        "s0"
    );
    assert_eq!(
        tree.get("/machine/peripheral/com1", "type").unwrap(),
        "isa-serial"
    );
    tree.set("/machine/peripheral/com1", "baud", json!(57_600))
        .unwrap();
    assert_eq!(tree.get("com1", "baud").unwrap(), 57_600);
    assert!(matches!(
        tree.set("/machine/peripheral/com1", "iobase", json!(1)),
        Err(Error::SetAfterRealize { .. })
    ));
    assert!(matches!(
        tree.get("/nope", "type"),
        Err(Error::PathNotFound(_))
    ));
    assert_eq!(tree.get("/machine", "boot-device").unwrap(), Value::Null);
    assert_eq!(
        tree.get("/machine", "peripheral").unwrap(),
        "/machine/peripheral"
    );
}

#[test]
fn object_add_places_under_objects() {
    let (_f, tree) = pc_tree();
    let pic = tree.object_add("i8259,id=pic2,elcr-mask=0x0c").unwrap();
    assert_eq!(pic.path().as_deref(), Some("/objects/pic2"));
    assert_eq!(pic.get_u64("elcr-mask").unwrap(), 0x0c);
    assert!(pic.is_realized());
    let err = tree.object_add("i8259").unwrap_err();
    assert!(err.to_string().contains("objects need an id="), "{err}");
}
