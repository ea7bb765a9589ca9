//! PLACEHOLDER — being written; must not land as is.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Probe, ProbeContext, ProbeOutput};

pub struct S3;

impl Probe for S3 {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn run(&self, _ctx: Arc<ProbeContext>) -> BoxFuture<'static, ProbeOutput> {
        Box::pin(async { ProbeOutput::skipped("PLACEHOLDER") })
    }
}
