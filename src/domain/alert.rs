//! The Alertmanager webhook payload (version 4) and its decoding into validated domain types.
//!
//! Parse, don't validate: [`decode`] turns raw bytes into a [`Notification`] whose alerts are known
//! to carry a name, a fingerprint and a start time, or returns a [`DecodeError`] that says which
//! field is wrong. It never panics, whatever the input (see the property test).

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::domain::names::string_enum;

/// The alert the built-in playbooks answer.
pub const BACKUP_FAILED: &str = "PostgreSQLBackupFailed";
/// The backups went stale with no failure reported: the freshness watchdog's incident (and the
/// alert rules' for a metric gone absent). Answered by the same playbooks.
pub const BACKUP_STALE: &str = "PostgreSQLBackupStale";
/// WAL archiving has kept failing: the WAL-archive guard's incident (pg_wal grows until the
/// volume fills and the primary stops).
pub const WAL_ARCHIVE_FAILING: &str = "PostgreSQLWALArchiveFailing";

/// Alertmanager's webhook body, as documented for `version: "4"`. Only [`decode`] reads it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPayload {
    version: String,
    #[serde(default)]
    group_key: String,
    #[serde(default, deserialize_with = "whole_count")]
    truncated_alerts: u64,
    status: AlertStatus,
    receiver: String,
    #[serde(default, deserialize_with = "unique_keys")]
    group_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "unique_keys")]
    common_labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "unique_keys")]
    common_annotations: BTreeMap<String, String>,
    #[serde(default, rename = "externalURL")]
    external_url: String,
    alerts: Vec<WebhookAlert>,
}

/// One alert of [`WebhookPayload`].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    status: AlertStatus,
    #[serde(deserialize_with = "unique_keys")]
    labels: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "unique_keys")]
    annotations: BTreeMap<String, String>,
    starts_at: DateTime<Utc>,
    #[serde(default)]
    ends_at: Option<DateTime<Utc>>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    fingerprint: String,
}

string_enum!(
    /// Whether an alert (or the whole group) is firing or resolved.
    #[derive(ToSchema)]
    pub AlertStatus "alert status" {
        Firing => "firing",
        Resolved => "resolved",
    }
);

/// One validated webhook delivery.
#[derive(Debug, Clone)]
pub struct Notification {
    pub receiver: String,
    pub status: AlertStatus,
    pub group_key: String,
    pub group_labels: BTreeMap<String, String>,
    pub common_labels: BTreeMap<String, String>,
    pub common_annotations: BTreeMap<String, String>,
    pub external_url: String,
    pub truncated_alerts: u64,
    pub alerts: Vec<Alert>,
    /// What decoding changed in the delivery's own fields (receiver, groupKey, …), in sentences.
    pub adjustments: Vec<String>,
}

/// One validated alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub name: String,
    pub status: AlertStatus,
    pub fingerprint: String,
    /// Truncated to microseconds, the precision both stores keep, so the same alert always maps
    /// to the same key.
    pub starts_at: DateTime<Utc>,
    /// `None` while firing (Alertmanager sends the zero time `0001-01-01T00:00:00Z`).
    pub ends_at: Option<DateTime<Utc>>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub generator_url: String,
    /// What decoding changed in this alert so that every store can hold it, in sentences (said
    /// on the incident's timeline and in the webhook's answer).
    pub adjustments: Vec<String>,
}

impl Alert {
    /// The identity Alertmanager gives an alert occurrence: same fingerprint and start = same alert.
    pub fn key(&self) -> AlertKey {
        AlertKey {
            fingerprint: self.fingerprint.clone(),
            starts_at: self.starts_at,
        }
    }

    /// The alert's `severity` label, or `unknown`.
    pub fn severity(&self) -> &str {
        self.labels
            .get("severity")
            .map(String::as_str)
            .unwrap_or("unknown")
    }
}

/// Identity of one alert occurrence, used for de-duplication.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlertKey {
    pub fingerprint: String,
    pub starts_at: DateTime<Utc>,
}

/// Why a webhook body was refused. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("{path}: {message}")]
    Field { path: String, message: String },
}

