//! Splits a QMP input byte stream into JSON messages without parsing them.
//!
//! QMP input is a stream of JSON values: a message may span lines and a line may hold
//! several messages, so the splitter follows braces, brackets, strings and escapes
//! byte by byte. It never holds more than the configured message limit.

use std::collections::VecDeque;

/// The default limit on one message: 1 MiB.
///
/// QEMU allows 64 MiB per message; no command vmkit implements needs more than a few
/// hundred bytes, and a VMM should not let one client make it hold 64 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;

/// One item cut from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bytes of one complete JSON value (an object, an array, a string or a bare
    /// scalar such as `42`), or of one stray byte (`}`) that can only be a syntax error.
    Message(Vec<u8>),
    /// A message grew past the limit. Its bytes were dropped, and so is the rest of it:
    /// the splitter skips input until that value ends or, if it never ends, until the
    /// end of the line.
    Oversized,
}

/// A streaming splitter of JSON values.
///
/// QMP input is a stream of JSON values: a message may span lines and a line may hold
/// several messages, so the splitter follows braces, brackets, strings and escapes byte
/// by byte instead of reading lines. It holds at most `max_message` bytes of an
/// incomplete message; longer ones become [`Frame::Oversized`].
///
/// ```
/// use vmkit_qmp::{Frame, JsonSplitter};
///
/// let mut splitter = JsonSplitter::new(1024);
/// splitter.feed(b"{\"execute\": \"stop\"}{\"exe");
/// splitter.feed(b"cute\": \"cont\"}\n");
/// assert_eq!(splitter.next_frame(), Some(Frame::Message(br#"{"execute": "stop"}"#.to_vec())));
/// assert_eq!(splitter.next_frame(), Some(Frame::Message(br#"{"execute": "cont"}"#.to_vec())));
/// assert_eq!(splitter.next_frame(), None);
/// ```
#[derive(Debug, Clone)]
pub struct JsonSplitter {
    max_message: usize,
    buf: Vec<u8>,
    /// Nesting depth of `{` and `[` together; saturates instead of overflowing.
    depth: u64,
    in_string: bool,
    escaped: bool,
    in_scalar: bool,
    discarding: bool,
    frames: VecDeque<Frame>,
}

fn is_json_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\r' | b'\n')
}

fn ends_scalar(byte: u8) -> bool {
    is_json_whitespace(byte) || matches!(byte, b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"')
}

impl Default for JsonSplitter {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_MESSAGE)
    }
}

impl JsonSplitter {
    /// A splitter that reports messages longer than `max_message` bytes (at least 1) as
    /// [`Frame::Oversized`].
    pub fn new(max_message: usize) -> Self {
        JsonSplitter {
            max_message: max_message.max(1),
            buf: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            in_scalar: false,
            discarding: false,
            frames: VecDeque::new(),
        }
    }

    /// The message size limit.
    pub fn max_message(&self) -> usize {
        self.max_message
    }

    /// Bytes of an incomplete message held so far (never more than the limit).
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Whether the splitter is inside a value (or skipping the rest of an oversized one).
    pub fn in_message(&self) -> bool {
        self.depth > 0 || self.in_string || self.in_scalar
    }

