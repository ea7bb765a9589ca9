//! The real application over HTTP, on real PostgreSQL and SQLite stores.

mod alertmanager;
mod auth;
mod backup_lock;
mod backups;
mod connections;
mod diagnosis;
mod fuzz;
mod health;
mod incidents;
mod ingest;
mod openapi;
mod slack;
mod store_conditions;
pub mod webhook;