const MAX_FINGERPRINT: usize = 128;
const MAX_ALERTNAME: usize = 256;

fn field(path: impl Into<String>, message: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        path: path.into(),
        message: message.into(),
    }
}

/// Decodes and validates a webhook body.
pub fn decode(body: &[u8]) -> Result<Notification, DecodeError> {
    // serde would read a struct from a JSON array too; Alertmanager only ever sends an object.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        Some(_) => return Err(field("payload", "must be a JSON object")),
        None => return Err(DecodeError::Json("empty body".into())),
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw: WebhookPayload = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            DecodeError::Json(inner.to_string())
        } else if path == "." {
            field("payload", inner.to_string())
        } else {
            field(path, inner.to_string())
        }
    })?;
    de.end().map_err(|e| DecodeError::Json(e.to_string()))?;

    if raw.version != "4" {
        return Err(field(
            "version",
            format!("unsupported version {:?}, expected \"4\"", raw.version),
        ));
    }
    if raw.alerts.is_empty() {
        return Err(field("alerts", "must contain at least one alert"));
    }
    let alerts = raw
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| validate_alert(i, a))
        .collect::<Result<Vec<_>, _>>()?;
    let mut adjustments = Vec::new();
    let mut fix = |field: &str, value: String| storable(field, value, &mut adjustments);
    let receiver = fix("receiver", raw.receiver);
    let group_key = fix("groupKey", raw.group_key);
    let external_url = fix("externalURL", raw.external_url);
    let group_labels = storable_map("groupLabels", raw.group_labels, &mut adjustments);
    let common_labels = storable_map("commonLabels", raw.common_labels, &mut adjustments);
    let common_annotations = storable_map(
        "commonAnnotations",
        raw.common_annotations,
        &mut adjustments,
    );
    Ok(Notification {
        receiver,
        status: raw.status,
        group_key,
        group_labels,
        common_labels,
        common_annotations,
        external_url,
        truncated_alerts: raw.truncated_alerts,
        alerts,
        adjustments,
    })
}

/// NUL (U+0000) is valid JSON and valid Unicode, but PostgreSQL can hold it neither in `text`
/// nor in `jsonb`. Both stores must hold the same alert, so it is replaced here, before either
/// sees it, by U+FFFD (the replacement character), and the change is said.
const UNSTORABLE: char = '\u{0}';
const REPLACEMENT: char = '\u{FFFD}';

fn storable(field: &str, value: String, adjustments: &mut Vec<String>) -> String {
    if !value.contains(UNSTORABLE) {
        return value;
    }
    adjustments.push(format!(
        "{field}: NUL characters replaced by U+FFFD (the store cannot hold NUL)"
    ));
    value.replace(UNSTORABLE, &REPLACEMENT.to_string())
}

fn storable_map(
    field: &str,
    map: BTreeMap<String, String>,
    adjustments: &mut Vec<String>,
) -> BTreeMap<String, String> {
    if !map
        .iter()
        .any(|(k, v)| k.contains(UNSTORABLE) || v.contains(UNSTORABLE))
    {
        return map;
    }
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let k = storable(&format!("{field} key"), k, adjustments);
        let v = storable(&format!("{field}.{k}"), v, adjustments);
        // Two keys that differ only by NUL vs U+FFFD would collide: the first (in order) stays.
        out.entry(k).or_insert(v);
    }
    adjustments.dedup();
    out
}

