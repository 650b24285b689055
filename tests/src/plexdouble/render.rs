//! Plex's two response formats from one element tree: XML by default,
//! JSON when the client sends `Accept: application/json`.
//!
//! JSON follows Plex's shape: `{"MediaContainer": {attrs..., "Child": [...]}}`,
//! children grouped by element name into arrays (or a single object for
//! elements Plex renders that way, such as an activity's `Context`),
//! integers as JSON numbers and booleans as JSON booleans (XML writes them
//! `1`/`0`), ids such as a section's `key` as strings.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value as Json};

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    Float(f64),
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Str(value.to_string())
    }
}

impl From<String> for Value {
    fn from(value: String) -> Self {
        Value::Str(value)
    }
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Int(value)
    }
}

impl From<bool> for Value {
    fn from(value: bool) -> Self {
        Value::Bool(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Self {
        Value::Float(value)
    }
}

impl Value {
    fn xml_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Bool(b) => if *b { "1" } else { "0" }.to_string(),
            Value::Float(f) => f.to_string(),
        }
    }

    fn json(&self) -> Json {
        match self {
            Value::Str(s) => Json::String(s.clone()),
            Value::Int(n) => Json::from(*n),
            Value::Bool(b) => Json::Bool(*b),
            Value::Float(f) => Json::from(*f),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub name: &'static str,
    pub attrs: Vec<(&'static str, Value)>,
    pub children: Vec<Element>,
    /// Rendered in JSON as one object rather than an array.
    pub single: bool,
    /// The key it is grouped under in JSON, when not its XML name (Plex's
    /// JSON puts `Video`, `Track`, ... items under `Metadata`).
    pub json_name: Option<&'static str>,
}

impl Element {
    pub fn new(name: &'static str) -> Element {
        Element {
            name,
            attrs: Vec::new(),
            children: Vec::new(),
            single: false,
            json_name: None,
        }
    }

    /// A `MediaContainer` whose `size` counts `children`.
    pub fn container(children: Vec<Element>) -> Element {
        let size = children.len() as i64;
        Element::new("MediaContainer")
            .attr("size", size)
            .children(children)
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<Value>) -> Element {
        self.attrs.push((key, value.into()));
        self
    }

    pub fn opt_attr(self, key: &'static str, value: Option<impl Into<Value>>) -> Element {
        match value {
            Some(value) => self.attr(key, value),
            None => self,
        }
    }

    pub fn child(mut self, child: Element) -> Element {
        self.children.push(child);
        self
    }

    pub fn children(mut self, children: impl IntoIterator<Item = Element>) -> Element {
        self.children.extend(children);
        self
    }

    pub fn single(mut self) -> Element {
        self.single = true;
        self
    }

    pub fn json_as(mut self, name: &'static str) -> Element {
        self.json_name = Some(name);
        self
    }

    pub fn to_xml(&self) -> String {
        let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        self.write_xml(&mut out);
        out.push('\n');
        out
    }

    fn write_xml(&self, out: &mut String) {
        out.push('<');
        out.push_str(self.name);
        for (key, value) in &self.attrs {
            out.push(' ');
            out.push_str(key);
            out.push_str("=\"");
            out.push_str(&escape_xml(&value.xml_text()));
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str(" />");
            return;
        }
        out.push('>');
        for child in &self.children {
            out.push('\n');
            child.write_xml(out);
        }
        out.push_str("\n</");
        out.push_str(self.name);
        out.push('>');
    }

    /// `{"<name>": {...}}`.
    pub fn to_json(&self) -> Json {
        let mut root = Map::new();
        root.insert(self.name.to_string(), self.json_body());
        Json::Object(root)
    }

    fn json_body(&self) -> Json {
        let mut body = Map::new();
        for (key, value) in &self.attrs {
            body.insert(key.to_string(), value.json());
        }
        for child in &self.children {
            let rendered = child.json_body();
            let key = child.json_name.unwrap_or(child.name).to_string();
            if child.single {
                body.insert(key, rendered);
                continue;
            }
            match body.entry(key).or_insert_with(|| Json::Array(Vec::new())) {
                Json::Array(items) => items.push(rendered),
                // An attribute and a child share the name: the child wins.
                other => *other = Json::Array(vec![rendered]),
            }
        }
        Json::Object(body)
    }
}

/// Escapes text for an XML attribute value (also safe in content).
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Xml,
    Json,
}

impl Format {
    pub fn of(headers: &HeaderMap) -> Format {
        let json = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.to_ascii_lowercase().contains("application/json"));
        if json { Format::Json } else { Format::Xml }
    }

    /// A 200 response carrying `element`.
    pub fn reply(self, element: &Element) -> Response {
        self.reply_with(StatusCode::OK, element)
    }

    pub fn reply_with(self, status: StatusCode, element: &Element) -> Response {
        let (body, content_type) = match self {
            Format::Xml => (element.to_xml(), "text/xml;charset=utf-8"),
            Format::Json => (element.to_json().to_string(), "application/json"),
        };
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Element {
        Element::container(vec![
            Element::new("Directory")
                .attr("key", "1")
                .attr("title", "Films & \"Séries\" <x>")
                .attr("refreshing", false)
                .child(
                    Element::new("Location")
                        .attr("id", 3_i64)
                        .attr("path", "/m"),
                ),
            Element::new("Directory").attr("key", "2").child(
                Element::new("Context")
                    .attr("librarySectionID", "2")
                    .single(),
            ),
        ])
    }

    #[test]
    fn xml_escapes_and_nests() {
        let xml = sample().to_xml();
        assert!(xml.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MediaContainer size=\"2\">"
        ));
        assert!(
            xml.contains("title=\"Films &amp; &quot;Séries&quot; &lt;x&gt;\""),
            "{xml}"
        );
        assert!(xml.contains("refreshing=\"0\""), "{xml}");
        assert!(xml.contains("<Location id=\"3\" path=\"/m\" />"), "{xml}");
    }

    #[test]
    fn json_groups_children_and_types_values() {
        let json = sample().to_json();
        let container = &json["MediaContainer"];
        assert_eq!(container["size"], 2);
        assert_eq!(container["Directory"][0]["key"], "1");
        assert_eq!(container["Directory"][0]["refreshing"], false);
        assert_eq!(container["Directory"][0]["Location"][0]["id"], 3);
        assert_eq!(
            container["Directory"][1]["Context"]["librarySectionID"],
            "2"
        );
    }
}
