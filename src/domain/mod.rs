//! The vocabulary of the runbook: alerts, incidents, findings, diagnoses, plans, the policy, the
//! records of restore tests and manual backups, the notification outbox. Plain types with parsing
//! constructors and pure decisions (diagnosis, policy) that take data and return data.
//!
//! Imports nothing else of the crate (`tests/it/layout.rs` checks it), so every other layer can
//! use it and the clever part is testable without any server.

pub mod action;
pub mod alert;
pub mod diagnosis;
pub mod duration;
pub mod escalation;
pub mod finding;
pub mod freshness;
pub mod incident;
pub mod manual_backup;
pub mod names;
pub mod patterns;
pub mod plan;
pub mod policy;
pub mod quantity;
pub mod restore_test;
pub mod source;
pub mod target;
pub mod wal;
