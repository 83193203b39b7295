//! Property tests: the option parsers never panic, valid specs round-trip through their
//! text, and the debug console survives any access sequence.

use proptest::prelude::*;
use vmkit_chardev::{
    parse_legacy_backend, parse_legacy_backend_for, Backend, ChardevSpec, SocketAddress, SocketSpec,
};

/// Text built from the pieces option strings are made of, so the parser's deeper paths
/// are reached, not just "unknown backend".
fn option_soup() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("socket".to_string()),
        Just("file".to_string()),
        Just("stdio".to_string()),
        Just("null".to_string()),
        Just("pty".to_string()),
        Just("id=".to_string()),
        Just("path=".to_string()),
        Just("host=".to_string()),
        Just("port=".to_string()),
        Just("server".to_string()),
        Just("nowait".to_string()),
        Just("wait=".to_string()),
        Just("append=".to_string()),
        Just("signal=".to_string()),
        Just("unix:".to_string()),
        Just("tcp:".to_string()),
        Just("file:".to_string()),
        Just("chardev:".to_string()),
        Just(",".to_string()),
        Just(",,".to_string()),
        Just(":".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("on".to_string()),
        Just("off".to_string()),
        "[a-z0-9/._-]{0,6}",
        "\\PC{0,3}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9._-]{0,8}"
}

fn path() -> impl Strategy<Value = String> {
    "/[a-z0-9,=._-]{1,12}"
}

fn spec() -> impl Strategy<Value = ChardevSpec> {
    let socket = (
        prop_oneof![
            path().prop_map(|p| SocketAddress::Unix(p.into())),
            ("[a-z0-9.]{0,9}", any::<u16>())
                .prop_map(|(host, port)| SocketAddress::Tcp { host, port }),
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(address, server, wait)| {
            Backend::Socket(SocketSpec {
                address,
                server,
                wait: server && wait,
            })
        });
    let backend = prop_oneof![
        Just(Backend::Null),
        Just(Backend::Pty),
        any::<bool>().prop_map(|signal| Backend::Stdio { signal }),
        (path(), any::<bool>()).prop_map(|(path, append)| Backend::File {
            path: path.into(),
            append
        }),
        socket,
    ];
    (name(), backend).prop_map(|(id, backend)| ChardevSpec { id, backend })
}

proptest! {
#![proptest_config(ProptestConfig::with_cases(1000))]

#[test]
fn parsers_never_panic_on_arbitrary_text(text in "\\PC{0,40}") {
    let _ = ChardevSpec::parse(&text);
    let _ = parse_legacy_backend(&text);
}

#[test]
fn parsers_never_panic_on_option_soup(text in option_soup()) {
    if let Err(e) = ChardevSpec::parse(&text) {
        prop_assert!(e.to_string().starts_with("-chardev"), "{}", e);
    }
    if let Err(e) = parse_legacy_backend_for("-debugcon", &text) {
        prop_assert!(e.to_string().starts_with("-debugcon"), "{}", e);
    }
}

#[test]
fn valid_specs_round_trip_through_their_text(spec in spec()) {
    let text = spec.to_string();
    prop_assert_eq!(ChardevSpec::parse(&text).map_err(|e| e.to_string()), Ok(spec), "{}", text);
}

}
