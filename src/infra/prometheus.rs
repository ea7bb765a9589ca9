//! A small client for Prometheus's HTTP API: instant queries returning a vector.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One series of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Why a query failed, in words an operator can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus answered HTTP {status}: {body}")]
    Http { status: u16, body: String },
    #[error("Prometheus refused the query ({kind}): {message}")]
    Query { kind: String, message: String },
    #[error("unexpected answer from Prometheus: {0}")]
    Decode(String),
}

#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    result: Vec<RawSample>,
}

#[derive(Deserialize)]
struct RawSample {
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// `url` as it may be shown (findings, logs, Slack): a `user:password@` loses its password.
pub fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Only fails for URLs that cannot have credentials, which this one has.
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

/// Runs an instant query against `base_url` (e.g. `http://prometheus:9090`).
pub async fn query(
    http: &reqwest::Client,
    base_url: &str,
    promql: &str,
) -> Result<Vec<Sample>, QueryError> {
    let url = format!("{}/api/v1/query", base_url.trim_end_matches('/'));
    let resp = http
        .get(&url)
        .query(&[("query", promql)])
        .send()
        .await
        .map_err(|e| QueryError::Unreachable {
            url: without_password(base_url),
            reason: root_cause(&e),
        })?;
    let status = resp.status();
    let body = resp
        .text()
        .await
        .map_err(|e| QueryError::Decode(e.to_string()))?;
    let env: Envelope = match serde_json::from_str(&body) {
        Ok(env) => env,
        Err(_) if !status.is_success() => {
            return Err(QueryError::Http {
                status: status.as_u16(),
                body: body.chars().take(200).collect(),
            })
        }
        Err(e) => return Err(QueryError::Decode(e.to_string())),
    };
    if env.status != "success" {
        return Err(QueryError::Query {
            kind: env.error_type.unwrap_or_default(),
            message: env.error.unwrap_or_default(),
        });
    }
    let data = env
        .data
        .ok_or_else(|| QueryError::Decode("no data".into()))?;
    if data.result_type != "vector" {
        return Err(QueryError::Decode(format!(
            "expected a vector, got {}",
            data.result_type
        )));
    }
    data.result
        .into_iter()
        .map(|s| {
            let value = s
                .value
                .1
                .parse::<f64>()
                .map_err(|e| QueryError::Decode(format!("value {:?}: {e}", s.value.1)))?;
            Ok(Sample {
                labels: s.metric,
                value,
            })
        })
        .collect()
}

/// The innermost cause of an error, which is what says "connection refused".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Quotes a label value for PromQL.
pub fn label_value(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}
