//! The vocabulary: plain types with parsing constructors. Imports nothing else of the crate.

pub mod action;
pub mod names;
