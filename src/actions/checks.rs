//! Read-only checks between actions.

use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::{ActionContext, ActionError};
use crate::domain::finding::Signal;
use crate::probes::database::Database;
use crate::probes::Probe;

/// Waits (up to `remediation.database_wait_seconds`) until the database answers the backup
/// user: the database probe reports no connection failure.
pub async fn database_answers(ctx: &ActionContext) -> Result<Value, ActionError> {
    let wait = Duration::from_secs(ctx.settings.remediation.database_wait_seconds);
    let deadline = Duration::from_millis(ctx.settings.probes.deadline_ms);
    let end = Instant::now() + wait;
    let mut tries = 0u32;
    loop {
        tries += 1;
        // A fresh context each time: the Secret is read again.
        let probe_ctx = std::sync::Arc::new(ctx.probes.fresh());
        let out = tokio::time::timeout(deadline, Database.run(probe_ctx).map(Some))
            .await
            .ok()
            .flatten();
        let unreachable = match &out {
            Some(o) => o.signals.iter().find(|s| {
                matches!(
                    s,
                    Signal::DatabaseUnreachable { .. } | Signal::DatabaseConnectionFailed { .. }
                )
            }),
            None => None,
        };
        match (&out, unreachable) {
            (Some(o), None) => {
                return Ok(json!({ "answers": true, "tries": tries, "summary": o.summary }))
            }
            _ if Instant::now() + Duration::from_secs(5) > end => {
                let why = out.map_or("the database probe timed out".to_owned(), |o| o.summary);
                return Err(format!(
                    "the database still does not answer after {} s ({tries} tries): {why}",
                    wait.as_secs()
                )
                .into());
            }
            _ => tokio::time::sleep(Duration::from_secs(5)).await,
        }
    }
}
