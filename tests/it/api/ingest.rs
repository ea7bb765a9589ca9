//! Bad bytes and odd alerts never lose an alert: a value the store cannot hold is replaced the
//! same way on both stores and said so, one alert the store refuses never blocks the others,
//! duplicate keys are refused, an end before the start is clamped, a leap second is served in
//! one form; ignored alert names stay bounded in /metrics.

use serde_json::{json, Value};

use crate::support::app::*;

on_both_stores!(
    a_nul_anywhere_is_replaced_and_said_and_the_alerts_after_it_are_stored,
    an_alert_the_store_refuses_does_not_keep_the_others_from_being_stored,
    an_alert_the_store_refuses_fails_alone_among_concurrent_deliveries,
    a_resolved_alert_that_ends_before_it_starts_is_clamped_to_its_start_and_said_so,
    a_leap_second_start_is_served_in_one_form_by_both_stores,
    duplicate_keys_in_labels_or_annotations_are_a_400_naming_the_key,
);

/// Each alert's outcome in a webhook answer.
fn outcomes(answer: &Value) -> Vec<&str> {
    answer["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|a| a["outcome"].as_str().expect("outcome"))
        .collect()
}

/// U+FFFD, what a NUL becomes.
const R: &str = "\u{FFFD}";

pub async fn a_nul_anywhere_is_replaced_and_said_and_the_alerts_after_it_are_stored(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let mut bad = backup_failed("bbbbbbbbbbbbbbb2");
    bad["labels"]["job"] = json!("postgres\u{0}backup");
    bad["labels"]["odd\u{0}key"] = json!("v");
    bad["annotations"]["summary"] = json!("failed\u{0}");
    bad["generatorURL"] = json!("http://prometheus/\u{0}");
    let mut body = payload(vec![
        backup_failed("aaaaaaaaaaaaaaa1"),
        bad,
        backup_failed("ccccccccccccccc3"),
    ]);
    body["receiver"] = json!("backup\u{0}remediator");
    body["groupKey"] = json!("{}:{\u{0}}");
    body["externalURL"] = json!("http://am\u{0}");

    let resp = app.post_webhook(&body).await;

    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let answer: Value = resp.json().await.unwrap();
    let outcomes = outcomes(&answer);
    assert_eq!(outcomes, ["opened", "opened", "opened"], "{answer}");
    let said = answer["alerts"][1]["adjustments"].to_string();
    for field in [
        "labels.job",
        "annotations.summary",
        "generatorURL",
        "receiver",
    ] {
        assert!(said.contains(field), "the answer names {field}: {said}");
    }
    let id = answer["alerts"][1]["incident_id"].as_i64().unwrap();
    let incident = app.incident(id).await;
    assert_eq!(incident["labels"]["job"], format!("postgres{R}backup"));
    assert_eq!(incident["labels"][format!("odd{R}key")], "v");
    assert_eq!(incident["annotations"]["summary"], format!("failed{R}"));
    assert_eq!(incident["generator_url"], format!("http://prometheus/{R}"));
    let opened = &incident["timeline"][0];
    assert_eq!(opened["kind"], "opened");
    assert_eq!(opened["detail"]["receiver"], format!("backup{R}remediator"));
    assert_eq!(opened["detail"]["external_url"], format!("http://am{R}"));
    assert!(
        opened["detail"]["adjustments"]
            .to_string()
            .contains("NUL characters replaced by U+FFFD"),
        "the timeline says what was changed: {opened}"
    );
    assert_eq!(app.incidents().await.len(), 3, "A, B and C are all stored");
}

/// Makes the store refuse (while up) any incident whose fingerprint is `fp`.
async fn refuse_fingerprint(db: &TestDb, fp: &str) {
    use sqlx::Connection;
    match db {
        TestDb::Postgres { url, .. } => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(&format!(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.fingerprint = '{fp}' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
                 RETURN NEW; END $$"
            ))
            .execute(&mut c)
            .await
            .unwrap();
            sqlx::query(
                "CREATE TRIGGER refuse BEFORE INSERT ON incidents FOR EACH ROW EXECUTE FUNCTION refuse()",
            )
            .execute(&mut c)
            .await
            .unwrap();
        }
        TestDb::Sqlite { .. } => {
            let mut c = sqlx::SqliteConnection::connect(&db.url()).await.unwrap();
            sqlx::query(&format!(
                "CREATE TRIGGER refuse BEFORE INSERT ON incidents WHEN NEW.fingerprint = '{fp}' \
                 BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            ))
            .execute(&mut c)
            .await
            .unwrap();
        }
    }
}

pub async fn an_alert_the_store_refuses_does_not_keep_the_others_from_being_stored(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    refuse_fingerprint(&app.db, "bbbbbbbbbbbbbbb2").await;

    let resp = app
        .post_webhook(&payload(vec![
            backup_failed("aaaaaaaaaaaaaaa1"),
            backup_failed("bbbbbbbbbbbbbbb2"),
            backup_failed("ccccccccccccccc3"),
        ]))
        .await;

    assert_eq!(resp.status(), 202, "only an outage answers 5xx");
    let answer: Value = resp.json().await.unwrap();
    let outcomes = outcomes(&answer);
    assert_eq!(outcomes, ["opened", "failed", "opened"], "{answer}");
    assert!(answer["alerts"][1]["error"].is_string(), "{answer}");
    let stored: Vec<String> = app
        .incidents()
        .await
        .iter()
        .map(|i| i["fingerprint"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        stored.contains(&"ccccccccccccccc3".to_owned()),
        "C stored: {stored:?}"
    );
    assert_eq!(stored.len(), 2);
}

/// Concurrent first deliveries share a transaction (group commit): the one alert the store
/// refuses must fail alone, and every other delivery of the same moment be stored with its own
/// incident and exactly one `opened` event.
pub async fn an_alert_the_store_refuses_fails_alone_among_concurrent_deliveries(backend: Backend) {
    let app = spawn_app(backend).await;
    let refused = "eeeeeeeeeeee0013";
    refuse_fingerprint(&app.db, refused).await;
    let fingerprints: Vec<String> = (0..40).map(|i| format!("eeeeeeeeeeee{i:04}")).collect();

    let posts = fingerprints
        .iter()
        .map(|fp| app.webhook_request(payload(vec![backup_failed(fp)]).to_string()));
    let answers = crate::api::webhook::futures_join_all(posts).await;

    let mut ids = std::collections::HashSet::new();
    for (fp, resp) in fingerprints.iter().zip(answers) {
        assert_eq!(resp.status(), 202, "only an outage answers 5xx");
        let answer: Value = resp.json().await.unwrap();
        if fp == refused {
            assert_eq!(outcomes(&answer), ["failed"], "{answer}");
            continue;
        }
        assert_eq!(outcomes(&answer), ["opened"], "{fp}: {answer}");
        let id = answer["alerts"][0]["incident_id"].as_i64().expect("id");
        assert!(ids.insert(id), "incident {id} answered twice");
        let incident = app.incident(id).await;
        assert_eq!(incident["fingerprint"], fp.as_str());
        let kinds = timeline_kinds(&incident);
        assert_eq!(kinds, ["opened"], "incident {id}");
    }
    assert_eq!(ids.len(), 39);
    assert_eq!(app.incidents().await.len(), 39);
}

pub async fn a_resolved_alert_that_ends_before_it_starts_is_clamped_to_its_start_and_said_so(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let firing = backup_failed("dddddddddddddddd");
    let id = app
        .post_webhook(&payload(vec![firing]))
        .await
        .json::<Value>()
        .await
        .unwrap()["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap();
    let mut resolved = alert(
        "PostgreSQLBackupFailed",
        "dddddddddddddddd",
        "resolved",
        "2026-11-25T01:02:03.456Z",
    );
    resolved["endsAt"] = json!("2026-11-25T00:00:00Z");

    let resp = app.post_webhook(&payload(vec![resolved])).await;

    assert_eq!(resp.status(), 202);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["alerts"][0]["outcome"], "resolved");
    let incident = app.incident(id).await;
    assert_eq!(incident["resolved_at"], "2026-11-25T01:02:03.456Z");
    let resolved_event = incident["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "resolved")
        .expect("resolved event")
        .clone();
    assert!(
        resolved_event["detail"]["adjustments"]
            .to_string()
            .contains("precedes startsAt: clamped to startsAt"),
        "{resolved_event}"
    );
}

pub async fn a_leap_second_start_is_served_in_one_form_by_both_stores(backend: Backend) {
    let app = spawn_app(backend).await;
    let leap = alert(
        "PostgreSQLBackupFailed",
        "eeeeeeeeeeeeeeee",
        "firing",
        "2016-12-31T23:59:60.5Z",
    );

    let resp = app.post_webhook(&payload(vec![leap])).await;

    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap();
    let incident = app.incident(id).await;
    assert_eq!(incident["starts_at"], "2017-01-01T00:00:00.500Z");
    assert_eq!(
        incident["timeline"][0]["detail"]["starts_at"],
        "2017-01-01T00:00:00.500Z"
    );
}

pub async fn duplicate_keys_in_labels_or_annotations_are_a_400_naming_the_key(backend: Backend) {
    let app = spawn_app(backend).await;
    let one = backup_failed("ffffffffffffffff").to_string();
    for (what, body) in [
        (
            "labels",
            one.replace(
                "\"severity\":\"critical\"",
                "\"severity\":\"critical\",\"severity\":\"info\"",
            ),
        ),
        (
            "annotations",
            one.replace(
                "\"summary\":\"PostgreSQL backup failed\"",
                "\"summary\":\"a\",\"summary\":\"b\"",
            ),
        ),
    ] {
        assert_ne!(body, one, "the duplicate was written into {what}");
        let delivery = payload(vec![json!("ALERT")])
            .to_string()
            .replace("\"ALERT\"", &body);

        let resp = app
            .post_webhook_raw(delivery, Some(&format!("Bearer {WEBHOOK_TOKEN}")))
            .await;

        assert_eq!(resp.status(), 400, "{what}");
        let err: Value = resp.json().await.unwrap();
        let message = err["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("alerts[0].{what}")) && message.contains("duplicate key"),
            "{message}"
        );
    }
    assert!(app.incidents().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_alert_names_stay_bounded_and_are_never_written_raw_into_metrics() {
    let app = spawn_app(Backend::Sqlite).await;
    for round in 0..2 {
        let mut alerts: Vec<Value> = (0..400)
            .map(|i| {
                alert(
                    &format!("Invented{round}x{i}"),
                    &format!("{:016x}", round * 1000 + i),
                    "firing",
                    "2026-11-25T01:02:03Z",
                )
            })
            .collect();
        alerts.push(alert(
            "Nul\u{0}\"quote\nnewline",
            "abcdefabcdef0000",
            "firing",
            "2026-11-25T01:02:03Z",
        ));
        let resp = app.post_webhook(&payload(alerts)).await;
        assert_eq!(resp.status(), 202);
    }

    let text = app.get("/metrics").await.text().await.unwrap();

    // The recorder is shared by the tests of this binary: count this service's names.
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("backup_remediator_alerts_ignored_total{alertname=\"Invented"))
        .collect();
    assert!(
        (1..=20).contains(&series.len()),
        "at most 20 names, then `other`: {} series",
        series.len()
    );
    assert!(
        text.contains("backup_remediator_alerts_ignored_total{alertname=\"other\"}"),
        "the rest counts as other"
    );
    assert!(!text.contains('\u{0}'), "a raw NUL reached /metrics");
    assert!(!text.contains("quote"), "a raw odd name reached /metrics");
}
