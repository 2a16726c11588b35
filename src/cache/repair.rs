//! cache_repair's engine: salvage through the reader in repair mode
//! (`dump::MetadataItems`), then the restore engine: validated and sized
//! first, so nothing is written to an output too small for what was
//! salvaged, then built with the superblock last. The input's format is
//! kept, and the clean-shutdown flag set (as the reference does: the
//! salvaged dirty bits, unreadable ones taken as dirty, are what the
//! kernel should trust).

use std::path::Path;

use anyhow::{anyhow, Context, Result};

use crate::io::sink::BlockSink;
use crate::io::BlockSource;
use crate::report::phases;

use super::dump::{self, DumpOptions, MetadataItems};
use super::restore::{build_items, validate_items_logged, ItemSource, RestoreOptions};
use super::superblock::Superblock;

/// What a repair salvaged and wrote.
pub struct Repaired {
    pub superblock: Superblock,
    /// What could not be kept, one line each.
    pub warnings: Vec<String>,
}

/// Repairs the cache metadata in `src` onto an output of `bytes` bytes
/// named `output`, which `open` opens only once the salvage is validated
/// and known to fit; `keep` is the transaction already there.
pub fn repair_to<S: BlockSink>(
    src: &BlockSource,
    output: &Path,
    bytes: u64,
    keep: Option<roaring::RoaringTreemap>,
    open: impl FnOnce() -> Result<S>,
) -> Result<Repaired> {
    let opts = DumpOptions { repair: true };
    let md = dump::open(src, &opts)?;
    let mut warnings = dump::losses(&md);
    let restore = RestoreOptions {
        metadata_version: md.version(),
        clean_shutdown: true,
    };
    let mut items = MetadataItems::new(&md, &opts);
    let (plan, log) = validate_items_logged(&mut items, restore.metadata_version, true, true)
        .map_err(|e| anyhow!("salvaged item {}: {}", e.offset, e.message))
        .context("the salvaged metadata is not consistent")?;
    warnings.append(&mut items.warnings);
    phases::phase("repair: salvaged and validated");
    let usable = plan.room(&format!("'{}'", output.display()), bytes)?;
    let mut sink = open().context("output error")?;
    let place = |at: u64| format!("salvaged item {at}");
    // The salvage replayed, or (past the log's budget) salvaged again.
    let (mut replay, mut again);
    let items: &mut dyn ItemSource = match &log {
        Some(log) => {
            replay = log.replay();
            &mut replay
        }
        None => {
            again = MetadataItems::new(&md, &opts);
            &mut again
        }
    };
    let superblock = build_items(items, &place, &plan, &restore, &mut sink, usable, keep)
        .context("output error")?;
    Ok(Repaired {
        superblock,
        warnings,
    })
}
