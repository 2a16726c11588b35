//! Persistent-data structures shared by the thin, cache and era formats:
//! btrees, arrays, bitsets, space maps and reference counting.

pub mod array;
pub mod bitset;
pub mod block_hash;
pub mod btree;
pub mod node_path;
pub mod paged_set;
pub mod refcount;
pub mod space_map;
