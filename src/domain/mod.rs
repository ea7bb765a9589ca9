//! The vocabulary of the runbook: plain types and their wording, importing nothing else of the
//! crate.

pub mod duration;
