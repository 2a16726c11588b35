//! dm-era metadata: which era each origin block was last written in.
//!
//! The superblock (`superblock`) holds the current era, the current
//! writeset (a bitset of the blocks written in it, or none), the root of
//! the writeset tree (finished eras waiting to be folded into the era
//! array: era → {nr_bits, bitset root}), the root of the era array (one
//! `u32` era per origin block) and, optionally, a metadata snapshot: a
//! copy of the superblock at another block whose writeset tree and era
//! array are kept for userland to read while the device runs.
//!
//! This module reads it (`read`), and the tools build on that: `check`,
//! `dump`, `restore` (with its XML reader `xml`), `invalidate`,
//! `repair` and `damage`.

pub mod check;
pub mod damage;
pub mod dump;
pub mod invalidate;
pub mod model;
pub mod read;
pub mod repair;
pub mod restore;
pub mod superblock;
pub mod xml;

/// Value size of the era array's entries.
pub const ERA_ENTRY_SIZE: u32 = 4;
