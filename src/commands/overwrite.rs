//! The question the pack tools ask before replacing what looks like
//! metadata.

use std::io::{BufRead, Write};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

use anyhow::{bail, Result};

use crate::io::checksum::{self, BlockKind};
use crate::io::BLOCK_SIZE;

/// Whether `path` holds a valid thin, cache or era superblock at block 0.
fn holds_metadata(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if !meta.file_type().is_file() && !meta.file_type().is_block_device() {
        return false;
    }
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut block = vec![0u8; BLOCK_SIZE];
    if f.read_exact_at(&mut block, 0).is_err() {
        return false;
    }
    matches!(
        checksum::kind_of(&block),
        Some(BlockKind::ThinSuperblock | BlockKind::CacheSuperblock | BlockKind::EraSuperblock)
    )
}

/// Unless `force`, asks on stderr before `path`'s metadata is replaced;
/// only "y" or "yes" goes on.
pub fn confirm(path: &Path, force: bool) -> Result<()> {
    if force || !holds_metadata(path) {
        return Ok(());
    }
    eprint!(
        "'{}' already holds metadata; overwrite it? [y/n]: ",
        path.display()
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    let answer = answer.trim().to_ascii_lowercase();
    if answer == "y" || answer == "yes" {
        return Ok(());
    }
    bail!(
        "output not overwritten: '{}' keeps its metadata",
        path.display()
    )
}