/// One form for every time, whichever store keeps it: microseconds (what both keep), and a leap
/// second (`23:59:60.5`) as the instant after it (`00:00:00.5`), as PostgreSQL counts it.
pub fn normalise_time(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn validate_alert(i: usize, raw: WebhookAlert) -> Result<Alert, DecodeError> {
    let mut adjustments = Vec::new();
    let labels = storable_map("labels", raw.labels, &mut adjustments);
    let annotations = storable_map("annotations", raw.annotations, &mut adjustments);
    let generator_url = storable("generatorURL", raw.generator_url, &mut adjustments);
    let name = match labels.get("alertname") {
        Some(n) if n.chars().count() > MAX_ALERTNAME => {
            return Err(field(
                format!("alerts[{i}].labels.alertname"),
                "longer than 256 characters",
            ))
        }
        Some(n) if !n.is_empty() => n.clone(),
        _ => {
            return Err(field(
                format!("alerts[{i}].labels.alertname"),
                "missing or empty",
            ))
        }
    };
    // Exactly as the OpenAPI document states it: no trimming, so what is stored is what came.
    let fp = raw.fingerprint.as_str();
    if fp.is_empty() || fp.len() > MAX_FINGERPRINT || !fp.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(field(
            format!("alerts[{i}].fingerprint"),
            "must be 1 to 128 letters or digits (Alertmanager sends 16 hex digits)",
        ));
    }
    if raw.starts_at.year() <= 1 {
        return Err(field(format!("alerts[{i}].startsAt"), "is the zero time"));
    }
    let starts_at = normalise_time(raw.starts_at);
    // Alertmanager marks "not ended" with the zero time 0001-01-01T00:00:00Z.
    let mut ends_at = raw.ends_at.filter(|t| t.year() > 1).map(normalise_time);
    if let Some(end) = ends_at.filter(|end| *end < starts_at) {
        adjustments.push(format!(
            "endsAt {} precedes startsAt: clamped to startsAt",
            end.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ));
        ends_at = Some(starts_at);
    }
    Ok(Alert {
        name,
        status: raw.status,
        fingerprint: fp.to_owned(),
        starts_at,
        ends_at,
        labels,
        annotations,
        generator_url,
        adjustments,
    })
}

/// The largest count accepted: JSON numbers are exact up to 2^53 - 1 everywhere.
const MAX_COUNT: u64 = (1 << 53) - 1;

/// A count: a whole JSON number from 0 to 2^53 - 1. `648.0` is a whole number in JSON (and in
/// the OpenAPI document's `integer`), so it is accepted as 648.
fn whole_count<'de, D>(de: D) -> Result<u64, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let n = serde_json::Number::deserialize(de)?;
    let value = match (n.as_u64(), n.as_f64()) {
        (Some(v), _) => Some(v),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=MAX_COUNT as f64).contains(&f) => {
            Some(f as u64)
        }
        _ => None,
    };
    value.filter(|v| *v <= MAX_COUNT).ok_or_else(|| {
        serde::de::Error::custom(format_args!("must be a whole number from 0 to {MAX_COUNT}"))
    })
}

