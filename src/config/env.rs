//! The environment as a configuration layer: every key of `config/default.toml` is settable as
//! `BR_<SECTION>__<KEY>` (`BR_SERVER__LISTEN`, `BR_NOTIFY__SLACK_TOKEN`), plus short aliases for
//! the common secrets (`BR_WEBHOOK_TOKEN`, `BR_API_TOKEN`, `BR_ADMIN_TOKEN`, `DATABASE_URL`).
//!
//! A variable of that form that names no key stops start-up, naming the variable, exactly as an
//! unknown key in a file does: a typo must never leave a cluster silently running on defaults.
//! Values are read as the type the key has in the defaults, so a token of digits stays a string
//! and `BR_SERVER__BODY_LIMIT_BYTES=big` is refused with the variable's name.

use std::collections::BTreeMap;
use std::ffi::OsString;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::{ConfigError, DEFAULT_CONFIG};

/// Every variable the service reads starts with this (aliases aside).
pub const PREFIX: &str = "BR_";

/// Short names for the keys people set most, checked after the `BR_<SECTION>__<KEY>` form (so an
/// alias wins when both are set).
pub const ALIASES: &[(&str, &str, &str)] = &[
    ("BR_WEBHOOK_TOKEN", "auth", "webhook_token"),
    ("BR_API_TOKEN", "auth", "api_token"),
    ("BR_ADMIN_TOKEN", "auth", "admin_token"),
    ("DATABASE_URL", "database", "url"),
];

/// The variable that sets `section.key` in the `BR_<SECTION>__<KEY>` form.
pub fn var_name(section: &str, key: &str) -> String {
    format!(
        "{PREFIX}{}__{}",
        section.to_ascii_uppercase(),
        key.to_ascii_uppercase()
    )
}

/// The keys of the built-in defaults with their default values: section → key → value.
type Known = BTreeMap<String, BTreeMap<String, Value>>;

fn known_keys() -> Result<Known, ConfigError> {
    use figment::providers::{Format, Toml};
    figment::Figment::from(Toml::string(DEFAULT_CONFIG))
        .extract::<Known>()
        .map_err(|e| ConfigError::Invalid(format!("built-in defaults: {e}")))
}

/// The environment layer: built from the variables given, it checks each `BR_*` one.
#[derive(Debug, Clone, Default)]
pub struct EnvLayer {
    data: Dict,
    /// `section.key` → the variable that set it, for error messages.
    sources: BTreeMap<String, String>,
}

impl EnvLayer {
    /// Reads the process environment. A `BR_*` variable that is not valid Unicode is an error.
    pub fn from_process() -> Result<Self, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str().map(str::to_owned) else {
                continue;
            };
            if !name.starts_with(PREFIX) && !ALIASES.iter().any(|(alias, ..)| *alias == name) {
                continue;
            }
            let value = value.into_string().map_err(|v: OsString| {
                ConfigError::Invalid(format!(
                    "environment variable {name}: not valid UTF-8 ({} bytes)",
                    v.len()
                ))
            })?;
            vars.push((name, value));
        }
        Self::from_vars(vars)
    }

    /// Builds the layer from `(name, value)` pairs; other variables are ignored.
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let known = known_keys()?;
        let mut layer = EnvLayer::default();
        let mut aliased = Vec::new();
        let mut vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        // Deterministic: the same environment always gives the same error first.
        vars.sort();
        for (name, value) in vars {
            if let Some((_, section, key)) = ALIASES.iter().find(|(alias, ..)| *alias == name) {
                aliased.push((name, *section, *key, value));
                continue;
            }
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                check_near_miss(&name, rest, &known)?;
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let Some(default) = known.get(&section).and_then(|keys| keys.get(&key)) else {
                return Err(unknown(&name, &section, &key, &known));
            };
            layer.set(&name, &section, &key, typed(&name, &value, default)?);
        }
        for (name, section, key, value) in aliased {
            let default = known
                .get(section)
                .and_then(|keys| keys.get(key))
                .ok_or_else(|| {
                    ConfigError::Invalid(format!("alias {name} names no key {section}.{key}"))
                })?;
            layer.set(&name, section, key, typed(&name, &value, default)?);
        }
        Ok(layer)
    }

    fn set(&mut self, name: &str, section: &str, key: &str, value: Value) {
        let entry = self
            .data
            .entry(section.to_owned())
            .or_insert_with(|| Value::from(Dict::new()));
        if let Value::Dict(_, dict) = entry {
            dict.insert(key.to_owned(), value);
        }
        self.sources
            .insert(format!("{section}.{key}"), name.to_owned());
    }

    /// The variables that set something, by `section.key`.
    pub fn sources(&self) -> &BTreeMap<String, String> {
        &self.sources
    }
}

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        let sources = self.sources.clone();
        Metadata::named("environment variable").interpolater(move |_: &Profile, path: &[&str]| {
            let key = path.join(".");
            match sources.get(&key) {
                Some(var) => var.clone(),
                None if path.len() == 2 => var_name(path[0], path[1]),
                None => key,
            }
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.data.clone()))
    }
}

