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
/// set, does not look like an XML dump given by mistake. A short file
/// that is XML is named as XML whatever `reject_xml` says: that is what
/// the user needs to hear.
pub fn check_binary(src: &BlockSource, reject_xml: bool) -> Result<()> {
    if src.len() < BLOCK_SIZE && looks_like_xml(src.head(16)) {
        bail!("{}", xml_given(src.path()));
    }
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
            bail!("{}", xml_given(src.path()));
        }
    }
    Ok(())
}

fn xml_given(path: &Path) -> String {
    format!(
        "'{}' looks like XML; this tool reads binary metadata only \
         (thin_restore, cache_restore and era_restore turn XML into binary metadata)",
        path.display()
    )
}

/// What the start of an input that is not the metadata a tool expected
/// holds, in words an administrator can act on; None when it looks like
/// nothing in particular (damage) or like the `expected` family's own
/// metadata ("thin", "cache", "era"; "" expects none).
pub fn what_it_holds(head: &[u8], expected: &str) -> Option<String> {
    use super::checksum::{kind_of, BlockKind};
    if head.is_empty() {
        return Some("it is empty".into());
    }
    if looks_like_xml(&head[..head.len().min(16)]) {
        return Some("it looks like XML (thin_restore, cache_restore and era_restore turn XML into binary metadata)".into());
    }
    if head.iter().all(|&b| b == 0) {
        return Some("block 0 is all zeros: no metadata was written there, or it was wiped".into());
    }
    if head.len() >= BLOCK_SIZE {
        let family = match kind_of(&head[..BLOCK_SIZE]) {
            Some(BlockKind::ThinSuperblock) => Some("thin"),
            Some(BlockKind::CacheSuperblock) => Some("cache"),
            Some(BlockKind::EraSuperblock) => Some("era"),
            _ => None,
        };
        if let Some(family) = family.filter(|f| *f != expected) {
            return Some(format!(
                "block 0 holds a {family} superblock: this is {family} metadata \
                 (the {family}_* tools read it)"
            ));
        }
    }
    let text = head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace() || b >= 0x80);
    if text && std::str::from_utf8(head).is_ok() {
        return Some("it holds text, not binary metadata".into());
    }
    None
}

/// Says that `src` looks truncated when the metadata device its
/// superblock describes (`described` blocks, capped at what a space map
/// addresses) is larger than what it holds.
pub fn truncation(src: &BlockSource, described: u64) -> Option<String> {
    let want = described.min(crate::pdata::space_map::bitmap::MAX_METADATA_BLOCKS);
    let have = src.nr_blocks();
    (have < want).then(|| {
        format!(
            "'{}' looks truncated: it holds {have} {} ({} bytes), but its superblock \
             describes a metadata device of {want} blocks ({} bytes)",
            src.path().display(),
            if have == 1 { "block" } else { "blocks" },
            src.len(),
            want * BLOCK_SIZE as u64
        )
    })
}

/// Refuses an input given to an XML reader that is plainly not XML:
/// empty, compressed, binary metadata or other binary data. Documents
/// that start like XML go on to the parser, which names line and column.
pub fn check_xml(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut head = Vec::with_capacity(BLOCK_SIZE);
    std::fs::File::open(path)
        .and_then(|f| f.take(BLOCK_SIZE as u64).read_to_end(&mut head))
        .map_err(|e| anyhow::anyhow!("cannot read '{}': {e}", path.display()))?;
    let name = path.display();
    if head.is_empty() {
        bail!("'{name}' is empty: an XML metadata dump was expected");
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        bail!("'{name}' is gzip-compressed: decompress it first (gunzip -c), then restore the XML");
    }
    if super::pack::is_pack(&head) {
        bail!("'{name}' is a metadata pack, not XML: thin_metadata_unpack expands it");
    }
    if head.len() == BLOCK_SIZE {
        use super::checksum::BlockKind;
        let family = match super::checksum::kind_of(&head) {
            Some(BlockKind::ThinSuperblock) => Some("thin"),
            Some(BlockKind::CacheSuperblock) => Some("cache"),
            Some(BlockKind::EraSuperblock) => Some("era"),
            _ => None,
        };
        if let Some(family) = family {
            bail!(
                "'{name}' holds binary {family} metadata, not XML: \
                 {family}_dump turns it into XML"
            );
        }
    }
    let first = head.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'<') {
        // A multi-byte character cut at the end of the sample is still text.
        let utf8 = match std::str::from_utf8(&head) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        };
        let what = if utf8 && !head.contains(&0) {
            "text that is not XML"
        } else {
            "binary data, not XML"
        };
        bail!("'{name}' holds {what}: an XML metadata dump starts with '<'");
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
