//! Image editing for tests: the library's damage module.
#![allow(unused_imports)]

pub use dmpd::thin::damage::{Applied, AtRisk, Damage, Image, Severity, BS, STALE_LEAKS};
