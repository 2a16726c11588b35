//! Image editing for tests: the library's damage module.
#![allow(unused_imports)]

pub use dmpd::thin::damage::{Damage, Image, BS};
