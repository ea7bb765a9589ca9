//! PLACEHOLDER — being written; must not land as is.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Probe, ProbeContext, ProbeOutput};

pub struct Iam;

impl Probe for Iam {
    fn name(&self) -> &'static str {
        "iam"
    }

    fn run(&self, _ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async { ProbeOutput::skipped("PLACEHOLDER") })
    }
}
