//! dm-cache metadata: the superblock, the mapping array (one 8-byte
//! value per cache block), the policy's hint array, the format 2 dirty
//! bitset and the discard bitset, and the tools' work on them.
//!
//! - [`read`]: opening cache metadata for dumping and salvaging; every
//!   array borrowed in place, damage typed and confined to its entries;
//! - [`check`]: cache_check's engine (parallel walk, reference counts
//!   reconciled with the metadata space map).

pub mod check;
pub mod hint;
pub mod mapping;
pub mod read;
pub mod superblock;
pub mod writeback;
