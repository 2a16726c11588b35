use std::fmt;

use super::checksum::BlockKind;

/// Why a block could not be used. Every variant names the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The block lies beyond the end of the device or file.
    OutOfBounds { block: u64, nr_blocks: u64 },
    /// The checksum fits no known kind of block.
    Checksum { block: u64, wanted: BlockKind },
    /// The checksum is valid, but for another kind of block.
    WrongKind {
        block: u64,
        wanted: BlockKind,
        found: BlockKind,
    },
    /// The block's self-location field names another block.
    BlockNr {
        block: u64,
        kind: BlockKind,
        recorded: u64,
    },
}

impl BlockError {
    pub fn block(&self) -> u64 {
        match *self {
            BlockError::OutOfBounds { block, .. }
            | BlockError::Checksum { block, .. }
            | BlockError::WrongKind { block, .. }
            | BlockError::BlockNr { block, .. } => block,
        }
    }

    /// The short reason, in the vocabulary the reference tools print
    /// ("checksum error", "not a btree node", ...).
    pub fn reason(&self) -> String {
        match self {
            BlockError::OutOfBounds { nr_blocks, .. } => {
                let unit = if *nr_blocks == 1 { "block" } else { "blocks" };
                format!("io error: beyond the end of the metadata ({nr_blocks} {unit})")
            }
            BlockError::Checksum { .. } => "checksum error".to_string(),
            BlockError::WrongKind { wanted, found, .. } => {
                if *wanted == BlockKind::BtreeNode {
                    format!("not a btree node (its checksum is {}'s)", found.a_name())
                } else {
                    format!(
                        "not {} (its checksum is {}'s)",
                        wanted.a_name(),
                        found.a_name()
                    )
                }
            }
            BlockError::BlockNr { recorded, .. } => {
                format!("blocknr mismatch (block says it is {recorded})")
            }
        }
    }
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "block {}: {}", self.block(), self.reason())
    }
}

impl std::error::Error for BlockError {}
