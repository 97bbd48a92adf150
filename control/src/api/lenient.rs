//! [`Lenient`]: a result field that a reader tolerates being absent or of another type.
//!
//! plexctl renders replies from daemons older or newer than itself, so a field it shows must not
//! make the whole reply unreadable when it is missing or has changed type: the cell shows `-`
//! (or the raw value) instead. The daemon always fills such fields; on the wire a `Lenient<T>`
//! is exactly a `T`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A field as read from a reply: the expected value, some other JSON value, or nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Lenient<T> {
    /// The field has the expected type.
    Value(T),
    /// The field is present but not a `T` (kept so it can still be shown).
    Unexpected(Value),
    /// The field is absent.
    #[default]
    Missing,
}

impl<T> Lenient<T> {
    /// The value, if the field had the expected type.
    pub fn get(&self) -> Option<&T> {
        match self {
            Lenient::Value(v) => Some(v),
            _ => None,
        }
    }
}

impl<T: Copy> Lenient<T> {
    /// A copy of the value, if the field had the expected type.
    pub fn copied(&self) -> Option<T> {
        self.get().copied()
    }
}

impl<T> From<T> for Lenient<T> {
    fn from(v: T) -> Self {
        Lenient::Value(v)
    }
}

impl From<&str> for Lenient<String> {
    fn from(v: &str) -> Self {
        Lenient::Value(v.to_string())
    }
}

impl<T: Serialize> Serialize for Lenient<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Lenient::Value(v) => v.serialize(s),
            Lenient::Unexpected(v) => v.serialize(s),
            Lenient::Missing => s.serialize_none(),
        }
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(match T::deserialize(&value) {
            Ok(v) => Lenient::Value(v),
            Err(_) => Lenient::Unexpected(value),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Row {
        name: Lenient<String>,
        size: Lenient<u64>,
    }

    #[test]
    fn serialises_as_the_plain_value() {
        let row = Row {
            name: "M0".into(),
            size: 4096.into(),
        };
        assert_eq!(
            serde_json::to_value(&row).ok(),
            Some(json!({"name": "M0", "size": 4096}))
        );
    }

    #[test]
    fn tolerates_missing_and_mistyped_fields() {
        let row: Row = serde_json::from_value(json!({"name": 5})).expect("lenient");
        assert_eq!(row.name, Lenient::Unexpected(json!(5)));
        assert_eq!(row.size, Lenient::Missing);
        assert_eq!(row.size.copied(), None);
    }
}
