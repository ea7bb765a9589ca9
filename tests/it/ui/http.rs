//! The pages over plain HTTP: what a browser would be sent, header by header.

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use super::{csrf_of, no_redirects, with_admin, ADMIN_TOKEN};
use crate::support::app::{spawn_app_with, Backend, TestApp, API_TOKEN};
use crate::support::approvals::waiting_for_approval;
use crate::support::incident::new_incident;

/// A browser's view of the app: no redirects followed, one cookie kept by hand.
struct Visitor<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Visitor<'a> {
    fn new(app: &'a TestApp) -> Self {
        Self {
            app,
            client: no_redirects(),
            cookie: None,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.app.address)
    }

    async fn get(&self, path: &str) -> Response {
        let mut req = self.client.get(self.url(path));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().await.expect("GET")
    }

    async fn page(&self, path: &str) -> String {
        let resp = self.get(path).await;
        assert_eq!(resp.status(), 200, "GET {path}");
        resp.text().await.unwrap()
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Response {
        let mut req = self.client.post(self.url(path)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().await.expect("POST")
    }

    /// Signs in with `token`; the answer (the cookie is kept when one is set).
    async fn sign_in(&mut self, token: &str) -> Response {
        let resp = self
            .post(
                "/ui/sign-in",
                &[("token", token), ("next", "/ui/incidents")],
            )
            .await;
        if let Some(set) = resp.headers().get(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        resp
    }
}

fn location(resp: &Response) -> &str {
    resp.headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

fn header<'r>(resp: &'r Response, name: &str) -> &'r str {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

async fn step_state(app: &TestApp, id: i64, step: i64) -> Value {
    let incident = app.incident(id).await;
    incident["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == step)
        .cloned()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_out_every_page_redirects_to_sign_in() {
    let app = spawn_app_with(Backend::Sqlite, &with_admin()).await;
    let (id, steps) = waiting_for_approval(&app.store, &["restart_primary"]).await;
    let v = Visitor::new(&app);
    let pages = [
        "/ui".to_owned(),
        "/ui/incidents".to_owned(),
        "/ui/incidents?status=open".to_owned(),
        format!("/ui/incidents/{id}"),
        format!("/ui/incidents/{id}/actions/{}/approve", steps[0]),
        "/ui/restore-tests".to_owned(),
        "/ui/backups".to_owned(),
        "/ui/no-such-page".to_owned(),
    ];
    for p in &pages {
        let resp = v.get(p).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "GET {p}");
        assert!(
            location(&resp).starts_with("/ui/sign-in?next=%2Fui"),
            "GET {p} → {}",
            location(&resp)
        );
    }
    // Back to the page asked for, once signed in.
    let resp = v.get(&format!("/ui/incidents/{id}")).await;
    assert_eq!(
        location(&resp),
        format!("/ui/sign-in?next=%2Fui%2Fincidents%2F{id}")
    );
    // A post signed out is not decided either.
    let resp = v
        .post(
            &format!("/ui/incidents/{id}/actions/{}/approve", steps[0]),
            &[("csrf", "x")],
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        step_state(&app, id, steps[0]).await["state"],
        "waiting_approval"
    );
    // A stale or tampered cookie is no session.
    let mut forged = Visitor::new(&app);
    forged.cookie = Some("br_session=cmVhZGVyfGFkbWlu.AAAA".into());
    let resp = forged.get("/ui/incidents").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // The sign-in form itself and its stylesheet are open.
    assert_eq!(v.get("/ui/sign-in").await.status(), 200);
    assert_eq!(v.get("/ui/static/ui.css").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_carries_the_security_headers() {
    let app = spawn_app_with(Backend::Sqlite, &with_admin()).await;
    let (id, _) = waiting_for_approval(&app.store, &["restart_primary"]).await;
    let mut v = Visitor::new(&app);
    let signed_out = v.get("/ui/incidents").await;
    let sign_in_page = v.get("/ui/sign-in").await;
    v.sign_in(API_TOKEN).await;
    let mut answers = vec![signed_out, sign_in_page];
    for p in [
        "/ui/incidents".to_owned(),
        format!("/ui/incidents/{id}"),
        "/ui/incidents/99999".to_owned(),
        "/ui/incidents?status=lost".to_owned(),
        "/ui/restore-tests".to_owned(),
        "/ui/backups".to_owned(),
        "/ui/static/ui.css".to_owned(),
    ] {
        answers.push(v.get(&p).await);
    }
    for resp in &answers {
        let what = resp.url().path().to_owned();
        let csp = header(resp, "content-security-policy");
        assert!(csp.contains("default-src 'none'"), "{what}: {csp}");
        assert!(csp.contains("style-src 'self'"), "{what}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(!csp.contains("unsafe"), "{what}: {csp}");
        assert!(
            !csp.contains("script-src"),
            "no script is allowed at all: {csp}"
        );
        assert_eq!(header(resp, "referrer-policy"), "no-referrer", "{what}");
        assert_eq!(header(resp, "x-content-type-options"), "nosniff", "{what}");
        assert_eq!(header(resp, "x-frame-options"), "DENY", "{what}");
    }
    let page = v.page(&format!("/ui/incidents/{id}")).await;
    assert!(!page.contains("<script"), "no script on the page");
    assert!(
        !page.contains(" style="),
        "no inline style (the CSP forbids it)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_sets_a_strict_http_only_cookie_that_holds_no_secret() {
    let app = spawn_app_with(Backend::Sqlite, &with_admin()).await;
    let mut v = Visitor::new(&app);
    let wrong = v.sign_in("not-a-token").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert!(wrong.headers().get(SET_COOKIE).is_none());
    let body = wrong.text().await.unwrap();
    assert!(body.contains("not a reader"), "{body}");
    assert!(!body.contains("not-a-token"), "the token is not echoed");

    let resp = v.sign_in(ADMIN_TOKEN).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&resp), "/ui/incidents");
    let set = header(&resp, "set-cookie").to_owned();
    for flag in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(set.contains(flag), "{set}");
    }
    assert!(
        !set.contains("Secure"),
        "no Secure on loopback (http://127.0.0.1): {set}"
    );
    let key = app.store.installation_key("unused").await.unwrap();
    let hash = hex::encode(backup_remediator::config::sha256(ADMIN_TOKEN.as_bytes()));
    for secret in [ADMIN_TOKEN, API_TOKEN, key.as_str(), hash.as_str()] {
        assert!(!set.contains(secret), "the cookie holds a secret: {set}");
    }
    let page = v.page("/ui/incidents").await;
    assert!(
        page.contains("Signed in as <strong>admin</strong> (admin)"),
        "{page}"
    );
    for secret in [ADMIN_TOKEN, API_TOKEN, key.as_str(), hash.as_str()] {
        assert!(!page.contains(secret), "the page shows a secret");
    }

    // Signing out needs the page's token, and deletes the cookie.
    let refused = v.post("/ui/sign-out", &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let out = v.post("/ui/sign-out", &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert!(header(&out, "set-cookie").contains("Max-Age=0"));

    // A sign-in another site's page makes the browser send is refused.
    let cross = v
        .client
        .post(v.url("/ui/sign-in"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), StatusCode::FORBIDDEN);
}

async fn readers_and_admins_and_the_csrf_token(backend: Backend) {
    // Arrange: a restart waiting for a person; a reader and an admin signed in.
    let app = spawn_app_with(backend, &with_admin()).await;
    let (id, steps) = waiting_for_approval(&app.store, &["restart_primary"]).await;
    let step = steps[0];
    let approve = format!("/ui/incidents/{id}/actions/{step}/approve");
    let reject = format!("/ui/incidents/{id}/actions/{step}/reject");
    let mut reader = Visitor::new(&app);
    reader.sign_in(API_TOKEN).await;
    let mut admin = Visitor::new(&app);
    admin.sign_in(ADMIN_TOKEN).await;

    // A reader sees no button and cannot decide, even with its own page's token.
    let page = reader.page(&format!("/ui/incidents/{id}")).await;
    assert!(
        !page.contains(&approve) && !page.contains(&reject),
        "{page}"
    );
    assert!(page.contains("an admin can approve or reject"), "{page}");
    let own = csrf_of(&page);
    assert_eq!(reader.post(&reject, &[("csrf", &own)]).await.status(), 403);
    assert_eq!(reader.get(&approve).await.status(), 403);

    // The admin sees both; a post without the token, with another's, or sent from another
    // site is refused.
    let page = admin.page(&format!("/ui/incidents/{id}")).await;
    assert!(page.contains(&approve) && page.contains(&reject), "{page}");
    let csrf = csrf_of(&page);
    assert_eq!(admin.post(&reject, &[]).await.status(), 403);
    assert_eq!(admin.post(&reject, &[("csrf", &own)]).await.status(), 403);
    let cross = admin
        .client
        .post(admin.url(&reject))
        .header("cookie", admin.cookie.clone().unwrap())
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    assert_eq!(
        step_state(&app, id, step).await["state"],
        "waiting_approval"
    );

    // Approve asks first; the confirmed form decides through the API's path.
    let confirm = admin.page(&approve).await;
    assert!(
        confirm.contains("Yes, approve restart_primary"),
        "{confirm}"
    );
    let done = admin
        .post(
            &approve,
            &[
                ("csrf", &csrf_of(&confirm)),
                ("comment", "checked the primary"),
                ("on_behalf_of", "dba@example.com"),
            ],
        )
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        location(&done),
        format!("/ui/incidents/{id}?decided={step}#step-{step}")
    );
    let s = step_state(&app, id, step).await;
    assert_eq!(s["state"], "approved");
    assert_eq!(s["decided_by"], "admin");
    let page = admin
        .page(&format!("/ui/incidents/{id}?decided={step}"))
        .await;
    assert!(page.contains("Approved by <strong>admin</strong> (admin) on behalf of <strong>dba@example.com</strong>"), "{page}");
    assert!(page.contains("checked the primary"));
    let again = admin.post(&reject, &[("csrf", &csrf)]).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(again
        .text()
        .await
        .unwrap()
        .contains("not waiting for an approval"));
}

on_both_stores!(readers_and_admins_and_the_csrf_token);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_header_is_honoured_only_from_its_networks() {
    let proxy = |cidr: &str| {
        format!(
            "[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\nproxy_header = \"X-Forwarded-Email\"\n\
             proxy_cidrs = [\"{cidr}\"]\nproxy_admins = [\"alice@example.com\"]\n\
             proxy_readers = [\"bob@example.com\"]\n"
        )
    };
    let trusted = spawn_app_with(Backend::Sqlite, &proxy("127.0.0.0/8")).await;
    let elsewhere = spawn_app_with(Backend::Sqlite, &proxy("10.0.0.0/8")).await;
    let (id, steps) = waiting_for_approval(&trusted.store, &["restart_primary"]).await;
    let as_user = |app: &TestApp, path: &str, user: &str| {
        no_redirects()
            .get(format!("{}{path}", app.address))
            .header("x-forwarded-email", user)
            .send()
    };

    let alice = as_user(
        &trusted,
        &format!("/ui/incidents/{id}"),
        "alice@example.com",
    )
    .await
    .unwrap();
    assert_eq!(alice.status(), 200);
    let page = alice.text().await.unwrap();
    assert!(
        page.contains("alice@example.com</strong> (admin, through the proxy)"),
        "{page}"
    );
    assert!(
        page.contains(&format!("/actions/{}/approve", steps[0])),
        "an admin's buttons"
    );
    let bob = as_user(&trusted, &format!("/ui/incidents/{id}"), "bob@example.com")
        .await
        .unwrap();
    let page = bob.text().await.unwrap();
    assert!(
        page.contains("(reader, through the proxy)") && !page.contains("/approve\""),
        "{page}"
    );
    let mallory = as_user(&trusted, "/ui/incidents", "mallory@example.com")
        .await
        .unwrap();
    assert_eq!(mallory.status(), 403);
    assert!(mallory.text().await.unwrap().contains("auth.proxy_admins"));
    // The API does not read the header.
    let api = as_user(&trusted, "/api/v1/incidents", "alice@example.com")
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
    // From an address outside proxy_cidrs the header is ignored: signed out.
    let ignored = as_user(&elsewhere, "/ui/incidents", "alice@example.com")
        .await
        .unwrap();
    assert_eq!(ignored.status(), StatusCode::SEE_OTHER);
    assert!(location(&ignored).starts_with("/ui/sign-in"));

    // Alice decides with her page's token; a post without it is refused.
    let approve = format!(
        "{}/ui/incidents/{id}/actions/{}/approve",
        trusted.address, steps[0]
    );
    let confirm = as_user(
        &trusted,
        &format!("/ui/incidents/{id}/actions/{}/approve", steps[0]),
        "alice@example.com",
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let post = |csrf: &str| {
        no_redirects()
            .post(&approve)
            .header("x-forwarded-email", "alice@example.com")
            .form(&[("csrf", csrf)])
            .send()
    };
    assert_eq!(post("").await.unwrap().status(), 403);
    assert_eq!(
        post(&csrf_of(&confirm)).await.unwrap().status(),
        StatusCode::SEE_OTHER
    );
    let s = step_state(&trusted, id, steps[0]).await;
    assert_eq!(s["decided_by"], "alice@example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_filter_or_an_unknown_incident_is_a_page_that_says_which() {
    let app = spawn_app_with(Backend::Sqlite, &with_admin()).await;
    let mut v = Visitor::new(&app);
    v.sign_in(API_TOKEN).await;
    for (path, status, says) in [
        (
            "/ui/incidents?status=lost",
            400,
            "status: &quot;lost&quot; is not a status",
        ),
        ("/ui/incidents?target=Not_A_Target", 400, "target:"),
        ("/ui/incidents?colour=red", 400, "colour"),
        (
            "/ui/incidents?limit=0",
            400,
            "limit must be between 1 and 200",
        ),
        ("/ui/incidents/424242", 404, "There is no incident #424242."),
        ("/ui/incidents/abc", 400, "whole number"),
        (
            "/ui/nothing-here",
            404,
            "There is no page at /ui/nothing-here.",
        ),
    ] {
        let resp = v.get(path).await;
        assert_eq!(resp.status().as_u16(), status, "{path}");
        assert!(
            header(&resp, "content-type").starts_with("text/html"),
            "{path}"
        );
        let body = resp.text().await.unwrap();
        assert!(body.contains(says), "{path}: {body}");
    }
}

async fn the_list_filters_by_status_target_and_alert_name_and_pages(backend: Backend) {
    let app = spawn_app_with(backend, &with_admin()).await;
    let first = new_incident()
        .alertname("PostgreSQLBackupFailed")
        .open(&app.store)
        .await;
    let stale = new_incident()
        .alertname("PostgreSQLBackupStale")
        .open(&app.store)
        .await;
    let linked = new_incident()
        .generator_url("http://prometheus.example:9090/graph?g0.expr=postgres_backup_errors_total")
        .detail(json!({ "receiver": "backup-remediator", "external_url": "http://alertmanager.example:9093" }))
        .open(&app.store)
        .await;
    let mut v = Visitor::new(&app);
    v.sign_in(API_TOKEN).await;
    let ids = |page: &str| -> Vec<i64> {
        page.match_indices("href=\"/ui/incidents/")
            .filter_map(|(at, _)| {
                let rest = &page[at + "href=\"/ui/incidents/".len()..];
                rest[..rest.find('"')?].parse().ok()
            })
            .collect()
    };
    assert_eq!(ids(&v.page("/ui/incidents").await), [linked, stale, first]);
    assert_eq!(
        ids(&v
            .page("/ui/incidents?alertname=PostgreSQLBackupStale")
            .await),
        [stale]
    );
    assert_eq!(
        ids(&v
            .page("/ui/incidents?status=open&target=link-services&alertname=")
            .await)
        .len(),
        3
    );
    assert!(ids(&v.page("/ui/incidents?status=resolved").await).is_empty());
    let one = v.page("/ui/incidents?limit=1").await;
    assert_eq!(ids(&one), [linked]);
    let older = format!("/ui/incidents?cursor={linked}");
    assert!(one.contains(&format!("href=\"{older}\"")), "{one}");
    assert_eq!(ids(&v.page(&older).await), [stale, first]);
    // The alert's graph and the Alertmanager it came from.
    let page = v.page(&format!("/ui/incidents/{linked}")).await;
    assert!(
        page.contains(
            "href=\"http://prometheus.example:9090/graph?g0.expr=postgres_backup_errors_total\""
        ),
        "{page}"
    );
    assert!(
        page.contains("href=\"http://alertmanager.example:9093\""),
        "{page}"
    );
}

on_both_stores!(the_list_filters_by_status_target_and_alert_name_and_pages);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_insecure_no_auth_the_pages_are_read_only() {
    let extra = format!(
        "[auth]\napi_token = \"\"\ninsecure_no_auth = true\nadmin_token = \"{ADMIN_TOKEN}\"\n"
    );
    let app = spawn_app_with(Backend::Sqlite, &extra).await;
    let (id, steps) = waiting_for_approval(&app.store, &["restart_primary"]).await;
    let anyone = Visitor::new(&app);
    let page = anyone.page(&format!("/ui/incidents/{id}")).await;
    assert!(page.contains("read-only"), "{page}");
    assert!(!page.contains("/approve\""), "{page}");
    // Even an admin's session decides nothing.
    let mut admin = Visitor::new(&app);
    admin.sign_in(ADMIN_TOKEN).await;
    let page = admin.page(&format!("/ui/incidents/{id}")).await;
    assert!(!page.contains("/approve\""), "{page}");
    let resp = admin
        .post(
            &format!("/ui/incidents/{id}/actions/{}/approve", steps[0]),
            &[("csrf", &csrf_of(&page))],
        )
        .await;
    assert_eq!(resp.status(), 403);
    assert!(resp.text().await.unwrap().contains("--insecure-no-auth"));
    assert_eq!(
        step_state(&app, id, steps[0]).await["state"],
        "waiting_approval"
    );
}
