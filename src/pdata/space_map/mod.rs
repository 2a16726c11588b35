//! Space maps: a reference count per block, two bits each in bitmap
//! blocks, with counts of three or more kept in a ref-count btree.

pub mod bitmap;
pub mod check;
pub mod disk;
pub mod in_use;
pub mod leak_repair;
pub mod reconcile;
pub mod root;
pub mod writer;

pub use root::SpaceMapRoot;
