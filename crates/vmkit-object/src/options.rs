//! QEMU-style option text: `isa-serial,id=com2,iobase=0x2f8,irq=3`.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Parsed option text: a type name, an optional id and `key=value` pairs in order.
///
/// The type comes first (or as `driver=` / `qom-type=`); `id=` names the object in the
/// tree; every other key is a property, parsed by its declared type when set. A literal
/// comma inside a value is written `,,`.
///
/// ```
/// use vmkit_object::ObjectOptions;
/// let opts: ObjectOptions = "isa-serial,id=com2,iobase=0x2f8,irq=3".parse().unwrap();
/// assert_eq!(opts.type_name, "isa-serial");
/// assert_eq!(opts.id.as_deref(), Some("com2"));
/// assert_eq!(opts.properties[0], ("iobase".to_owned(), "0x2f8".to_owned()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectOptions {
    /// The type to create.
    pub type_name: String,
    /// The object's id (its name under `/machine/peripheral` or `/objects`).
    pub id: Option<String>,
    /// Property assignments, in the order given.
    pub properties: Vec<(String, String)>,
}

impl ObjectOptions {
    /// Parses option text. Errors name the offending item.
    pub fn parse(text: &str) -> Result<Self> {
        let err = |reason: String| Error::OptionSyntax {
            text: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(err("the text is empty; expected TYPE[,key=value...]".into()));
        }
        let mut type_name: Option<String> = None;
        let mut id: Option<String> = None;
        let mut properties: Vec<(String, String)> = Vec::new();
        for (position, item) in split_items(text).into_iter().enumerate() {
            let Some((key, value)) = item.split_once('=') else {
                if position == 0 && !item.is_empty() {
                    type_name = Some(item);
                    continue;
                }
                return Err(err(if item.is_empty() {
                    format!("item {} is empty", position + 1)
                } else {
                    format!("'{item}' is not of the form key=value")
                }));
            };
            match key {
                "" => return Err(err(format!("'{item}' has no key before '='"))),
                "driver" | "qom-type" => {
                    if type_name.is_some() {
                        return Err(err("the type is given twice".into()));
                    }
                    if value.is_empty() {
                        return Err(err(format!("'{key}=' needs a type name")));
                    }
                    type_name = Some(value.to_owned());
                }
                "id" => {
                    if id.is_some() {
                        return Err(err("'id' is given twice".into()));
                    }
                    check_id(value).map_err(|reason| err(format!("bad id {value:?}: {reason}")))?;
                    id = Some(value.to_owned());
                }
                _ => {
                    if properties.iter().any(|(k, _)| k == key) {
                        return Err(err(format!("'{key}' is given twice")));
                    }
                    properties.push((key.to_owned(), value.to_owned()));
                }
            }
        }
        let type_name = type_name.ok_or_else(|| {
            err("no type given: start with the type name or give driver=TYPE".into())
        })?;
        Ok(ObjectOptions {
            type_name,
            id,
            properties,
        })
    }
}

impl FromStr for ObjectOptions {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// Renders the options back as text that [`ObjectOptions::parse`] reads as the same value.
impl fmt::Display for ObjectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.type_name))?;
        if let Some(id) = &self.id {
            write!(f, ",id={}", escape(id))?;
        }
        for (k, v) in &self.properties {
            write!(f, ",{}={}", escape(k), escape(v))?;
        }
        Ok(())
    }
}

fn escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// Splits QEMU option text at single commas; `,,` is a literal comma (shared by every
/// option parser that reads QEMU's syntax, e.g. vmkit-chardev's `-chardev`).
pub fn split_items(text: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                current.push(',');
            } else {
                items.push(std::mem::take(&mut current));
            }
        } else {
            current.push(c);
        }
    }
    items.push(current);
    items
}

/// QEMU's id rule: a letter, then letters, digits, `-`, `.` or `_`; the reason otherwise.
pub fn check_id(id: &str) -> std::result::Result<(), &'static str> {
    let mut chars = id.chars();
    match chars.next() {
        None => Err("ids must not be empty"),
        Some(c) if !c.is_ascii_alphabetic() => Err("ids must start with a letter"),
        _ if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) => Ok(()),
        _ => Err("ids may only contain letters, digits, '-', '.' and '_'"),
    }
}
