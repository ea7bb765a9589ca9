//! The integration tests, in one binary (as zero2prod's `tests/api/`): the real application, the
//! real binary and the real PostgreSQL, Prometheus and moto around it, with the stand-ins and
//! fixtures of `support/`. Every test runs as a thread of this one process: what a test must own
//! process-wide (a fixed port) it takes through [`support::exclusive`].

#[macro_use]
mod support;

mod actions;
mod api;
mod auth;
mod claims;
mod cli;
mod cluster;
mod deploy;
mod docs;
mod gate;
mod gate_kill;
mod gate_resume;
mod gate_store;
mod jobs;
mod layout;
mod listings;
mod notify;
mod one_page;
mod primary_down;
mod probes_aws;
mod probes_cluster;
mod probes_local;
mod read_only;
mod restore;
mod scenarios;
mod silent_failures;
mod sources;
mod sources_cnpg;
mod store_load;
mod targets;
mod ui;