/// A JSON object of strings whose keys must be unique: serde would silently keep the last of two
/// equal keys, and which label an alert carries must not depend on the order of the bytes.
fn unique_keys<'de, D>(de: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Unique;
    impl<'de> serde::de::Visitor<'de> for Unique {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of strings")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format_args!(
                        "duplicate key {k:?}"
                    )));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    de.deserialize_map(Unique)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::SubsecRound;
    use proptest::prelude::*;

    /// A body exactly as Alertmanager 0.25 sent it on this project's machines.
    pub(crate) const REAL: &str = r#"{"receiver":"backup-remediator","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"PostgreSQLBackupFailed","severity":"critical","namespace":"link-services"},"annotations":{"summary":"PostgreSQL backup failed"},"startsAt":"2026-11-25T01:02:03.456Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prometheus:9090/graph?g0.expr=vector%281%29","fingerprint":"6f3d1f1b2c0a9e77"}],"groupLabels":{"alertname":"PostgreSQLBackupFailed"},"commonLabels":{"alertname":"PostgreSQLBackupFailed","severity":"critical"},"commonAnnotations":{"summary":"PostgreSQL backup failed"},"externalURL":"http://alertmanager:9093","version":"4","groupKey":"{}:{alertname=\"PostgreSQLBackupFailed\"}","truncatedAlerts":0}"#;

    #[test]
    fn a_real_alertmanager_payload_decodes() {
        let n = decode(REAL.as_bytes()).unwrap();
        assert_eq!(n.receiver, "backup-remediator");
        assert_eq!(n.external_url, "http://alertmanager:9093");
        let a = &n.alerts[0];
        assert_eq!(a.name, "PostgreSQLBackupFailed");
        assert_eq!(a.fingerprint, "6f3d1f1b2c0a9e77");
        assert_eq!(a.severity(), "critical");
        assert_eq!(a.ends_at, None, "the zero time means still firing");
        assert_eq!(a.starts_at.to_rfc3339(), "2026-11-25T01:02:03.456+00:00");
        assert!(a.generator_url.starts_with("http://prometheus:9090/graph"));
    }

    #[test]
    fn a_missing_field_is_named_with_its_path() {
        let body = REAL.replace(r#""fingerprint":"6f3d1f1b2c0a9e77""#, r#""x":1"#);
        let err = decode(body.as_bytes()).unwrap_err().to_string();
        assert!(
            err.contains("alerts[0]") && err.contains("fingerprint"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_type_is_named_with_its_path() {
        let body = REAL.replace(
            r#""startsAt":"2026-11-25T01:02:03.456Z""#,
            r#""startsAt":17"#,
        );
        let err = decode(body.as_bytes()).unwrap_err().to_string();
        assert!(err.starts_with("alerts[0].startsAt"), "{err}");
    }

    #[test]
    fn another_version_is_refused() {
        let body = REAL.replace(r#""version":"4""#, r#""version":"3""#);
        assert_eq!(
            decode(body.as_bytes()).unwrap_err(),
            field("version", "unsupported version \"3\", expected \"4\"")
        );
    }

    #[test]
    fn broken_json_is_refused_as_json() {
        assert!(matches!(
            decode(b"{\"version\":"),
            Err(DecodeError::Json(_))
        ));
        assert!(matches!(decode(b""), Err(DecodeError::Json(_))));
        assert_eq!(
            decode(b" [1]").unwrap_err().to_string(),
            "payload: must be a JSON object"
        );
        assert!(matches!(
            decode(format!("{REAL} trailing").as_bytes()),
            Err(DecodeError::Json(_))
        ));
    }

    #[test]
    fn an_alert_without_a_name_is_refused() {
        let body = REAL.replace(
            r#""alertname":"PostgreSQLBackupFailed","severity""#,
            r#""severity""#,
        );
        let err = decode(body.as_bytes()).unwrap_err().to_string();
        assert_eq!(err, "alerts[0].labels.alertname: missing or empty");
    }

    #[test]
    fn no_alerts_is_refused() {
        let body = r#"{"version":"4","status":"firing","receiver":"r","alerts":[]}"#;
        assert_eq!(
            decode(body.as_bytes()).unwrap_err().to_string(),
            "alerts: must contain at least one alert"
        );
    }

    #[test]
    fn a_resolved_alert_keeps_its_end_time() {
        let body = REAL
            .replace(r#""status":"firing""#, r#""status":"resolved""#)
            .replace(
                r#""endsAt":"0001-01-01T00:00:00Z""#,
                r#""endsAt":"2026-11-25T02:00:00.123456789Z""#,
            );
        let a = &decode(body.as_bytes()).unwrap().alerts[0];
        assert_eq!(a.status, AlertStatus::Resolved);
        assert_eq!(
            a.ends_at.unwrap().to_rfc3339(),
            "2026-11-25T02:00:00.123456+00:00"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_real_payloads(
            cut in 0usize..REAL.len(),
            insert in "[\\[\\]{}\":,0-9a-zA-Z\\\\ ]{0,8}",
        ) {
            let mut s = REAL.as_bytes()[..cut].to_vec();
            s.extend_from_slice(insert.as_bytes());
            s.extend_from_slice(&REAL.as_bytes()[cut..]);
            let _ = decode(&s);
        }

        #[test]
        fn any_valid_fingerprint_and_start_round_trips(
            fp in "[0-9a-f]{16}",
            secs in 946684800i64..4102444800i64,
            nanos in 0u32..1_000_000_000u32,
        ) {
            let start = DateTime::from_timestamp(secs, nanos).unwrap();
            let body = REAL
                .replace("6f3d1f1b2c0a9e77", &fp)
                .replace("2026-11-25T01:02:03.456Z", &start.to_rfc3339());
            let a = decode(body.as_bytes()).unwrap().alerts.remove(0);
            prop_assert_eq!(a.fingerprint, fp);
            prop_assert_eq!(a.starts_at, start.trunc_subsecs(6));
        }
    }
}
