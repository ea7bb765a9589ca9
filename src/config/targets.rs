//! `[[targets]]`: the backup streams one service guards. Each entry names a target, the alert
//! labels that select it (`match`), and overrides of the top-level sections (`[kubernetes]`,
//! `[target]`, `[s3]`, `[iam]`, `[disk]`, `[encryption]`, `[restore_test]`, `[manual_backup]`,
//! `[backup]`, `[pgbackrest]`, `[wal_archive]`)
//! and of the policy file (`policy`). The top-level sections are the defaults every target
//! inherits; each target gets its own complete, validated [`Settings`].
//!
//! Without `[[targets]]` there is one target, named after `kubernetes.namespace`, that takes
//! alerts labelled with that namespace or with no `namespace` label — never an alert that names
//! another namespace.

use std::collections::BTreeMap;
use std::sync::Arc;

use figment::providers::Serialized;
use figment::value::{Dict, Value};
use figment::Figment;
use serde::Deserialize;

use super::{ConfigError, Settings};
use crate::domain::target::{Matcher, Routes};

/// The sections a target may override, each a top-level table of the config.
pub const OVERRIDABLE: [&str; 12] = [
    "kubernetes",
    "target",
    "s3",
    "iam",
    "disk",
    "encryption",
    "restore_test",
    "manual_backup",
    "backup",
    "pgbackrest",
    "cloudnativepg",
    "wal_archive",
];

/// One `[[targets]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetEntry {
    /// `[a-z0-9-]{1,40}`, unique: shown in the API, the CLI, Slack and metrics.
    pub name: String,
    /// Alert labels that select the target: every one present and equal.
    #[serde(rename = "match", default)]
    pub matches: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub kubernetes: Option<Dict>,
    #[serde(default)]
    pub target: Option<Dict>,
    #[serde(default)]
    pub s3: Option<Dict>,
    #[serde(default)]
    pub iam: Option<Dict>,
    #[serde(default)]
    pub disk: Option<Dict>,
    #[serde(default)]
    pub encryption: Option<Dict>,
    #[serde(default)]
    pub restore_test: Option<Dict>,
    #[serde(default)]
    pub manual_backup: Option<Dict>,
    /// `source`: how this target's backups are taken.
    #[serde(default)]
    pub backup: Option<Dict>,
    #[serde(default)]
    pub pgbackrest: Option<Dict>,
    #[serde(default)]
    pub cloudnativepg: Option<Dict>,
    #[serde(default)]
    pub wal_archive: Option<Dict>,
    /// Overrides of the policy file for this target (modes, cooldowns, budgets), as its keys.
    #[serde(default)]
    pub policy: Option<Dict>,
}

impl TargetEntry {
    fn section(&self, name: &str) -> Option<&Dict> {
        match name {
            "kubernetes" => self.kubernetes.as_ref(),
            "target" => self.target.as_ref(),
            "s3" => self.s3.as_ref(),
            "iam" => self.iam.as_ref(),
            "disk" => self.disk.as_ref(),
            "encryption" => self.encryption.as_ref(),
            "restore_test" => self.restore_test.as_ref(),
            "manual_backup" => self.manual_backup.as_ref(),
            "backup" => self.backup.as_ref(),
            "pgbackrest" => self.pgbackrest.as_ref(),
            "cloudnativepg" => self.cloudnativepg.as_ref(),
            "wal_archive" => self.wal_archive.as_ref(),
            _ => None,
        }
    }
}

/// One resolved target: its name, its matcher, its complete settings and its policy overrides.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub matcher: Matcher,
    /// The top-level settings with this target's overrides laid over them (no `targets`).
    pub settings: Arc<Settings>,
    /// Keys of the policy file this target overrides (empty: the policy file as it is).
    pub policy: Dict,
}

