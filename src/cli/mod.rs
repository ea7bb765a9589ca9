//! What the command line needs beyond clap: the terminal report of findings and diagnosis, and
//! the client that approves or rejects steps on a running service.

pub mod approvals;
pub mod report;
