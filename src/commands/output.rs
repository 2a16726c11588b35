//! The output rules of the tools that write binary metadata into an
//! existing file or device (thin_restore, thin_repair, thin_shrink).

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{bail, Result};

use crate::io::sink::FileSink;
use crate::io::BLOCK_SIZE;
use crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS;

/// Smallest output accepted: ten metadata blocks.
const MIN_OUTPUT_BYTES: u64 = 10 * BLOCK_SIZE as u64;

/// Opens an existing output for writing; returns it and the metadata
/// blocks it offers (capped at what a space map can describe).
pub fn metadata_output(path: &Path) -> Result<(FileSink, u64)> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("Couldn't find output file '{}'", path.display())
        }
        Err(e) => bail!("{}: {e}", path.display()),
    };
    if !meta.file_type().is_file() && !meta.file_type().is_block_device() {
        bail!("Not a block device or regular file '{}'", path.display());
    }
    let sink = FileSink::open(path)?;
    let bytes = sink.len()?;
    if bytes < MIN_OUTPUT_BYTES {
        bail!(
            "Output file too small: '{}' holds {bytes} bytes, at least {MIN_OUTPUT_BYTES} are needed",
            path.display()
        );
    }
    Ok((sink, (bytes / BLOCK_SIZE as u64).min(MAX_METADATA_BLOCKS)))
}