/// Whether `name` is a valid target name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Resolves the targets of `settings` (extracted from `fig`): one per `[[targets]]` entry, or the
/// implied one. Names the entry and key of the first problem.
pub(super) fn resolve(fig: &Figment, settings: &Settings) -> Result<Vec<Target>, ConfigError> {
    let entries = &settings.targets;
    if entries.is_empty() {
        let ns = settings.kubernetes.namespace.clone();
        let mut own = settings.clone();
        own.fleet = Vec::new();
        return Ok(vec![Target {
            name: ns.clone(),
            matcher: Matcher {
                labels: BTreeMap::from([("namespace".to_owned(), ns)]),
                or_unlabelled: true,
            },
            settings: Arc::new(own),
            policy: Dict::new(),
        }]);
    }
    let mut out: Vec<Target> = Vec::with_capacity(entries.len());
    // Each target's settings are extracted from the config without the `[[targets]]` array, and
    // the sections' keys are looked up once: with the array, every extraction and every lookup
    // went through every entry again (quadratic: 200 targets took 15.6 s to read in an
    // unoptimised build, 62 ms without; `cargo bench --bench targets`).
    let base = fig
        .clone()
        .merge(Serialized::default("targets", Vec::<Value>::new()));
    let known_keys: BTreeMap<&str, Dict> = OVERRIDABLE
        .iter()
        .map(|&section| {
            let keys = base.find_value(section).ok().and_then(|v| v.into_dict());
            (section, keys.unwrap_or_default())
        })
        .collect();
    for (i, e) in entries.iter().enumerate() {
        let at = format!("targets[{i}]");
        let bad = |key: &str, why: String| {
            Err(ConfigError::Invalid(format!(
                "{at} ({:?}){key}: {why}",
                e.name
            )))
        };
        if !valid_name(&e.name) {
            return bad(
                ".name",
                "must be 1 to 40 lowercase letters, digits or dashes".to_owned(),
            );
        }
        if let Some(other) = out.iter().position(|t| t.name == e.name) {
            return bad(
                ".name",
                format!("the name is already used by targets[{other}]"),
            );
        }
        let matches = match &e.matches {
            Some(m) if !m.is_empty() => m.clone(),
            _ if entries.len() > 1 => {
                return bad(
                    ".match",
                    "needed when there is more than one target: the alert labels that select \
                     this target, e.g. match = { namespace = \"billing\" }"
                        .to_owned(),
                )
            }
            _ => BTreeMap::new(),
        };
        if let Some((k, _)) = matches.iter().find(|(k, v)| k.is_empty() || v.is_empty()) {
            return bad(
                &format!(".match.{k}"),
                "an empty label name or value matches nothing useful".to_owned(),
            );
        }
        if let Some(other) = out.iter().position(|t| t.matcher.labels == matches) {
            return bad(
                ".match",
                format!(
                    "targets[{other}] ({:?}) has the same match: an alert could not tell them apart",
                    out[other].name
                ),
            );
        }
        let mut layer = Dict::new();
        for section in OVERRIDABLE {
            let Some(table) = e.section(section) else {
                continue;
            };
            let known = known_keys.get(section).cloned().unwrap_or_default();
            if let Some(key) = table.keys().find(|k| !known.contains_key(*k)) {
                let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
                names.sort_unstable();
                return bad(
                    &format!(".{section}.{key}"),
                    format!("unknown key; [{section}] has: {}", names.join(", ")),
                );
            }
            layer.insert(section.to_owned(), Value::from(table.clone()));
        }
        let own = base
            .clone()
            .merge(Serialized::defaults(layer))
            .extract::<Settings>()
            .map_err(|err| {
                ConfigError::Invalid(format!(
                    "{at} ({:?}): {}",
                    e.name,
                    err.into_iter()
                        .map(|x| x.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ))
            })
            .and_then(|mut s| {
                s.targets = Vec::new();
                s.validate()
                    .map_err(|err| ConfigError::Invalid(format!("{at} ({:?}): {err}", e.name)))?;
                Ok(s)
            })?;
        out.push(Target {
            name: e.name.clone(),
            matcher: Matcher {
                labels: matches,
                or_unlabelled: false,
            },
            settings: Arc::new(own),
            policy: e.policy.clone().unwrap_or_default(),
        });
    }
    Ok(out)
}

impl Settings {
    /// The routing table of the configured targets.
    pub fn routes(&self) -> Routes {
        Routes {
            targets: self
                .fleet
                .iter()
                .map(|t| (t.name.clone(), t.matcher.clone()))
                .collect(),
        }
    }

    /// The target named `name`.
    pub fn target_named(&self, name: &str) -> Option<&Target> {
        self.fleet.iter().find(|t| t.name == name)
    }

    /// The target a request must name when there are several; with one, that one.
    pub fn pick_target(&self, name: Option<&str>) -> Result<&Target, TargetChoice> {
        match (name, self.fleet.as_slice()) {
            (Some(n), fleet) => {
                fleet
                    .iter()
                    .find(|t| t.name == n)
                    .ok_or_else(|| TargetChoice::Unknown {
                        given: n.to_owned(),
                        configured: self.target_names(),
                    })
            }
            (None, [one]) => Ok(one),
            (None, _) => Err(TargetChoice::Required(self.target_names())),
        }
    }

    /// The configured targets' names, in order.
    pub fn target_names(&self) -> Vec<String> {
        self.fleet.iter().map(|t| t.name.clone()).collect()
    }
}

/// Why a request's target could not be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetChoice {
    #[error("unknown target {given:?}; configured: {}", .configured.join(", "))]
    Unknown {
        given: String,
        configured: Vec<String>,
    },
    #[error("several targets are configured: name one of {}", .0.join(", "))]
    Required(Vec<String>),
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO: &str = r#"
[[targets]]
name = "billing"
match = { namespace = "billing" }
[targets.kubernetes]
namespace = "billing"
backup_cronjob = "billing-pg-backup"
[targets.target]
host = "pg.billing.svc"
databases = ["billing"]
[targets.s3]
prefix = "billing-backups/"
[targets.policy]
dry_run = true

[[targets]]
name = "shop"
match = { namespace = "shop" }
[targets.kubernetes]
namespace = "shop"
[targets.target]
databases = ["orders", "catalog"]
"#;

    fn error(toml: &str) -> String {
        Settings::from_toml(toml).unwrap_err().to_string()
    }

    #[test]
    fn each_target_inherits_the_top_level_sections_and_overrides_its_own_keys() {
        let s = Settings::from_toml(TWO).unwrap();
        assert_eq!(s.target_names(), ["billing", "shop"]);
        let billing = s.target_named("billing").unwrap();
        let k = &billing.settings.kubernetes;
        assert_eq!(
            (k.namespace.as_str(), k.backup_cronjob.as_str()),
            ("billing", "billing-pg-backup")
        );
        assert_eq!(k.backup_secret, "postgres-backup-secret", "inherited");
        assert_eq!(billing.settings.target.databases, ["billing"]);
        assert_eq!(billing.settings.target.host, "pg.billing.svc");
        assert_eq!(billing.settings.s3.prefix, "billing-backups/");
        assert_eq!(billing.settings.s3.region, "us-east-1", "inherited");
        assert_eq!(billing.policy.get("dry_run"), Some(&Value::from(true)));
        let shop = s.target_named("shop").unwrap();
        assert_eq!(shop.settings.kubernetes.backup_cronjob, "postgres-backup");
        assert_eq!(shop.settings.s3.prefix, "postgres-backups/");
        assert!(shop.policy.is_empty());
        assert!(shop.settings.fleet.is_empty() && shop.settings.targets.is_empty());
    }

    #[test]
    fn without_targets_one_is_implied_by_the_namespace_and_takes_unlabelled_alerts() {
        let s = Settings::from_toml("").unwrap();
        assert_eq!(s.target_names(), ["link-services"]);
        let routes = s.routes();
        let labels = |ns: Option<&str>| {
            ns.map(|n| BTreeMap::from([("namespace".to_owned(), n.to_owned())]))
                .unwrap_or_default()
        };
        assert_eq!(routes.route(&labels(None)).target(), Some("link-services"));
        assert_eq!(
            routes.route(&labels(Some("link-services"))).target(),
            Some("link-services")
        );
        assert_eq!(routes.route(&labels(Some("billing"))).target(), None);
    }

    #[test]
    fn a_request_names_its_target_when_there_are_several() {
        let s = Settings::from_toml(TWO).unwrap();
        assert_eq!(s.pick_target(Some("shop")).unwrap().name, "shop");
        assert_eq!(
            s.pick_target(None).unwrap_err().to_string(),
            "several targets are configured: name one of billing, shop"
        );
        assert!(matches!(
            s.pick_target(Some("nope")),
            Err(TargetChoice::Unknown { .. })
        ));
        let one = Settings::from_toml("").unwrap();
        assert_eq!(one.pick_target(None).unwrap().name, "link-services");
    }

    #[test]
    fn start_up_stops_on_a_bad_target_naming_the_entry_and_key() {
        let cases = [
            (
                "[[targets]]\nname = \"Billing\"\nmatch = { namespace = \"b\" }",
                "targets[0] (\"Billing\").name: must be 1 to 40",
            ),
            (
                "[[targets]]\nname = \"a\"\nmatch = { namespace = \"a\" }\n[[targets]]\nname = \"a\"\nmatch = { namespace = \"b\" }",
                "targets[1] (\"a\").name: the name is already used by targets[0]",
            ),
            (
                "[[targets]]\nname = \"a\"\nmatch = { namespace = \"a\" }\n[[targets]]\nname = \"b\"\nmatch = { namespace = \"a\" }",
                "targets[1] (\"b\").match: targets[0] (\"a\") has the same match",
            ),
            (
                "[[targets]]\nname = \"a\"\nmatch = { namespace = \"a\" }\n[[targets]]\nname = \"b\"",
                "targets[1] (\"b\").match: needed when there is more than one target",
            ),
            (
                "[[targets]]\nname = \"a\"\nmatch = { namespace = \"\" }",
                "targets[0] (\"a\").match.namespace: an empty label name or value",
            ),
            (
                "[[targets]]\nname = \"a\"\nmatch = { namespace = \"a\" }\n[targets.kubernetes]\nnamespacee = \"a\"",
                "targets[0] (\"a\").kubernetes.namespacee: unknown key; [kubernetes] has: api_url",
            ),
            (
                "[[targets]]\nname = \"a\"\nmatch = { namespace = \"a\" }\n[targets.target]\ndatabases = []",
                "targets[0] (\"a\"): invalid configuration: target.databases: must name at least one database",
            ),
            (
                "[[targets]]\nname = \"a\"\nmatch = { namespace = \"a\" }\ncolour = \"red\"",
                "colour",
            ),
        ];
        for (toml, want) in cases {
            let got = error(toml);
            assert!(got.contains(want), "{toml}\n→ {got}\nwanted: {want}");
        }
    }

    #[test]
    fn one_target_without_match_takes_every_alert() {
        let s = Settings::from_toml("[[targets]]\nname = \"only\"").unwrap();
        let routes = s.routes();
        assert_eq!(
            routes
                .route(&BTreeMap::from([("namespace".into(), "x".into())]))
                .target(),
            Some("only")
        );
    }
}
