//! Renders the cloud-init templates in `cloud-init/`: `{{name}}` is
//! replaced by its value. A placeholder alone on its line takes a
//! multi-line value, indented like the YAML block scalar it fills. Every
//! placeholder must be given and every value used: a template and its
//! caller cannot drift apart silently.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

/// The template of a run's user data.
pub const RUN_TEMPLATE: &str = include_str!("../../cloud-init/run.yaml");
/// The template of the image builder's user data.
pub const BUILD_TEMPLATE: &str = include_str!("../../cloud-init/build.yaml");

/// Indentation of block-scalar content in the templates (`content: |`).
const BLOCK_INDENT: &str = "      ";

/// Fills `template` with `values`.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut used = std::collections::BTreeSet::new();
    let mut out = String::with_capacity(template.len());
    for line in template.lines() {
        let trimmed = line.trim();
        if let Some(name) = placeholder(trimmed).filter(|_| trimmed.len() == line.len()) {
            // A block: each line of the value, indented.
            let value = lookup(values, name)?;
            used.insert(name);
            for value_line in value.lines() {
                out.push_str(BLOCK_INDENT);
                out.push_str(value_line);
                out.push('\n');
            }
            continue;
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..]
                .find("}}")
                .map(|e| start + e + 2)
                .ok_or_else(|| anyhow::anyhow!("unclosed placeholder in {line:?}"))?;
            let name = &rest[start + 2..end - 2];
            let value = lookup(values, name)?;
            if value.contains('\n') {
                bail!("{{{{{name}}}}} is inline in the template but its value has several lines");
            }
            used.insert(name);
            out.push_str(&rest[..start]);
            out.push_str(value);
            rest = &rest[end..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    if let Some(unused) = values.keys().find(|k| !used.contains(*k)) {
        bail!("the template has no {{{{{unused}}}}}");
    }
    Ok(out)
}

fn placeholder(text: &str) -> Option<&str> {
    text.strip_prefix("{{")?.strip_suffix("}}")
}

fn lookup<'a>(values: &'a BTreeMap<&str, String>, name: &str) -> Result<&'a str> {
    match values.get(name) {
        Some(v) => Ok(v),
        None => bail!("no value for {{{{{name}}}}} in the template"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn blocks_are_indented_and_inline_values_replaced() {
        let out = render(
            "# run {{id}}\n    content: |\n{{body}}\nend\n",
            &values(&[("id", "r1"), ("body", "a = 1\n\n[b]\nc = \"x\"")]),
        )
        .unwrap();
        assert_eq!(
            out,
            "# run r1\n    content: |\n      a = 1\n      \n      [b]\n      c = \"x\"\nend\n"
        );
    }

    #[test]
    fn missing_and_unused_values_are_errors() {
        let err = render("{{a}} {{b}}\n", &values(&[("a", "1")])).unwrap_err();
        assert!(err.to_string().contains("{{b}}"), "{err}");
        let err = render("{{a}}\n", &values(&[("a", "1"), ("z", "2")])).unwrap_err();
        assert!(err.to_string().contains("{{z}}"), "{err}");
        let err = render("x {{a}}\n", &values(&[("a", "1\n2")])).unwrap_err();
        assert!(err.to_string().contains("several lines"), "{err}");
    }

    #[test]
    fn the_run_template_fills_its_blocks() {
        let run = render(
            RUN_TEMPLATE,
            &values(&[
                ("run_id", "r1"),
                ("run_toml", "run_id = \"r1\"\n\n[s3]\nbucket = \"b\""),
                ("secrets_env", "A=1\nB=2"),
                ("plextv_env", "PLEX_TOKEN=t"),
            ]),
        )
        .unwrap();
        assert!(run.starts_with("#cloud-config\n"));
        assert!(
            run.contains("    content: |\n      run_id = \"r1\"\n"),
            "{run}"
        );
        assert!(run.contains("      A=1\n      B=2\n"), "{run}");
        assert!(
            run.contains("path: /etc/plex-burst/plextv.env\n    owner: root:root\n    permissions: \"0600\"\n    content: |\n      PLEX_TOKEN=t\n"),
            "{run}"
        );
    }
}
