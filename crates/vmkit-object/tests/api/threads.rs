//! Objects are shared across threads: a control thread sets while others read.

use std::sync::Arc;
use std::thread;

use vmkit_object::{json, Object, ObjectTree, Registry, Typed};

use crate::fixture::{fixture, SerialState};

#[test]
fn handles_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Object>();
    assert_send_sync::<Registry>();
    assert_send_sync::<ObjectTree>();
    assert_send_sync::<Typed<SerialState>>();
}

#[test]
fn concurrent_gets_and_sets_see_whole_values() {
    let f = fixture();
    let tree = Arc::new(ObjectTree::new(&f.registry).unwrap());
    tree.set_machine(&f.registry.new_object("pc").unwrap())
        .unwrap();
    let com = tree.device_add("isa-serial,id=com1").unwrap();

    let setter = {
        let tree = Arc::clone(&tree);
        thread::spawn(move || {
            for i in 0..500u64 {
                let baud = if i % 2 == 0 { 9600 } else { 115_200 };
                tree.set("/machine/peripheral/com1", "baud", json!(baud))
                    .unwrap();
            }
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let com = com.clone();
            thread::spawn(move || {
                for _ in 0..500 {
                    let baud = com.get_u64("baud").unwrap();
                    assert!(baud == 9600 || baud == 115_200, "{baud}");
                    assert_eq!(com.get_u64("iobase").unwrap(), 0x3f8);
                }
            })
        })
        .collect();
    setter.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(
        com.with_state(|s: &mut SerialState| s.divisor_writes)
            .unwrap(),
        500
    );
    assert_eq!(com.get_u64("baud").unwrap(), 115_200);
}