/// Reads `raw` as the type the key's default has.
fn typed(name: &str, raw: &str, default: &Value) -> Result<Value, ConfigError> {
    let bad = |what: &str| {
        Err(ConfigError::Invalid(format!(
            "environment variable {name}: expected {what}, got {raw:?}"
        )))
    };
    match default {
        Value::String(..) | Value::Char(..) => Ok(Value::from(raw.to_owned())),
        Value::Bool(..) => match raw.trim() {
            "true" => Ok(Value::from(true)),
            "false" => Ok(Value::from(false)),
            _ => bad("true or false"),
        },
        Value::Num(..) => match raw.parse::<Value>() {
            Ok(v @ Value::Num(..)) => Ok(v),
            _ => bad("a number"),
        },
        Value::Array(..) => {
            let trimmed = raw.trim();
            if trimmed.starts_with('[') {
                match trimmed.parse::<Value>() {
                    Ok(v @ Value::Array(..)) => Ok(v),
                    _ => bad("a list, [\"a\", \"b\"] or a,b"),
                }
            } else {
                // a,b,c — the form people type; an empty value is the empty list.
                let items: Vec<Value> = trimmed
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::from(s.to_owned()))
                    .collect();
                Ok(Value::from(items))
            }
        }
        Value::Dict(..) | Value::Empty(..) => bad("a value this variable cannot carry"),
    }
}

