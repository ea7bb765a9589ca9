//! The book in `docs/` kept in step with what it documents: the configuration reference
//! (`docs/src/configuration.md`) names every key of `config/default.toml` with the default that
//! file gives it, and no key the file does not have. (Links are checked by `scripts/book.sh`,
//! on the built book.)

use std::collections::BTreeMap;

use figment::providers::{Format, Toml};
use figment::Figment;
use serde_json::Value;

const REFERENCE: &str = "docs/src/configuration.md";

fn read(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

/// A TOML document as JSON values (through the same TOML reader the service's settings use).
fn toml(text: &str) -> Result<Value, Box<figment::Error>> {
    Figment::from(Toml::string(text))
        .extract()
        .map_err(Box::new)
}

/// Every key of the defaults file as a dotted path, with its value. Tables are followed down to
/// three parts (`manual_backup.resources.requests`); a table deeper than that is one value (the
/// resource quantities, whose keys are Kubernetes' names, not settings).
fn default_keys() -> BTreeMap<String, Value> {
    fn walk(prefix: &str, v: &Value, depth: usize, out: &mut BTreeMap<String, Value>) {
        match v {
            Value::Object(map) if depth < 3 => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&path, v, depth + 1, out);
                }
            }
            _ => {
                out.insert(prefix.to_owned(), v.clone());
            }
        }
    }
    let doc = toml(&read("config/default.toml")).expect("config/default.toml is TOML");
    let mut out = BTreeMap::new();
    walk("", &doc, 0, &mut out);
    out
}

/// One row of a key table in the reference: `| `section.key` | `default` | meaning |`.
struct Row {
    line: usize,
    key: String,
    default: String,
}

/// The rows whose first cell is a dotted key in backticks (other tables have other first cells).
fn reference_rows(md: &str) -> Vec<Row> {
    let key = regex::Regex::new(r"^`([a-z0-9_]+(?:\.[a-z0-9_]+){1,2})`$").expect("a regex");
    md.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let cells: Vec<&str> = line.split(" | ").map(str::trim).collect();
            let first = cells.first()?.strip_prefix("| ")?;
            let k = key.captures(first)?.get(1)?.as_str().to_owned();
            Some(Row {
                line: i + 1,
                key: k,
                default: cells.get(1).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

#[test]
fn every_key_of_the_defaults_file_is_in_the_configuration_reference() {
    let keys = default_keys();
    assert!(
        keys.len() > 100 && keys.contains_key("server.listen"),
        "read the keys of config/default.toml: {:?}",
        keys.keys().collect::<Vec<_>>()
    );
    let rows = reference_rows(&read(REFERENCE));
    let missing: Vec<&String> = keys
        .keys()
        .filter(|k| !rows.iter().any(|r| &r.key == *k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys of config/default.toml with no row in {REFERENCE} (add `| `key` | `default` | meaning |`): {missing:?}"
    );
}

#[test]
fn the_configuration_reference_names_only_real_keys_each_once_with_its_default() {
    let keys = default_keys();
    let rows = reference_rows(&read(REFERENCE));
    assert!(
        rows.len() > 100,
        "found the reference's rows: {}",
        rows.len()
    );
    let mut wrong = Vec::new();
    let mut seen = BTreeMap::new();
    for row in &rows {
        let at = format!("{REFERENCE}:{}: `{}`", row.line, row.key);
        if let Some(first) = seen.insert(row.key.clone(), row.line) {
            wrong.push(format!("{at} has a row already, at line {first}"));
        }
        let Some(value) = keys.get(&row.key) else {
            wrong.push(format!("{at} is not a key of config/default.toml"));
            continue;
        };
        let written = row.default.trim_matches('`');
        match toml(&format!("v = {written}")).map(|d| d["v"].clone()) {
            Ok(documented) if &documented == value => {}
            Ok(documented) => wrong.push(format!(
                "{at}: the default column says {documented}, config/default.toml has {value}"
            )),
            Err(e) => wrong.push(format!(
                "{at}: the default column `{written}` is not a TOML value: {e}"
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