    /// Feeds bytes; complete frames are queued for [`next_frame`](Self::next_frame).
    pub fn feed(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.feed_byte(byte);
        }
    }

    /// The oldest complete frame not taken yet.
    pub fn next_frame(&mut self) -> Option<Frame> {
        self.frames.pop_front()
    }

    /// Forgets any partial message (used when the peer is gone).
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        self.in_scalar = false;
        self.discarding = false;
    }

    fn feed_byte(&mut self, byte: u8) {
        if self.discarding && byte == b'\n' {
            // Resynchronise at the end of the line even if the value never closed: raw
            // newlines are invalid inside JSON strings, so this is a safe place to restart.
            self.reset();
            return;
        }
        if self.in_scalar {
            if !ends_scalar(byte) {
                self.store(byte);
                return;
            }
            self.in_scalar = false;
            self.finish();
            // The terminator belongs to what comes next.
        }
        if self.in_string {
            self.store(byte);
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.in_string = false;
                if self.depth == 0 {
                    self.finish();
                }
            }
            return;
        }
        if self.depth > 0 {
            self.store(byte);
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth = self.depth.saturating_add(1),
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.finish();
                    }
                }
                _ => {}
            }
            return;
        }
        // Between values.
        match byte {
            _ if is_json_whitespace(byte) => {}
            b'{' | b'[' => {
                self.depth = 1;
                self.store(byte);
            }
            b'"' => {
                self.in_string = true;
                self.store(byte);
            }
            b'}' | b']' | b',' | b':' => {
                self.store(byte);
                self.finish();
            }
            _ => {
                self.in_scalar = true;
                self.store(byte);
            }
        }
    }

    fn store(&mut self, byte: u8) {
        if self.discarding {
            return;
        }
        if self.buf.len() >= self.max_message {
            self.buf = Vec::new();
            self.discarding = true;
            self.frames.push_back(Frame::Oversized);
            return;
        }
        self.buf.push(byte);
    }

    /// The current value ended.
    fn finish(&mut self) {
        if self.discarding {
            self.discarding = false;
        } else {
            self.frames
                .push_back(Frame::Message(std::mem::take(&mut self.buf)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn split(splitter: &mut JsonSplitter, input: &[u8]) -> Vec<Frame> {
        splitter.feed(input);
        std::iter::from_fn(|| splitter.next_frame()).collect()
    }

    fn messages(input: &str) -> Vec<String> {
        split(&mut JsonSplitter::default(), input.as_bytes())
            .into_iter()
            .map(|f| match f {
                Frame::Message(m) => String::from_utf8(m).unwrap_or_default(),
                Frame::Oversized => "<oversized>".into(),
            })
            .collect()
    }

    #[test]
    fn several_per_line_and_across_lines() {
        assert_eq!(
            messages("{\"a\": 1}{\"b\": [2, {\"c\": 3}]}\n{\n \"d\":\n 4\n}\n"),
            [
                "{\"a\": 1}",
                "{\"b\": [2, {\"c\": 3}]}",
                "{\n \"d\":\n 4\n}"
            ]
        );
    }

    #[test]
    fn braces_inside_strings_and_escapes_do_not_count() {
        assert_eq!(
            messages(r#"{"s": "}{\"}\\"} {"t": "\\"}"#),
            [r#"{"s": "}{\"}\\"}"#, r#"{"t": "\\"}"#]
        );
    }

    #[test]
    fn top_level_scalars_and_stray_bytes_are_their_own_messages() {
        assert_eq!(
            messages("42 true \"x{\" [1] } nul\n"),
            ["42", "true", "\"x{\"", "[1]", "}", "nul"]
        );
        // A scalar is only complete once something follows it.
        assert!(messages("42").is_empty());
    }

    #[test]
    fn oversized_message_is_reported_once_and_skipped_to_its_end() {
        let mut splitter = JsonSplitter::new(16);
        let big = format!("{{\"k\": \"{}\"}} {{\"ok\": 1}}", "x".repeat(100));
        let frames = split(&mut splitter, big.as_bytes());
        assert_eq!(
            frames,
            [Frame::Oversized, Frame::Message(b"{\"ok\": 1}".to_vec())]
        );
        assert!(splitter.pending_bytes() <= 16);
    }

    #[test]
    fn unterminated_oversized_garbage_resyncs_at_end_of_line() {
        let mut splitter = JsonSplitter::new(8);
        let input = format!("{}\n{{\"a\":1}}", "{".repeat(1000));
        assert_eq!(
            split(&mut splitter, input.as_bytes()),
            [Frame::Oversized, Frame::Message(b"{\"a\":1}".to_vec())]
        );
    }

    fn object_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[ -~\\\\\"{}\\[\\]\u{e9}\u{1F600}\n\t]{0,12}".prop_map(Value::String),
        ];
        let value = leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z{}\"]{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        });
        prop::collection::btree_map("[a-z-]{1,8}", value, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Valid objects, pretty or compact, split at arbitrary chunk boundaries, come
        /// out as exactly those objects.
        #[test]
        fn objects_survive_any_chunking(
            objects in prop::collection::vec(object_strategy(), 1..6),
            pretty in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for object in &objects {
                let text = if pretty {
                    serde_json::to_vec_pretty(object)
                } else {
                    serde_json::to_vec(object)
                };
                stream.extend(text.unwrap_or_default());
                stream.extend_from_slice(b" \r\n");
            }
            let mut positions: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            positions.push(0);
            positions.push(stream.len());
            positions.sort_unstable();
            let mut splitter = JsonSplitter::default();
            let mut parsed = Vec::new();
            for pair in positions.windows(2) {
                splitter.feed(stream.get(pair[0]..pair[1]).unwrap_or_default());
                while let Some(frame) = splitter.next_frame() {
                    match frame {
                        Frame::Message(bytes) => parsed.push(serde_json::from_slice::<Value>(&bytes)),
                        Frame::Oversized => prop_assert!(false, "unexpected oversize"),
                    }
                }
            }
            let parsed: Vec<Value> = parsed.into_iter().map(|r| r.unwrap_or(Value::Null)).collect();
            prop_assert_eq!(parsed, objects);
            prop_assert!(!splitter.in_message());
        }

        /// Arbitrary bytes never panic the splitter nor let it hold more than the limit.
        #[test]
        fn random_bytes_stay_bounded(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..20),
            limit in 1usize..64,
        ) {
            let mut splitter = JsonSplitter::new(limit);
            for chunk in &chunks {
                splitter.feed(chunk);
                prop_assert!(splitter.pending_bytes() <= limit);
                while let Some(frame) = splitter.next_frame() {
                    if let Frame::Message(bytes) = frame {
                        prop_assert!(!bytes.is_empty() && bytes.len() <= limit);
                    }
                }
            }
        }
    }
}
