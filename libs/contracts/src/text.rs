//! Caller text: every string a caller sends (a body field, a path segment,
//! a query filter, a Kafka command's payload) is a [`Text`], bounded in
//! length and free of control characters, refused where it is read. So no
//! caller text reaches a database, a log line or an event unchecked: a NUL
//! byte, which PostgreSQL cannot store, is a 4xx naming its field, never a
//! failed statement.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text is refused. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must be at most {0} characters")]
    TooLong(usize),
    #[error("must not contain control characters")]
    Control,
}

/// Checks `s` against the rules of caller text of at most `max` characters.
pub fn check(s: &str, max: usize) -> Result<(), TextError> {
    // Bytes first: no UTF-8 character is shorter than a byte, so a string
    // within `max` bytes is within `max` characters without counting.
    if s.len() > max && s.chars().count() > max {
        return Err(TextError::TooLong(max));
    }
    if s.chars().any(char::is_control) {
        return Err(TextError::Control);
    }
    Ok(())
}

/// A string of at most `MAX` characters, none of them a control character
/// (Unicode category Cc: NUL, tab, line breaks, escape, DEL, C1). It may
/// be empty: whether a field may be is the domain's rule.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text<const MAX: usize>(String);

/// Short names: codes, editions, identifiers a caller chooses.
pub type Name = Text<200>;
/// Free text a person writes: reasons, remarks, order references.
pub type Note = Text<1000>;

/// A caller text in an OpenAPI document: a string of at most `MAX`
/// characters, one component per bound (`Text1024`).
impl<const MAX: usize> utoipa::PartialSchema for Text<MAX> {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(MAX))
            .description(Some("Text without control characters."))
            .into()
    }
}

impl<const MAX: usize> utoipa::ToSchema for Text<MAX> {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Owned(format!("Text{MAX}"))
    }
}

