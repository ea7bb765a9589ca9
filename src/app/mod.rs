//! The process: start-up wiring (store, engine, workers, HTTP server) and telemetry.

pub mod startup;
pub mod telemetry;
