//! Rewriting block 0 in place: the one write a checker makes when all it
//! changes is a superblock flag (clearing needs_check). One block write,
//! then a flush: after a crash the flag is set or clear, and the metadata
//! valid either way.

use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::checksum::{self, BlockKind};
use super::sink::{BlockSink, FileSink};
use super::BLOCK_SIZE;

/// Reads block 0 of `path`, which must carry a valid `kind` checksum,
/// lets `edit` change it (false: nothing to change, nothing written),
/// reseals it and writes it back. Returns whether it wrote.
pub fn rewrite_superblock(
    path: &Path,
    kind: BlockKind,
    edit: impl FnOnce(&mut [u8]) -> bool,
) -> Result<bool> {
    let mut sink = FileSink::open(path)
        .with_context(|| format!("cannot open '{}' to rewrite its superblock", path.display()))?;
    let file = std::fs::File::open(path)?;
    if file.metadata()?.file_type().is_block_device() {
        super::source::drop_cached_pages(&file);
    }
    let mut block = vec![0u8; BLOCK_SIZE];
    file.read_exact_at(&mut block, 0)
        .with_context(|| format!("cannot read the superblock of '{}'", path.display()))?;
    if !checksum::matches(&block, kind) {
        bail!(
            "bad checksum in superblock of '{}'; not rewriting it",
            path.display()
        );
    }
    if !edit(&mut block) {
        return Ok(false);
    }
    checksum::seal(&mut block, kind);
    sink.write_block(0, &block)
        .and_then(|_| sink.flush())
        .with_context(|| format!("cannot write the superblock of '{}'", path.display()))?;
    Ok(true)
}