impl<const MAX: usize> Text<MAX> {
    pub fn parse(s: impl Into<String>) -> Result<Self, TextError> {
        let s = s.into();
        check(&s, MAX)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Texts as plain strings (what events and states hold).
pub fn strings<const MAX: usize>(texts: impl IntoIterator<Item = Text<MAX>>) -> Vec<String> {
    texts.into_iter().map(String::from).collect()
}

impl<const MAX: usize> Deref for Text<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> AsRef<str> for Text<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Borrow<str> for Text<MAX> {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> fmt::Debug for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<const MAX: usize> fmt::Display for Text<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> From<Text<MAX>> for String {
    fn from(t: Text<MAX>) -> String {
        t.0
    }
}

impl<const MAX: usize> TryFrom<String> for Text<MAX> {
    type Error = TextError;
    fn try_from(s: String) -> Result<Self, TextError> {
        Self::parse(s)
    }
}

impl<const MAX: usize> TryFrom<&str> for Text<MAX> {
    type Error = TextError;
    fn try_from(s: &str) -> Result<Self, TextError> {
        Self::parse(s)
    }
}

impl<const MAX: usize> PartialEq<str> for Text<MAX> {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl<const MAX: usize> PartialEq<&str> for Text<MAX> {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl<const MAX: usize> PartialEq<String> for Text<MAX> {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl<const MAX: usize> PartialEq<Text<MAX>> for String {
    fn eq(&self, other: &Text<MAX>) -> bool {
        self == &other.0
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(s).map_err(serde::de::Error::custom)
    }
}

/// Where a JSON document holds a control character in a string (a key or a
/// value): `Some(path)` of the first such string (`payload.items[2].sku`,
/// empty when the document is not valid JSON), `None` when it holds none.
///
/// Every caller document is checked with this before it is used, so a
/// field still typed `String` cannot carry a NUL byte into a `jsonb`
/// column either. The scan is over bytes and cheap; the document is only
/// parsed again, to name the field, when something was found.
pub fn control_in_json(bytes: &[u8]) -> Option<String> {
    if !has_control(bytes) {
        return None;
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let mut path = String::new();
    Some(if find_control(&value, &mut path) {
        path
    } else {
        String::new()
    })
}

/// [`control_in_json`] of a parsed document: the path of the first string
/// (key or value) holding a control character.
pub fn control_in_value(value: &serde_json::Value) -> Option<String> {
    let mut path = String::new();
    find_control(value, &mut path).then_some(path)
}

/// Control characters inside JSON strings: escaped C0 and C1 (`\n`,
/// `\u0000`, `\u009f`, any case), raw DEL and raw C1 (UTF-8 `C2 80`–`C2 9F`). Raw C0
/// bytes inside a string are invalid JSON, refused by the parser already.
fn has_control(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                if matches!(bytes.get(i + 1), Some(b'b' | b'f' | b'n' | b'r' | b't')) {
                    return true;
                }
                if bytes.get(i + 1) == Some(&b'u') {
                    if let Some(hex) = bytes.get(i + 2..i + 6) {
                        let code = std::str::from_utf8(hex)
                            .ok()
                            .and_then(|h| u32::from_str_radix(h, 16).ok());
                        if code.and_then(char::from_u32).is_some_and(char::is_control) {
                            return true;
                        }
                    }
                }
                // Skip the escaped character, so `\\u0000` is text.
                i += 2;
                continue;
            }
            0x7f => return true,
            0xc2 if bytes.get(i + 1).is_some_and(|b| (0x80..=0x9f).contains(b)) => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

fn find_control(value: &serde_json::Value, path: &mut String) -> bool {
    use serde_json::Value;
    let bad = |s: &str| s.chars().any(char::is_control);
    match value {
        Value::String(s) => bad(s),
        Value::Array(items) => items.iter().enumerate().any(|(i, v)| {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            let found = find_control(v, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        Value::Object(map) => map.iter().any(|(k, v)| {
            let len = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            // A bad key is named by its own (escaped) spelling.
            path.push_str(&k.escape_debug().to_string());
            let found = bad(k) || find_control(v, path);
            if !found {
                path.truncate(len);
            }
            found
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_in_json_are_found_and_named() {
        assert_eq!(control_in_json(br#"{"a":"x","b":[1,"ok"]}"#), None);
        assert_eq!(control_in_json(br#"{"a":"x\\u0000"}"#), None);
        assert_eq!(control_in_json(b"{\"a\":\"tab\\ttab\"}"), Some("a".into()));
        assert_eq!(
            control_in_json(br#"{"a":{"b":["x","y\u0000"]}}"#),
            Some("a.b[1]".into())
        );
        assert_eq!(
            control_in_json(br#"{"a":{"k\u001f":1}}"#),
            Some("a.k\\u{1f}".into())
        );
        assert_eq!(control_in_json(br#"{"a":"\u009F"}"#), Some("a".into()));
        assert_eq!(
            control_in_json("{\"a\":\"\u{85}\"}".as_bytes()),
            Some("a".into())
        );
        assert_eq!(control_in_json(b"{\"a\":\"\x7f\"}"), Some("a".into()));
        // Non-control escapes and characters pass.
        assert_eq!(control_in_json(br#"{"a":"\u00e9\u4e2d\""}"#), None);
        assert_eq!(control_in_json("{\"a\":\"é中\"}".as_bytes()), None);
    }

    #[test]
    fn control_characters_and_overlong_text_are_refused() {
        assert_eq!(Text::<5>::parse("a\0b"), Err(TextError::Control));
        assert_eq!(Text::<5>::parse("a\nb"), Err(TextError::Control));
        assert_eq!(Text::<5>::parse("a\u{7f}"), Err(TextError::Control));
        assert_eq!(Text::<5>::parse("a\u{85}"), Err(TextError::Control));
        assert_eq!(Text::<5>::parse("abcdef"), Err(TextError::TooLong(5)));
        // Characters, not bytes.
        assert!(Text::<5>::parse("ééééé").is_ok());
        assert!(Text::<5>::parse("").is_ok());
    }

    #[test]
    fn serde_refuses_what_parse_refuses() {
        let err = serde_json::from_str::<Text<5>>("\"a\\u0000\"").expect_err("refused");
        assert!(err.to_string().contains("control characters"), "{err}");
        let t: Text<5> = serde_json::from_str("\"abc\"").expect("valid");
        assert_eq!(t, "abc");
        assert_eq!(serde_json::to_string(&t).expect("json"), "\"abc\"");
    }
}
