//! Thin-provisioning metadata: superblock, device details, the two-level
//! mapping tree, and the tools' work on them.

pub mod block_time;
pub mod check;
pub mod damage;
pub mod delta;
pub mod device_details;
pub mod devices;
pub mod dump;
pub mod forest;
pub mod leak_repair;
pub mod ls;
pub mod metadata_size;
pub mod migrate;
pub mod repair;
pub mod restore;
pub mod rmap;
pub mod shrink;
pub mod superblock;
pub mod trim;
