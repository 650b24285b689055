//! `GET /:/prefs` and `PUT /:/prefs?Id=value&...` (all or nothing: one
//! unknown id or bad value rejects the whole request, lessons.md rule 15).

use axum::http::HeaderMap;

use super::{Shared, blocking, ok};
use crate::plexdouble::pms::prefs::{self, Check, Kind, PREFS, PrefDef};
use crate::plexdouble::render::{Element, Format, Value};
use crate::plexdouble::web::{ApiError, ApiResult, Params};

fn typed(def: &PrefDef, stored: &str) -> Value {
    match def.kind {
        Kind::Bool => Value::Bool(prefs::is_true(stored)),
        Kind::Int => stored
            .parse()
            .map_or_else(|_| Value::Str(stored.into()), Value::Int),
        Kind::Text => Value::Str(stored.into()),
    }
}

pub async fn get(state: Shared, headers: HeaderMap) -> ApiResult {
    let settings: Vec<Element> = {
        let prefs = state.prefs();
        PREFS
            .iter()
            .map(|def| {
                let setting = Element::new("Setting")
                    .attr("id", def.id)
                    .attr("label", def.label)
                    .attr("summary", "")
                    .attr("type", def.kind.name())
                    .attr("default", typed(def, def.default))
                    .attr("value", typed(def, &prefs.value(def)))
                    .attr("hidden", def.hidden)
                    .attr("advanced", def.advanced)
                    .attr("group", def.group);
                match def.check {
                    Check::Choices(choices) => {
                        let shown: Vec<String> = choices
                            .iter()
                            .map(|(v, label)| format!("{v}:{label}"))
                            .collect();
                        setting.attr("enumValues", shown.join("|"))
                    }
                    _ => setting,
                }
            })
            .collect()
    };
    Ok(Format::of(&headers).reply(&Element::container(settings)))
}

pub async fn put(state: Shared, query: Option<String>) -> ApiResult {
    let params = Params::parse(query.as_deref());
    let mut changes = Vec::new();
    for (id, value) in &params.0 {
        // Client identification rides along in the query too.
        if id.starts_with("X-Plex-") {
            continue;
        }
        let def = prefs::find(id)
            .ok_or_else(|| ApiError::bad_request(format!("unknown pref id {id:?}")))?;
        let stored = prefs::normalise(def, value).map_err(ApiError::bad_request)?;
        changes.push((def.id, stored));
    }
    if changes.is_empty() {
        return Err(ApiError::bad_request("no pref to set"));
    }
    blocking(&state, move |s| {
        let mut prefs = s.prefs();
        for (id, stored) in &changes {
            prefs.set(id, stored.clone());
        }
        prefs.save()?;
        let shown: Vec<String> = changes.iter().map(|(id, v)| format!("{id}={v}")).collect();
        drop(prefs);
        s.log.info(format!("Prefs: set {}", shown.join(", ")));
        Ok(())
    })
    .await?;
    ok()
}
