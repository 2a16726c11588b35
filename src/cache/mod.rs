//! dm-cache metadata: the superblock, the mapping array (one 8-byte
//! value per cache block), the policy's hint array, the format 2 dirty
//! bitset and the discard bitset, and the tools' work on them.
//!
//! - [`read`]: opening cache metadata for dumping and salvaging; every
//!   array borrowed in place, damage typed and confined to its entries;
//! - [`check`]: cache_check's engine (parallel walk, reference counts
//!   reconciled with the metadata space map);
//! - [`xml`]: the XML format (reader and writer); [`restore`]: XML (or
//!   salvaged items) to binary metadata; [`metadata_size`]: estimates.

pub mod check;
pub mod damage;
pub mod dump;
pub mod hint;
pub mod log;
pub mod mapping;
pub mod metadata_size;
pub mod read;
pub mod repair;
pub mod restore;
pub mod superblock;
pub mod writeback;
pub mod xml;
