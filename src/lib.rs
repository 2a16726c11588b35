//! dmpd: offline tools for device-mapper thin-provisioning, cache and era
//! metadata.
//!
//! Layers, each depending only on those above it in this list:
//! - `io`: block sources and sinks, checksums, file rules;
//! - `report`: how tools talk to the user (quiet, plain, progress bar);
//! - `pdata`: btrees, space maps, reference counting;
//! - `thin` (and later `cache`, `era`): the target's structures and the
//!   work done on them (check, dump, restore, repair);
//! - `commands`: one file per tool, its command line and a thin `run`.

pub mod cache;
pub mod commands;
pub mod era;
pub mod io;
pub mod pdata;
pub mod report;
#[doc(hidden)]
pub mod testing;
pub mod thin;
