//! Block checksums: CRC-32C of bytes 4..4096, xor'd with a salt naming the
//! block's kind. Because every kind has its own salt, a block's kind can be
//! recognised from its checksum alone.

use super::BLOCK_SIZE;

/// Byte offset of the checksum in every metadata block.
pub const CSUM_OFFSET: usize = 0;

/// The kinds of metadata block that carry a salted checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockKind {
    ThinSuperblock,
    CacheSuperblock,
    EraSuperblock,
    BtreeNode,
    Bitmap,
    Index,
    Array,
}

impl BlockKind {
    pub const ALL: [BlockKind; 7] = [
        BlockKind::ThinSuperblock,
        BlockKind::CacheSuperblock,
        BlockKind::EraSuperblock,
        BlockKind::BtreeNode,
        BlockKind::Bitmap,
        BlockKind::Index,
        BlockKind::Array,
    ];

    pub const fn salt(self) -> u32 {
        match self {
            BlockKind::ThinSuperblock => 160774,
            BlockKind::CacheSuperblock => 9031977,
            BlockKind::EraSuperblock => 146538381,
            BlockKind::BtreeNode => 121107,
            BlockKind::Bitmap => 240779,
            BlockKind::Index => 160478,
            BlockKind::Array => 595846735,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            BlockKind::ThinSuperblock => "thin superblock",
            BlockKind::CacheSuperblock => "cache superblock",
            BlockKind::EraSuperblock => "era superblock",
            BlockKind::BtreeNode => "btree node",
            BlockKind::Bitmap => "space-map bitmap",
            BlockKind::Index => "space-map index",
            BlockKind::Array => "array block",
        }
    }

    /// The name with its indefinite article ("an era superblock").
    pub fn a_name(self) -> String {
        let name = self.name();
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {name}")
    }

    /// Where the block records its own location (every kind but array
    /// blocks keeps it right after the checksum and a 32-bit field).
    pub const fn blocknr_offset(self) -> usize {
        match self {
            BlockKind::Array => 16,
            _ => 8,
        }
    }
}

/// CRC-32C of bytes 4.. without the final inversion, as the kernel
/// computes it before salting.
#[inline]
pub fn unsalted(block: &[u8]) -> u32 {
    crc32c::crc32c(&block[CSUM_OFFSET + 4..BLOCK_SIZE]) ^ 0xffff_ffff
}

#[inline]
pub fn stored(block: &[u8]) -> u32 {
    u32::from_le_bytes(block[CSUM_OFFSET..CSUM_OFFSET + 4].try_into().unwrap())
}

/// The checksum a block of `kind` with these contents must carry.
#[inline]
pub fn expected(block: &[u8], kind: BlockKind) -> u32 {
    unsalted(block) ^ kind.salt()
}

/// Which kind of block this is, judged by its checksum alone.
pub fn kind_of(block: &[u8]) -> Option<BlockKind> {
    let salt = stored(block) ^ unsalted(block);
    BlockKind::ALL.into_iter().find(|k| k.salt() == salt)
}

#[inline]
pub fn matches(block: &[u8], kind: BlockKind) -> bool {
    stored(block) == expected(block, kind)
}

/// Writes the checksum of `kind` into a block being built.
pub fn seal(block: &mut [u8], kind: BlockKind) {
    let csum = expected(block, kind);
    block[CSUM_OFFSET..CSUM_OFFSET + 4].copy_from_slice(&csum.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_recognise_every_kind() {
        for kind in BlockKind::ALL {
            let mut block = vec![0u8; BLOCK_SIZE];
            block[100] = 7;
            seal(&mut block, kind);
            assert!(matches(&block, kind));
            assert_eq!(kind_of(&block), Some(kind));
        }
    }

    #[test]
    fn zero_block_has_no_kind() {
        assert_eq!(kind_of(&[0u8; BLOCK_SIZE]), None);
    }

    #[test]
    fn unsalted_is_standard_crc32c_inverted() {
        // Standard CRC-32C check value of "123456789" is 0xe3069283.
        let mut block = vec![0u8; BLOCK_SIZE];
        block[4..13].copy_from_slice(b"123456789");
        let standard = crc32c::crc32c(&block[4..]);
        assert_eq!(unsalted(&block), standard ^ 0xffff_ffff);
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }
}
