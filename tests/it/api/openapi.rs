//! The OpenAPI document is generated from the routes and must stay in step with them.

use serde_json::Value;

use crate::support::app::*;

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_exists() {
    let app = spawn_app(Backend::Sqlite).await;

    let resp = app.get("/api/v1/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            listed.push((method.to_uppercase(), path.clone()));
        }
    }
    listed.sort();
    let expected = [
        ("GET", "/api/v1/backups"),
        ("GET", "/api/v1/backups/{id}"),
        ("GET", "/api/v1/incidents"),
        ("GET", "/api/v1/incidents/{id}"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/restore-tests"),
        ("GET", "/api/v1/restore-tests/{id}"),
        ("GET", "/api/v1/whoami"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/readyz"),
        ("POST", "/api/v1/backups"),
        ("POST", "/api/v1/incidents/{id}/actions/{action_id}/approve"),
        ("POST", "/api/v1/incidents/{id}/actions/{action_id}/reject"),
        ("POST", "/api/v1/restore-tests"),
        ("POST", "/slack/interactions"),
        ("POST", "/webhook/alertmanager"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        listed, expected,
        "the document lists exactly the served routes"
    );

    // Every documented operation is served (no 404/405 from the router).
    for (method, path) in &listed {
        let url = format!("{}{}", app.address, path.replace("{id}", "1"));
        let resp = app
            .client
            .request(method.parse().unwrap(), url)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}");
        assert!(
            !body.contains("no route for"),
            "{method} {path} is not routed: {status} {body}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn the_document_states_the_constraints_the_server_enforces() {
    let doc = serde_json::to_value(backup_remediator::api::openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let list = &doc["paths"]["/api/v1/incidents"]["get"]["parameters"];
    let param = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("parameter {name}"))["schema"]
            .clone()
    };
    assert_eq!(
        schemas["IncidentStatus"]["enum"],
        serde_json::json!(["open", "resolved", "escalated", "remediated"])
    );
    assert_eq!(
        param("status")["$ref"],
        "#/components/schemas/IncidentStatus"
    );
    assert_eq!(param("limit")["maximum"], 500);
    assert_eq!(param("limit")["minimum"], 1);
    assert_eq!(
        schemas["WebhookPayload"]["properties"]["version"]["const"],
        "4"
    );
    assert_eq!(
        schemas["WebhookPayload"]["properties"]["alerts"]["minItems"],
        1
    );
    assert_eq!(
        schemas["WebhookAlert"]["properties"]["labels"]["required"],
        serde_json::json!(["alertname"])
    );
    for decision in ["approve", "reject"] {
        let path = format!("/api/v1/incidents/{{id}}/actions/{{action_id}}/{decision}");
        let body =
            &doc["paths"][&path]["post"]["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(
            body["$ref"], "#/components/schemas/DecisionBody",
            "{decision}: null is refused, so not offered: {body}"
        );
        let actor = doc["paths"][&path]["post"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "X-Actor")
            .unwrap()["schema"]
            .clone();
        assert_eq!(actor["maxLength"], 100);
    }
}

#[test]
fn the_api_page_lists_the_document_among_the_open_routes() {
    let page =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/api.md")).unwrap();
    assert!(
        page.contains("| `GET /api/v1/openapi.json` | — |"),
        "the route table of docs/src/api.md lists the document as open"
    );
}

#[test]
fn the_generated_document_matches_the_served_one() {
    let doc = serde_json::to_value(backup_remediator::api::openapi()).unwrap();
    assert!(doc["paths"]["/webhook/alertmanager"]["post"]["requestBody"].is_object());
    assert!(doc["components"]["schemas"]["WebhookPayload"].is_object());
    assert!(doc["components"]["schemas"]["Incident"].is_object());
}
