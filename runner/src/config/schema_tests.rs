//! Keeps `run.example.toml` in step with the schema: every key the raw
//! structs accept must be documented there (as a key or a commented-out
//! key under the right table), and every key documented must exist.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde::de::value::{Error, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::forward_to_deserialize_any;

use super::raw::RawConfig;

const EXAMPLE: &str = include_str!("../../run.example.toml");

/// A deserializer that answers every struct with all its fields and every
/// value with a harmless one, recording the dotted path of each key asked
/// for. Arrays of tables appear without an index (`path_mapping.from`).
struct Recorder<'a> {
    path: String,
    keys: &'a RefCell<BTreeSet<String>>,
}

impl<'de> de::Deserializer<'de> for Recorder<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(de::Error::custom(format!(
            "{}: the recorder cannot guess this type",
            self.path
        )))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            recorder: self,
            fields,
            next: 0,
        })
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement(Some(self)))
    }

    /// A free-form map (`plex.container_env`) has no keys of the schema's.
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(Fields {
            recorder: self,
            fields: &[],
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let first: StrDeserializer<Error> = variants[0].into_deserializer();
        visitor.visit_enum(first)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(false)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u16(1)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u32(1)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_u64(1)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_f64(0.5)
    }

    /// Every string is a duration that humantime accepts too.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("1h")
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("1h")
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u128 f32 char bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct identifier ignored_any
    }
}

struct Fields<'a> {
    recorder: Recorder<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        let key: StrDeserializer<Error> = field.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self.fields[self.next];
        self.next += 1;
        let path = if self.recorder.path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.recorder.path)
        };
        self.recorder.keys.borrow_mut().insert(path.clone());
        seed.deserialize(Recorder {
            path,
            keys: self.recorder.keys,
        })
    }
}

struct OneElement<'a>(Option<Recorder<'a>>);

impl<'de> de::SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.0.take().map(|r| seed.deserialize(r)).transpose()
    }
}

fn schema_keys() -> BTreeSet<String> {
    let keys = RefCell::new(BTreeSet::new());
    let recorder = Recorder {
        path: String::new(),
        keys: &keys,
    };
    <RawConfig as serde::Deserialize>::deserialize(recorder)
        .expect("the recorder walks the whole schema");
    keys.into_inner()
}

/// Tables and keys the example documents, commented out or not.
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = header.trim_start_matches('[').to_string();
            keys.insert(table.clone());
            continue;
        }
        let Some((key, _)) = line.split_once(" = ") else {
            continue;
        };
        if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            keys.insert(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
    }
    keys
}

#[test]
fn the_recorder_finds_nested_keys() {
    let keys = schema_keys();
    for k in [
        "run_id",
        "s3.bucket",
        "media.s3.region",
        "library.type",
        "deadlines.scan_per_type.photo",
    ] {
        assert!(keys.contains(k), "{k} missing from {keys:?}");
    }
}

#[test]
fn every_schema_key_is_documented_in_the_example() {
    let documented = documented_keys(EXAMPLE);
    let undocumented: Vec<_> = schema_keys().difference(&documented).cloned().collect();
    assert!(
        undocumented.is_empty(),
        "run.example.toml lacks {undocumented:?}"
    );
}

#[test]
fn every_documented_key_exists() {
    let schema = schema_keys();
    let unknown: Vec<_> = documented_keys(EXAMPLE)
        .difference(&schema)
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "run.example.toml documents unknown keys {unknown:?}"
    );
}
