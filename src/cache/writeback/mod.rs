//! cache_writeback's engine: the dirty blocks of a cache copied from the
//! fast device to the origin, offline, from the metadata alone.
//!
//! - [`select`]: which cache blocks to write back (the dirty ones after
//!   a clean shutdown; every mapped one after an unclean shutdown, when
//!   the dirty bits cannot be trusted);
//! - [`copy`]: the copy engine (sorted, merged, overlapped, retried,
//!   failures confined to their blocks);
//! - [`fault`]: injected I/O errors for the tests.

pub mod copy;
pub mod fault;
pub mod update;

use anyhow::{bail, Result};

use crate::cache::read::CacheMetadata;

use copy::Job;

/// The cache blocks to write back, in cache-block order. The metadata
/// must be whole (the caller has checked it): a damaged array is an
/// error here, as a block it hides could be dirty.
pub fn select(md: &CacheMetadata<'_>) -> Result<Vec<Job>> {
    if let Some(d) = md.damage().first() {
        bail!("metadata damaged: {d}");
    }
    let every_mapped = !md.sb.clean_shutdown();
    Ok(md
        .mapped()
        .filter(|e| every_mapped || e.dirty != Some(false))
        .map(|e| Job {
            cblock: e.cblock,
            oblock: e.mapping.origin,
        })
        .collect())
}
