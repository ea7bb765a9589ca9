//! Targets: which backup stream an alert is about. A *target* is one backup (its Kubernetes
//! names, its primary and databases, its bucket and prefix, its policy); each alert is routed to
//! exactly one target by its labels, or to none. Routing is pure: labels and matchers in, a
//! [`Route`] out.

use std::collections::BTreeMap;

use serde::Serialize;

/// The labels that select a target: every one must be present on the alert with this value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Matcher {
    pub labels: BTreeMap<String, String>,
    /// An alert that carries none of these labels matches too. Only the implied target of a
    /// configuration without `[[targets]]` has this: alerts that name no namespace have always
    /// been about the one configured backup, and an alert that names *another* namespace is not.
    pub or_unlabelled: bool,
}

impl Matcher {
    /// Every label present and equal (or, with `or_unlabelled`, none of them present).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.or_unlabelled && self.labels.keys().all(|k| !labels.contains_key(k)) {
            return true;
        }
        self.labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|got| got == v))
    }

    /// `k="v", …` for messages.
    pub fn describe(&self) -> String {
        let mut text = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        if self.or_unlabelled {
            text.push_str(" (or no such label)");
        }
        text
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Exactly one target matched.
    Target(String),
    /// No target matched.
    Unmatched,
    /// Several targets matched: acting on any of them could be acting on the wrong database.
    Ambiguous(Vec<String>),
}

impl Route {
    /// The target's name when exactly one matched.
    pub fn target(&self) -> Option<&str> {
        match self {
            Route::Target(name) => Some(name),
            _ => None,
        }
    }

    /// Why no target was chosen, for the incident's record; `None` when one was.
    pub fn reason(&self) -> Option<String> {
        match self {
            Route::Target(_) => None,
            Route::Unmatched => Some("no target matched the alert's labels".to_owned()),
            Route::Ambiguous(names) => Some(format!("ambiguous: {}", names.join(", "))),
        }
    }
}

/// The routing table: each target's name and matcher, in configuration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub targets: Vec<(String, Matcher)>,
}

impl Routes {
    /// Routes `labels` to exactly one target, or to none.
    pub fn route(&self, labels: &BTreeMap<String, String>) -> Route {
        let hits: Vec<&str> = self
            .targets
            .iter()
            .filter(|(_, m)| m.matches(labels))
            .map(|(name, _)| name.as_str())
            .collect();
        match hits.as_slice() {
            [] => Route::Unmatched,
            [one] => Route::Target((*one).to_owned()),
            many => Route::Ambiguous(many.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    /// The configured targets' names.
    pub fn names(&self) -> Vec<&str> {
        self.targets.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The record of a route that chose no target: why, the alert's labels, and every target
    /// with what it matches (the person reading it fixes either the alert rule or the config).
    pub fn unmatched_detail(
        &self,
        route: &Route,
        labels: &BTreeMap<String, String>,
    ) -> Option<serde_json::Value> {
        let reason = route.reason()?;
        let targets: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|(name, m)| serde_json::json!({ "name": name, "match": m.describe() }))
            .collect();
        Some(serde_json::json!({
            "reason": reason,
            "labels": labels,
            "candidates": match route { Route::Ambiguous(n) => n.clone(), _ => Vec::new() },
            "targets": targets,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn matcher(pairs: &[(&str, &str)], or_unlabelled: bool) -> Matcher {
        Matcher {
            labels: labels(pairs),
            or_unlabelled,
        }
    }

    fn fleet() -> Routes {
        Routes {
            targets: vec![
                (
                    "billing".into(),
                    matcher(&[("namespace", "billing")], false),
                ),
                (
                    "orders".into(),
                    matcher(
                        &[("namespace", "shop"), ("cronjob", "orders-backup")],
                        false,
                    ),
                ),
                (
                    "catalog".into(),
                    matcher(
                        &[("namespace", "shop"), ("cronjob", "catalog-backup")],
                        false,
                    ),
                ),
            ],
        }
    }

    #[test]
    fn an_alert_goes_to_the_one_target_whose_labels_it_carries() {
        let r = fleet();
        assert_eq!(
            r.route(&labels(&[
                ("namespace", "billing"),
                ("severity", "critical")
            ])),
            Route::Target("billing".into())
        );
        assert_eq!(
            r.route(&labels(&[
                ("namespace", "shop"),
                ("cronjob", "catalog-backup")
            ])),
            Route::Target("catalog".into())
        );
    }

    #[test]
    fn every_label_of_the_match_must_be_present_and_equal() {
        let r = fleet();
        assert_eq!(r.route(&labels(&[("namespace", "shop")])), Route::Unmatched);
        assert_eq!(
            r.route(&labels(&[("namespace", "Billing")])),
            Route::Unmatched
        );
        assert_eq!(r.route(&labels(&[])), Route::Unmatched);
    }

    #[test]
    fn two_matching_targets_make_the_alert_ambiguous_and_name_both() {
        let mut r = fleet();
        r.targets.push((
            "billing-2".into(),
            matcher(&[("severity", "critical")], false),
        ));
        let route = r.route(&labels(&[
            ("namespace", "billing"),
            ("severity", "critical"),
        ]));
        assert_eq!(
            route,
            Route::Ambiguous(vec!["billing".into(), "billing-2".into()])
        );
        assert_eq!(route.reason().unwrap(), "ambiguous: billing, billing-2");
    }

    #[test]
    fn the_implied_target_takes_its_namespace_or_none_but_never_another() {
        let r = Routes {
            targets: vec![(
                "link-services".into(),
                matcher(&[("namespace", "link-services")], true),
            )],
        };
        assert_eq!(
            r.route(&labels(&[("namespace", "link-services")])),
            Route::Target("link-services".into())
        );
        assert_eq!(
            r.route(&labels(&[("alertname", "PostgreSQLBackupFailed")])),
            Route::Target("link-services".into())
        );
        assert_eq!(
            r.route(&labels(&[("namespace", "billing")])),
            Route::Unmatched
        );
    }

    #[test]
    fn an_unmatched_record_lists_the_labels_and_every_target() {
        let r = fleet();
        let l = labels(&[("namespace", "payments")]);
        let d = r.unmatched_detail(&r.route(&l), &l).unwrap();
        assert_eq!(d["reason"], "no target matched the alert's labels");
        assert_eq!(d["labels"]["namespace"], "payments");
        assert_eq!(d["targets"].as_array().unwrap().len(), 3);
        assert_eq!(d["targets"][0]["match"], "namespace=\"billing\"");
        assert!(r
            .unmatched_detail(&Route::Target("billing".into()), &l)
            .is_none());
    }
}
