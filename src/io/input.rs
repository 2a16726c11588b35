//! The rules every tool applies to its input and output paths before it
//! reads or writes metadata.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use anyhow::{bail, Result};

use super::source::BlockSource;
use super::BLOCK_SIZE;

/// The path exists and is a regular file or a block device (links are
/// followed).
pub fn check_path(path: &Path) -> Result<()> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("Couldn't find input file '{}'", path.display())
        }
        Err(e) => bail!("{}: {e}", path.display()),
    };
    let ft = meta.file_type();
    if !ft.is_file() && !ft.is_block_device() {
        bail!("Not a block device or regular file '{}'", path.display());
    }
    Ok(())
}

/// The opened input holds at least one block and, where `reject_xml` is
/// set, does not look like an XML dump given by mistake.
pub fn check_binary(src: &BlockSource, reject_xml: bool) -> Result<()> {
    if src.len() < BLOCK_SIZE {
        bail!(
            "'{}' is too small to hold metadata ({} bytes; at least {} are needed). \
             Is this binary metadata?",
            src.path().display(),
            src.len(),
            BLOCK_SIZE
        );
    }
    if reject_xml {
        let head = src.block(0).map(|b| &b[..16]).unwrap_or(&[]);
        if looks_like_xml(head) {
            bail!(
                "'{}' looks like XML; this tool reads binary metadata only \
                 (thin_restore turns XML into binary metadata)",
                src.path().display()
            );
        }
    }
    Ok(())
}

fn looks_like_xml(head: &[u8]) -> bool {
    let text = head.trim_ascii_start();
    text.starts_with(b"<superblock") || text.starts_with(b"<!DOCTYPE") || text.starts_with(b"<?xml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_spotted() {
        assert!(looks_like_xml(b"<superblock uuid"));
        assert!(looks_like_xml(b"  <?xml version"));
        assert!(!looks_like_xml(&[0u8; 16]));
    }
}
