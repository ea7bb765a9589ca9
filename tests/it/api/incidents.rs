//! `GET /api/v1/incidents` and `GET /api/v1/incidents/{id}`.

use serde_json::Value;

use crate::support::app::*;

on_both_stores!(
    listing_pages_newest_first_with_a_stable_cursor,
    listing_filters_by_status_and_time
);

async fn open(app: &TestApp, fingerprint: &str) -> i64 {
    let resp = app
        .post_webhook(&payload(vec![backup_failed(fingerprint)]))
        .await;
    assert_eq!(resp.status(), 202);
    resp.json::<Value>().await.unwrap()["alerts"][0]["incident_id"]
        .as_i64()
        .unwrap()
}

fn ids(page: &Value) -> Vec<i64> {
    page["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect()
}

pub async fn listing_pages_newest_first_with_a_stable_cursor(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut opened = Vec::new();
    for i in 0..5 {
        opened.push(open(&app, &format!("a{i:015}")).await);
    }

    let first: Value = app
        .api_get("/api/v1/incidents?limit=2")
        .await
        .json()
        .await
        .unwrap();
    // A new incident between pages must not shift the pages that follow.
    let newer = open(&app, "b000000000000000").await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second: Value = app
        .api_get(&format!("/api/v1/incidents?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();
    let cursor = second["next_cursor"]
        .as_str()
        .expect("a third page")
        .to_owned();
    let third: Value = app
        .api_get(&format!("/api/v1/incidents?limit=2&cursor={cursor}"))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(ids(&first), [opened[4], opened[3]]);
    assert_eq!(ids(&second), [opened[2], opened[1]]);
    assert_eq!(ids(&third), [opened[0]]);
    assert!(
        third["next_cursor"].is_null(),
        "the last page has no cursor"
    );
    let all: Value = app.api_get("/api/v1/incidents").await.json().await.unwrap();
    assert_eq!(ids(&all)[0], newer);
}

pub async fn listing_filters_by_status_and_time(backend: Backend) {
    let app = spawn_app(backend).await;
    let kept_open = open(&app, "c000000000000001").await;
    let to_resolve = open(&app, "c000000000000002").await;
    let resolved = alert(
        "PostgreSQLBackupFailed",
        "c000000000000002",
        "resolved",
        "2026-11-25T01:02:03.456Z",
    );
    assert_eq!(
        app.post_webhook(&payload(vec![resolved])).await.status(),
        202
    );

    let open_page: Value = app
        .api_get("/api/v1/incidents?status=open")
        .await
        .json()
        .await
        .unwrap();
    let resolved_page: Value = app
        .api_get("/api/v1/incidents?status=resolved")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&open_page), [kept_open]);
    assert_eq!(ids(&resolved_page), [to_resolve]);

    let opened_at = app.incident(to_resolve).await["opened_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let since: Value = app
        .api_get(&format!("/api/v1/incidents?since={opened_at}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&since), [to_resolve], "since is inclusive");
    let until: Value = app
        .api_get(&format!("/api/v1/incidents?until={opened_at}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&until), [kept_open], "until is exclusive");
    let future: Value = app
        .api_get("/api/v1/incidents?since=2999-01-01T00:00:00Z")
        .await
        .json()
        .await
        .unwrap();
    assert!(ids(&future).is_empty());
}

#[tokio::test]
async fn bad_filters_get_400_with_a_reason() {
    let app = spawn_app(Backend::Sqlite).await;
    for (query, names) in [
        ("status=broken", "status"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("since=yesterday", "since"),
        ("cursor=abc", "cursor"),
        ("colour=red", "colour"),
    ] {
        let resp = app.api_get(&format!("/api/v1/incidents?{query}")).await;
        assert_eq!(resp.status(), 400, "{query}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["error"].as_str().unwrap().contains(names),
            "{query}: {err}"
        );
    }
}

#[tokio::test]
async fn an_unknown_incident_is_a_json_404_and_a_bad_id_a_400() {
    let app = spawn_app(Backend::Sqlite).await;

    let missing = app.api_get("/api/v1/incidents/999").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"],
        "no incident with id 999"
    );

    let bad = app.api_get("/api/v1/incidents/not-a-number").await;
    assert_eq!(bad.status(), 400);
    assert!(bad.json::<Value>().await.unwrap()["error"].is_string());
}

#[tokio::test]
async fn the_api_needs_its_own_token() {
    let app = spawn_app(Backend::Sqlite).await;
    let id = open(&app, "d000000000000000").await;

    for token in [None, Some(WEBHOOK_TOKEN), Some("nope")] {
        for path in [
            "/api/v1/incidents".to_owned(),
            format!("/api/v1/incidents/{id}"),
        ] {
            let mut req = app.client.get(format!("{}{path}", app.address));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{path} with {token:?}");
        }
    }
    assert_eq!(app.api_get("/api/v1/incidents").await.status(), 200);
}
