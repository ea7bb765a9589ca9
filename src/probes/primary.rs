//! PLACEHOLDER — being written; must not land as is.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Probe, ProbeContext, ProbeOutput};

pub struct Primary;

impl Probe for Primary {
    fn name(&self) -> &'static str {
        "primary"
    }

    fn run(&self, _ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async { ProbeOutput::skipped("PLACEHOLDER") })
    }
}