fn unknown(name: &str, section: &str, key: &str, known: &Known) -> ConfigError {
    let hint = match known.get(section) {
        Some(keys) => format!(
            "[{section}] has no key {key:?}; its keys: {}",
            keys.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        None => format!(
            "there is no section {section:?}; sections: {}",
            known.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    ConfigError::Invalid(format!(
        "unknown environment variable {name}: {hint} (BR_<SECTION>__<KEY>, two underscores)"
    ))
}

/// `BR_SERVER_LISTEN` (one underscore) would silently do nothing: refuse it with the right name.
fn check_near_miss(name: &str, rest: &str, known: &Known) -> Result<(), ConfigError> {
    let lower = rest.to_ascii_lowercase();
    for (section, keys) in known {
        if let Some(key) = lower
            .strip_prefix(section.as_str())
            .and_then(|k| k.strip_prefix('_'))
        {
            if keys.contains_key(key) {
                return Err(ConfigError::Invalid(format!(
                    "environment variable {name} sets nothing: did you mean {}?",
                    var_name(section, key)
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::EnvLayer;
    use crate::config::{Overrides, Settings};

    /// Every `env` entry (name, literal value) of every manifest under `deploy/`.
    fn deploy_env() -> Vec<(PathBuf, String, Option<String>)> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read deploy/") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml")
                ) {
                    out.push(path);
                }
            }
        }
        fn visit(
            v: &serde_yaml::Value,
            file: &Path,
            out: &mut Vec<(PathBuf, String, Option<String>)>,
        ) {
            match v {
                serde_yaml::Value::Mapping(m) => {
                    for (k, v) in m {
                        if k.as_str() == Some("env") {
                            for e in v.as_sequence().into_iter().flatten() {
                                if let Some(name) = e.get("name").and_then(|n| n.as_str()) {
                                    let value =
                                        e.get("value").and_then(|v| v.as_str()).map(str::to_owned);
                                    out.push((file.to_owned(), name.to_owned(), value));
                                }
                            }
                        }
                        visit(v, file, out);
                    }
                }
                serde_yaml::Value::Sequence(s) => s.iter().for_each(|v| visit(v, file, out)),
                _ => {}
            }
        }
        let mut files = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"),
            &mut files,
        );
        let mut out = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read manifest");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                if let Ok(v) = <serde_yaml::Value as serde::Deserialize>::deserialize(doc) {
                    visit(&v, &file, &mut out);
                }
            }
        }
        out
    }

    /// The key the docs say each variable sets (written out here, not taken from the loader).
    fn documented_key(name: &str) -> String {
        match name {
            "BR_WEBHOOK_TOKEN" => "auth.webhook_token".into(),
            "BR_API_TOKEN" => "auth.api_token".into(),
            "BR_ADMIN_TOKEN" => "auth.admin_token".into(),
            "DATABASE_URL" => "database.url".into(),
            _ => {
                let rest = name.strip_prefix("BR_").unwrap_or_else(|| {
                    panic!("{name}: the service reads only BR_* variables and DATABASE_URL")
                });
                let (section, key) = rest
                    .split_once("__")
                    .unwrap_or_else(|| panic!("{name} is not BR_<SECTION>__<KEY>"));
                format!("{}.{}", section.to_lowercase(), key.to_lowercase())
            }
        }
    }

    /// Tests that set process variables take this lock (the loader reads the real environment).
    static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn every_variable_the_manifests_set_reaches_its_key_with_its_value() {
        let vars = deploy_env();
        assert!(
            vars.iter().any(|(_, n, _)| n == "BR_NOTIFY__SLACK_TOKEN"),
            "found the Deployment's env: {vars:?}"
        );
        let _guard = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let mut expected = Vec::new();
        for (i, (file, name, literal)) in vars.iter().enumerate() {
            // Secrets come from secretKeyRef: give each a distinct, well-formed stand-in value.
            let value = literal.clone().unwrap_or_else(|| {
                if name.contains("DATABASE_URL") || name.ends_with("TARGET_URL") {
                    format!("postgres://probe{i}@db.example:5432/x")
                } else if name.ends_with("_URL") {
                    format!("https://probe{i}.example/hook")
                } else {
                    format!("probe-value-{i}")
                }
            });
            std::env::set_var(name, &value);
            expected.push((file, name, documented_key(name), value));
        }
        let loaded = Settings::figment(None, &Overrides::default());
        for (_, name, _) in &vars {
            std::env::remove_var(name);
        }
        let fig = loaded.expect("the manifests' environment loads");
        fig.extract::<Settings>()
            .expect("every variable names a real key of the right type");
        for (file, name, key, value) in expected {
            let got = fig.find_value(&key).ok().and_then(|v| v.into_string());
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "{name} (in {}) must set {key}",
                file.display()
            );
        }
    }

    /// Every `BR_*` name the code, the defaults file, the README or the book tells people to set.
    fn mentioned_names() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("README.md"), root.join("config/default.toml")];
        for e in std::fs::read_dir(root.join("docs/src")).expect("read docs/src/") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
        fn rs(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).expect("read src/") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    rs(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        rs(&root.join("src"), &mut files);
        let mut names = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            let bytes = text.as_bytes();
            let mut i = 0;
            while let Some(at) = text[i..].find("BR_") {
                let start = i + at;
                let mut end = start + 3;
                while end < bytes.len()
                    && (bytes[end].is_ascii_uppercase()
                        || bytes[end].is_ascii_digit()
                        || bytes[end] == b'_')
                {
                    end += 1;
                }
                let before = start.checked_sub(1).map(|b| bytes[b]);
                if end > start + 3 && !before.is_some_and(|b| b.is_ascii_alphanumeric()) {
                    names.push((f.display().to_string(), text[start..end].to_owned()));
                }
                i = end;
            }
        }
        names
    }

    #[test]
    fn every_variable_the_code_and_the_docs_name_sets_a_real_key() {
        // Deliberately wrong examples (the docs show how they are refused), and a variable
        // a unit test hands to openssl.
        let examples = ["BR_SERVER__LISTN", "BR_SERVER_LISTEN", "BR_TEST_ENC_KEY"];
        let names = mentioned_names();
        assert!(names
            .iter()
            .any(|(_, n)| n == "BR_RESTORE_TEST__TARGET_URL"));
        for (file, name) in names {
            if examples.contains(&name.as_str()) || name.ends_with('_') {
                continue;
            }
            let layer = EnvLayer::from_vars([(name.as_str(), "x")]);
            // A numeric or boolean key refuses "x" naming the variable: it still exists.
            match layer {
                Ok(l) => assert_eq!(l.sources().len(), 1, "{name} in {file} sets nothing"),
                Err(e) => assert!(
                    e.to_string().contains("expected"),
                    "{name} in {file} names no key: {e}"
                ),
            }
        }
    }

    #[test]
    fn values_are_read_as_the_type_of_their_key() {
        let l = EnvLayer::from_vars([
            ("BR_AUTH__API_TOKEN", "00123"),
            ("BR_SERVER__BODY_LIMIT_BYTES", "2048"),
            ("BR_PROBES__ENABLED", "s3, iam"),
            ("BR_TARGET__DATABASES", "[\"a\", \"b\"]"),
            ("BR_S3__FORCE_PATH_STYLE", "true"),
            ("PATH", "/bin"),
        ])
        .unwrap();
        let fig = figment::Figment::new().merge(l);
        assert_eq!(
            fig.find_value("auth.api_token")
                .unwrap()
                .into_string()
                .as_deref(),
            Some("00123")
        );
        assert_eq!(
            fig.find_value("server.body_limit_bytes").unwrap().to_u128(),
            Some(2048)
        );
        let list = |k: &str| -> Vec<String> { fig.extract_inner(k).unwrap() };
        assert_eq!(list("probes.enabled"), ["s3", "iam"]);
        assert_eq!(list("target.databases"), ["a", "b"]);
        assert_eq!(
            fig.find_value("s3.force_path_style").unwrap().to_bool(),
            Some(true)
        );
        let err = EnvLayer::from_vars([("BR_S3__FORCE_PATH_STYLE", "yes")]).unwrap_err();
        assert!(err.to_string().contains("BR_S3__FORCE_PATH_STYLE"), "{err}");
        // The alias wins over the long form.
        let l = EnvLayer::from_vars([
            ("BR_WEBHOOK_TOKEN", "short"),
            ("BR_AUTH__WEBHOOK_TOKEN", "long"),
        ])
        .unwrap();
        let fig = figment::Figment::new().merge(l);
        assert_eq!(
            fig.find_value("auth.webhook_token")
                .unwrap()
                .into_string()
                .as_deref(),
            Some("short")
        );
    }
}
