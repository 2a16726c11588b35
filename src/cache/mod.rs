//! dm-cache metadata: the superblock, and the work done on it (the XML
//! format, restore, dump, repair, size estimates).

pub mod metadata_size;
pub mod restore;
pub mod superblock;
pub mod xml;
