//! The HTTP interface: the Alertmanager webhook, the REST API under `/api/v1`, operations
//! endpoints, the OpenAPI document generated from the same route definitions, and the pages a
//! person reads in a browser (`/ui/`).

mod approvals;
mod auth;
mod backups;
mod error;
mod extract;
mod health;
mod incidents;
mod limits;
mod openapi;
mod restore_tests;
pub mod server;
pub mod slack;
pub mod ui;
mod webhook;
mod whoami;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

pub use auth::{AdminCaller, Auth, Identity, ReloadTrigger, ACTOR_HEADER};
pub use error::{ApiError, ErrorBody};

use crate::domain::incident::Incident;
use crate::store::Store;
use crate::workflow::intake::Intake;

/// What every handler can reach. One shared allocation: axum clones the state for every request.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of [`AppState`].
pub struct Shared {
    pub store: Store,
    pub intake: Arc<Intake>,
    pub auth: Arc<Auth>,
    pub metrics: PrometheusHandle,
    pub body_limit: usize,
    /// A request body must be complete this long after its head (else 408).
    pub body_timeout: Duration,
    /// The configured database names of every target, which the document lists.
    pub databases: Vec<String>,
    /// The configured targets' names, which the document lists.
    pub targets: Vec<String>,
    /// Wakes steps waiting for an approval in this process (None: no remediation here).
    pub approvals: Option<Arc<tokio::sync::Notify>>,
    /// Every target's restore tester (`/api/v1/restore-tests`) and manual backup launcher
    /// (`/api/v1/backups`).
    pub runbooks: Arc<crate::runbook::fleet::RunbookFleet>,
    /// Verifies and decides the Approve/Reject clicks of Slack messages (`/slack/interactions`).
    pub slack: Arc<slack::SlackApprovals>,
    /// The browser pages' session key and settings (`/ui/`).
    pub pages: ui::PageSettings,
}

impl AppState {
    /// Adds the re-sends counted in memory and not yet written, so the API is exact at once.
    fn with_pending(&self, incident: &mut Incident) {
        if let Some(p) = self.intake.pending(incident.id) {
            incident.renotified_count += p.count;
            incident.last_seen_at = incident.last_seen_at.max(p.last_seen_at);
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "backup-remediator",
        description = "Diagnoses and safely remediates failed PostgreSQL backups from Alertmanager alerts."
    ),
    modifiers(&SecuritySchemes)
)]
struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        c.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

fn openapi_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(webhook::router())
        .merge(incidents::router())
        .merge(approvals::router())
        .merge(health::router())
        .merge(restore_tests::router())
        .merge(backups::router())
        .merge(whoami::router())
        .merge(slack::router())
}

/// The OpenAPI document of every route, generated from the same definitions `app` serves, with
/// the constraints the handlers enforce (the served one also lists the configured databases).
pub fn openapi() -> serde_json::Value {
    document(None, None)
}

fn document(databases: Option<&[String]>, targets: Option<&[String]>) -> serde_json::Value {
    let mut doc = openapi_router().into_openapi();
    doc.paths
        .paths
        .insert(OPENAPI_PATH.to_owned(), openapi_path_item());
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    openapi::constrain(&mut doc, databases, targets);
    doc
}

fn openapi_path_item() -> utoipa::openapi::PathItem {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder};
    use utoipa::openapi::ResponseBuilder;
    utoipa::openapi::PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new()
            .summary(Some("This OpenAPI document"))
            .tag("operations")
            .response(
                "200",
                ResponseBuilder::new()
                    .description("OpenAPI 3 document")
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::schema::Object::new()))
                            .build(),
                    )
                    .build(),
            ),
    )
}

/// The whole application: routes, auth, limits, metrics and request tracing.
pub fn app(state: AppState) -> Router {
    let (router, _) = openapi_router().split_for_parts();
    let doc = Arc::new(document(Some(&state.databases), Some(&state.targets)));
    let body_limit = state.body_limit;
    let body_timeout = limits::BodyTimeout(state.body_timeout);
    router
        .route(
            OPENAPI_PATH,
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .merge(ui::router())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(body_timeout, edge))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let route = req.extensions().get::<MatchedPath>();
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        route = route.map_or("unmatched", MatchedPath::as_str),
                        status = tracing::field::Empty,
                    )
                })
                .on_request(())
                .on_response(|resp: &Response, latency: Duration, span: &Span| {
                    span.record("status", resp.status().as_u16());
                    tracing::debug!(latency_ms = latency.as_secs_f64() * 1e3, "answered");
                })
                .on_failure(()),
        )
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no route for {method} {}", uri.path()))
}

/// Every request's edge, in one middleware (each `from_fn` layer costs a clone of the boxed
/// service below it and a boxed future, per request): the request-body deadline, the JSON shape
/// of every error answer, and the request count and latency by route template (never by raw
/// path: bounded labels).
async fn edge(State(limit): State<limits::BodyTimeout>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let resp = limits::as_json_error(limits::with_body_deadline(limit, req, next).await).await;
    let route = route.as_ref().map_or("unmatched", |r| r.as_str());
    latency_histogram(&method, route, resp.status().as_u16()).record(start.elapsed().as_secs_f64());
    resp
}

/// The latency histogram of (method, route, status), registered once: the request path then
/// costs a read-locked lookup without allocation instead of a registry lookup with owned labels.
/// The histogram's `_count` is the request counter.
fn latency_histogram(method: &Method, route: &str, status: u16) -> metrics::Histogram {
    type Cache = RwLock<HashMap<(&'static str, u16), HashMap<String, metrics::Histogram>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Clients choose the method: anything unusual is one label, so the series stay bounded.
    let method: &'static str = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let key = (method, status);
    if let Some(h) = cache
        .read()
        .ok()
        .and_then(|c| c.get(&key).and_then(|m| m.get(route)).cloned())
    {
        return h;
    }
    let h = crate::metrics::http_request_duration(method, route, status);
    if let Ok(mut c) = cache.write() {
        c.entry(key)
            .or_default()
            .insert(route.to_owned(), h.clone());
    }
    h
}
