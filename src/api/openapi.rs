//! The OpenAPI document says what the server enforces, no more and no less: a client (or a
//! fuzzer) that follows the document is never refused, and one that breaks it is.
//!
//! utoipa derives the shapes from the Rust types; the rules the decoders check by hand (the
//! payload version, a non-empty alert list, the fingerprint's alphabet, id ranges, the
//! configured database names) are laid over the generated document here, in one place.

use serde_json::{json, Value};

/// The largest id a path accepts (ids are 64-bit).
const MAX_ID: i64 = i64::MAX;

/// `X-Actor`: up to 100 characters, no control characters.
pub const ACTOR_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// Tightens the generated document. `databases`: the configured database names, when known.
pub(super) fn constrain(doc: &mut Value, databases: Option<&[String]>, targets: Option<&[String]>) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(ops) = item.as_object_mut() else {
                continue;
            };
            for op in ops.values_mut() {
                constrain_operation(op);
            }
        }
    }
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Some(payload) = schemas.get_mut("WebhookPayload") {
        set(
            payload,
            "/properties/version",
            json!({"type": "string", "const": "4"}),
        );
        merge(payload, "/properties/alerts", json!({"minItems": 1}));
        merge(
            payload,
            "/properties/truncatedAlerts",
            json!({"type": "integer", "minimum": 0, "maximum": (1_u64 << 53) - 1}),
        );
    }
    if let Some(alert) = schemas.get_mut("WebhookAlert") {
        merge(
            alert,
            "/properties/fingerprint",
            json!({"minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9]+$"}),
        );
        merge(
            alert,
            "/properties/labels",
            json!({
                "required": ["alertname"],
                "properties": {"alertname": {"type": "string", "minLength": 1, "maxLength": 256}},
                "additionalProperties": {"type": "string"},
            }),
        );
        // `null` and the zero time both mean "not ended"; a string must be a date-time.
        set(
            alert,
            "/properties/endsAt",
            json!({"oneOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]}),
        );
        // The zero time (year 1) means "no start": refused.
        merge(
            alert,
            "/properties/startsAt",
            json!({"pattern": "^(?!000[01]-)"}),
        );
    }
    if let Some(decision) = schemas.get_mut("DecisionBody") {
        merge(decision, "/properties/comment", json!({"maxLength": 500}));
    }
    if let Some(req) = schemas.get_mut("RestoreTestRequest") {
        // 256 characters are at most 1024 bytes, the longest key S3 has.
        merge(
            req,
            "/properties/object",
            json!({"minLength": 1, "maxLength": 256}),
        );
        if let Some(dbs) = databases {
            set(
                req,
                "/properties/database",
                json!({"type": ["string", "null"], "enum": names_or_null(dbs)}),
            );
        }
    }
    if let Some(names) = targets {
        for request in ["RestoreTestRequest", "BackupRequest"] {
            if let Some(req) = schemas.get_mut(request) {
                set(
                    req,
                    "/properties/target",
                    json!({"type": ["string", "null"], "enum": names_or_null(names)}),
                );
            }
        }
    }
    if let (Some(req), Some(dbs)) = (schemas.get_mut("BackupRequest"), databases) {
        merge(
            req,
            "/properties/databases",
            json!({"items": {"type": "string", "enum": dbs}}),
        );
    }
}

fn names_or_null(dbs: &[String]) -> Vec<Value> {
    let mut v: Vec<Value> = dbs.iter().map(|d| json!(d)).collect();
    v.push(Value::Null);
    v
}

fn constrain_operation(op: &mut Value) {
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            let name = p["name"].as_str().unwrap_or_default().to_ascii_lowercase();
            let place = p["in"].as_str().unwrap_or_default().to_owned();
            let Some(schema) = p.get_mut("schema") else {
                continue;
            };
            // An optional parameter is one that may be left out; it is never `null`.
            drop_null(schema);
            if place == "path" && schema["type"] == "integer" {
                merge_value(schema, json!({"minimum": 1, "maximum": MAX_ID}));
            }
            if place == "header" && name == super::ACTOR_HEADER {
                *schema = json!({"type": "string", "maxLength": 100, "pattern": ACTOR_PATTERN});
            }
        }
    }
    // An optional body is one that may be left out; `null` is refused, so it is not offered.
    if let Some(content) = op
        .pointer_mut("/requestBody/content")
        .and_then(Value::as_object_mut)
    {
        for media in content.values_mut() {
            if let Some(schema) = media.get_mut("schema") {
                drop_null(schema);
            }
        }
    }
}

/// Removes `null` from a schema's alternatives: `{"type": ["x", "null"]}` or
/// `{"oneOf": [{"type": "null"}, S]}`.
fn drop_null(schema: &mut Value) {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            schema["type"] = types[0].clone();
        }
        return;
    }
    for key in ["oneOf", "anyOf"] {
        let Some(alts) = schema.get_mut(key).and_then(Value::as_array_mut) else {
            continue;
        };
        alts.retain(|a| a["type"] != "null");
        if alts.len() == 1 {
            let only = alts.remove(0);
            *schema = only;
        }
        return;
    }
}

fn set(schema: &mut Value, pointer: &str, value: Value) {
    if let Some(slot) = schema.pointer_mut(pointer) {
        *slot = value;
    }
}

fn merge(schema: &mut Value, pointer: &str, extra: Value) {
    if let Some(slot) = schema.pointer_mut(pointer) {
        merge_value(slot, extra);
    }
}

fn merge_value(slot: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (slot.as_object_mut(), extra) {
        for (k, v) in extra {
            target.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::config::Role;
    use crate::domain::alert::AlertStatus;
    use crate::domain::diagnosis::Scenario;
    use crate::domain::finding::Status;
    use crate::domain::incident::IncidentStatus;
    use crate::domain::manual_backup::BackupStatus;
    use crate::domain::plan::{Decision, StepKind, StepState};
    use crate::domain::restore_test::TestStatus;

    fn names<T: std::fmt::Display>(all: &[T]) -> Value {
        json!(all.iter().map(ToString::to_string).collect::<Vec<_>>())
    }

    /// The document names each enum's values as they are stored and parsed (one mapping each).
    #[test]
    fn the_document_names_each_enum_by_its_stored_names() {
        let doc = super::super::openapi();
        let schema = |name: &str| doc["components"]["schemas"][name]["enum"].clone();
        for (name, want) in [
            ("IncidentStatus", names(IncidentStatus::ALL)),
            ("TestStatus", names(TestStatus::ALL)),
            ("BackupStatus", names(BackupStatus::ALL)),
            ("Scenario", names(Scenario::ALL)),
            ("Status", names(Status::ALL)),
            ("AlertStatus", names(AlertStatus::ALL)),
            ("StepKind", names(StepKind::ALL)),
            ("Decision", names(Decision::ALL)),
            ("StepState", names(StepState::ALL)),
            ("Role", names(Role::ALL)),
        ] {
            assert_eq!(schema(name), want, "{name}");
        }
    }
}
