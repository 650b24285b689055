//! The little XML a run reads: attributes of named elements (plex.tv's
//! `devices.xml`, Plex's `Preferences.xml`).

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// The attributes of every element called `name`, in document order.
pub fn elements(text: &str, name: &str) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut reader = Reader::from_str(text);
    let mut found = Vec::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) if e.name().as_ref() == name.as_bytes() => {
                let mut attrs = BTreeMap::new();
                for a in e.attributes() {
                    let a = a.map_err(|e| e.to_string())?;
                    let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
                    let value = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
                    attrs.insert(key, value);
                }
                found.push(attrs);
            }
            Ok(Event::Eof) => return Ok(found),
            Ok(_) => {}
            Err(e) => {
                return Err(format!(
                    "malformed XML at byte {}: {e}",
                    reader.buffer_position()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attributes_of_named_elements() {
        let text = r#"<?xml version="1.0"?><MediaContainer><Device id="7" clientIdentifier="a&amp;b"/><Device id="8"></Device></MediaContainer>"#;
        let devices = elements(text, "Device").unwrap();
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0]["clientIdentifier"], "a&b");
        assert_eq!(devices[1]["id"], "8");
        assert!(elements("<a><b></a>", "b").is_err());
    }
}
