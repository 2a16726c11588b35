//! Mapping values: entry c of the mapping array describes cache block c.
//!
//! ```text
//! value = (origin_block << 16) | flags
//! ```
//!
//! Bits 0–15 are flags: 1 VALID (the cache block holds `origin_block`),
//! 2 DIRTY (format 1 only: format 2 keeps dirtiness in the dirty bitset).
//! Bits 16–63 are the origin block (48 bits). An unmapped cache block is
//! the value 0.

use std::fmt;

/// Bytes per mapping (the mapping array's value size).
pub const MAPPING_SIZE: u32 = 8;
pub const VALID: u16 = 1;
pub const DIRTY: u16 = 2;
const FLAGS_BITS: u32 = 16;
/// Origin blocks are 48-bit.
pub const MAX_ORIGIN_BLOCKS: u64 = 1 << 48;

/// One mapping value, unpacked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    pub origin: u64,
    pub flags: u16,
}

impl Mapping {
    #[inline]
    pub fn unpack(v: u64) -> Mapping {
        Mapping {
            origin: v >> FLAGS_BITS,
            flags: (v & 0xffff) as u16,
        }
    }

    /// From the 8 bytes of an array entry.
    #[inline]
    pub fn from_bytes(b: &[u8]) -> Mapping {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[..8]);
        Mapping::unpack(u64::from_le_bytes(w))
    }

    /// The packed value. The origin must be below 2^48.
    #[inline]
    pub fn pack(&self) -> u64 {
        (self.origin << FLAGS_BITS) | self.flags as u64
    }

    #[inline]
    pub fn is_valid(&self) -> bool {
        self.flags & VALID != 0
    }

    /// The DIRTY flag bit (meaningful in format 1 only).
    #[inline]
    pub fn dirty_flag(&self) -> bool {
        self.flags & DIRTY != 0
    }

    /// What is wrong with this value in metadata of `version` whose
    /// origin holds `origin_blocks` blocks (None: unknown, only the
    /// 48-bit limit applies), if anything. Repeated origins are the
    /// caller's to find (they need the whole array).
    pub fn problem(&self, version: u32, origin_blocks: Option<u64>) -> Option<MappingError> {
        let allowed = if version == 1 { VALID | DIRTY } else { VALID };
        let unknown = self.flags & !allowed;
        if unknown != 0 {
            return Some(MappingError::UnknownFlags {
                flags: unknown,
                version,
            });
        }
        if !self.is_valid() {
            if self.dirty_flag() {
                return Some(MappingError::DirtyUnmapped);
            }
            if self.origin != 0 {
                return Some(MappingError::UnmappedWithOrigin {
                    origin: self.origin,
                });
            }
            return None;
        }
        if let Some(limit) = origin_blocks {
            if self.origin >= limit {
                return Some(MappingError::BeyondOrigin {
                    origin: self.origin,
                    origin_blocks: limit,
                });
            }
        }
        None
    }
}

/// What can be wrong with one mapping value on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MappingError {
    /// Flag bits the format does not define.
    UnknownFlags { flags: u16, version: u32 },
    /// DIRTY without VALID.
    DirtyUnmapped,
    /// An unmapped entry must be 0.
    UnmappedWithOrigin { origin: u64 },
    /// Mapped to an origin block past the origin device.
    BeyondOrigin { origin: u64, origin_blocks: u64 },
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingError::UnknownFlags { flags, version } => write!(
                f,
                "unknown flags {flags:#x} (format {version} allows {})",
                if *version == 1 {
                    "valid and dirty"
                } else {
                    "only valid"
                }
            ),
            MappingError::DirtyUnmapped => write!(f, "dirty but not mapped (no valid flag)"),
            MappingError::UnmappedWithOrigin { origin } => {
                write!(f, "not mapped but records origin block {origin}")
            }
            MappingError::BeyondOrigin {
                origin,
                origin_blocks,
            } => write!(
                f,
                "maps origin block {origin}, beyond the end of the origin device ({origin_blocks} blocks)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_unpacks() {
        let m = Mapping {
            origin: (1 << 48) - 1,
            flags: VALID | DIRTY,
        };
        assert_eq!(Mapping::unpack(m.pack()), m);
        assert_eq!(Mapping::from_bytes(&m.pack().to_le_bytes()), m);
        assert_eq!(
            Mapping::unpack(0x0005_0001),
            Mapping {
                origin: 5,
                flags: 1
            }
        );
    }

    #[test]
    fn problems_per_version() {
        let m = |origin, flags| Mapping { origin, flags };
        assert_eq!(m(0, 0).problem(2, Some(10)), None);
        assert_eq!(m(9, VALID).problem(2, Some(10)), None);
        assert_eq!(m(9, VALID | DIRTY).problem(1, None), None);
        assert_eq!(
            m(9, VALID | DIRTY).problem(2, None),
            Some(MappingError::UnknownFlags {
                flags: DIRTY,
                version: 2
            })
        );
        assert_eq!(
            m(0, DIRTY).problem(1, None),
            Some(MappingError::DirtyUnmapped)
        );
        assert_eq!(
            m(3, 0).problem(1, None),
            Some(MappingError::UnmappedWithOrigin { origin: 3 })
        );
        assert_eq!(
            m(10, VALID).problem(1, Some(10)).unwrap().to_string(),
            "maps origin block 10, beyond the end of the origin device (10 blocks)"
        );
        // Unknown origin size: any 48-bit origin passes.
        assert_eq!(m(16_777_216, VALID).problem(2, None), None);
    }
}
