//! The damages the generator can make, each leaving exactly one kind of
//! inconsistency (named after the kernel bug signature where there is
//! one), every checksum it touches fixed.

use crate::pdata::space_map::bitmap;
use crate::thin::block_time::BlockTime;

use super::{Image, BS};

macro_rules! kinds {
    ($($kind:ident => $name:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Damage {
            $($kind,)*
        }

        impl Damage {
            pub const ALL: &'static [Damage] = &[$(Damage::$kind,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Damage::$kind => $name,)*
                }
            }
        }
    };
}

kinds! {
    NodeChecksum => "node-checksum",
    LeakedMetadataBlock => "leaked-metadata-block",
    UnderCountedSharedNode => "under-counted-shared-node",
    OverCountedNode => "over-counted-node",
    LeakedDataBlock => "leaked-data-block",
    UnderCountedDataBlock => "under-counted-data-block",
    SwappedKeys => "swapped-keys",
    NrEntriesOverMax => "nr-entries-over-max",
    DataBlockBeyondEnd => "data-block-beyond-end",
    ChildBeyondDevice => "child-beyond-device",
    SuperblockChecksum => "superblock-checksum",
    WrongMappedBlocks => "wrong-mapped-blocks",
    DeviceMissingFromTopLevel => "device-missing-from-top-level",
    BitmapChecksum => "bitmap-checksum",
    WrongNodeBlocknr => "wrong-node-blocknr",
    DuplicateKey => "duplicate-key",
    KeyOutsideParentRange => "key-outside-parent-range",
    SwappedChildPointers => "swapped-child-pointers",
    FutureMappingTime => "future-mapping-time",
    FutureSnapshotTime => "future-snapshot-time",
    StaleIndexNrFree => "stale-index-nr-free",
    WrongNrAllocated => "wrong-nr-allocated",
    ZeroedNode => "zeroed-node",
    DanglingChild => "dangling-child",
    DanglingChildSpaceMapsFollow => "dangling-child-space-maps-follow",
    DeviceMissingFromDetails => "device-missing-from-details",
    DeletedDevice => "deleted-device",
}

/// What a damage leaves behind, as thin_check sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Consistent metadata (a device deleted as the kernel deletes).
    Clean,
    /// Only non-fatal findings: leaks and stale counters, repairable in
    /// place.
    NonFatal,
    Fatal,
}

/// Where a damage is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The block thin_check names.
    pub block: u64,
    /// Subtrees of the undamaged device trees whose mappings the damage
    /// puts at risk: what a repair may lose (nothing else).
    pub at_risk: Vec<AtRisk>,
}

/// A subtree at risk: the node, and the parent through which it is (None:
/// through any parent; a damaged pointer puts its child at risk only for
/// the trees that go through that pointer's node).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtRisk {
    pub via: Option<u64>,
    pub node: u64,
}

/// Leaked metadata blocks the stale-index-nr-free damage makes.
pub const STALE_LEAKS: u64 = 16;

impl Damage {
    pub fn from_name(name: &str) -> Option<Damage> {
        Damage::ALL.iter().copied().find(|d| d.name() == name)
    }

    pub fn severity(self) -> Severity {
        match self {
            Damage::LeakedMetadataBlock
            | Damage::OverCountedNode
            | Damage::LeakedDataBlock
            | Damage::StaleIndexNrFree
            | Damage::WrongNrAllocated => Severity::NonFatal,
            Damage::DeletedDevice => Severity::Clean,
            _ => Severity::Fatal,
        }
    }

    /// Leaks (stored counts above the references) endanger no data.
    pub fn is_leak(self) -> bool {
        self.severity() == Severity::NonFatal
    }

    /// Applies the damage; says where it is.
    pub fn apply(self, image: &mut Image) -> Result<Applied, String> {
        let none = |what: &str| format!("{}: the image has no {what}", self.name());
        let leaf = image
            .first_leaf_of_first_device()
            .ok_or_else(|| none("device"))?;
        let bottom = || {
            image
                .bottom_internal_node()
                .ok_or_else(|| none("internal node above two leaves"))
        };
        let at = |block: u64, nodes: &[u64]| Applied {
            block,
            at_risk: nodes
                .iter()
                .map(|&node| AtRisk { via: None, node })
                .collect(),
        };
        let via = |block: u64, parent: u64, nodes: &[u64]| Applied {
            block,
            at_risk: nodes
                .iter()
                .map(|&node| AtRisk {
                    via: Some(parent),
                    node,
                })
                .collect(),
        };
        Ok(match self {
            Damage::NodeChecksum => {
                image.block_mut(leaf)[2000] ^= 0x40;
                at(leaf, &[leaf])
            }
            Damage::LeakedMetadataBlock => {
                let b = image
                    .try_find_block_with_count(false, 0)
                    .ok_or_else(|| none("free metadata block"))?;
                image.set_stored_count(false, b, 1);
                at(b, &[])
            }
            Damage::UnderCountedSharedNode => {
                // A shared node counted once; in a pool without sharing, a
                // node counted not at all.
                match image.a_node_counted(2..=3) {
                    Some(b) => {
                        image.set_stored_count(false, b, 1);
                        at(b, &[])
                    }
                    None => {
                        let b = image.a_node_counted(1..=1).ok_or_else(|| none("node"))?;
                        image.set_stored_count(false, b, 0);
                        at(b, &[])
                    }
                }
            }
            Damage::OverCountedNode => {
                let b = image
                    .a_node_counted(1..=1)
                    .ok_or_else(|| none("unshared node"))?;
                image.set_stored_count(false, b, 2);
                at(b, &[])
            }
            Damage::LeakedDataBlock => {
                let b = image
                    .try_find_block_with_count(true, 0)
                    .ok_or_else(|| none("free data block"))?;
                image.set_stored_count(true, b, 1);
                at(b, &[])
            }
            Damage::UnderCountedDataBlock => {
                // A block two leaves share loses one count; failing that,
                // a used block is marked free (the FILO bug's two faces).
                match image.try_find_block_with_count(true, 2) {
                    Some(b) => {
                        image.set_stored_count(true, b, 1);
                        at(b, &[])
                    }
                    None => {
                        let b = image
                            .try_find_block_with_count(true, 1)
                            .ok_or_else(|| none("used data block"))?;
                        image.set_stored_count(true, b, 0);
                        at(b, &[])
                    }
                }
            }
            Damage::SwappedKeys => {
                if image.node(leaf).nr_entries() < 2 {
                    return Err(none("leaf with two entries"));
                }
                image.swap_entries(leaf, 0, 1);
                at(leaf, &[leaf])
            }
            Damage::NrEntriesOverMax => {
                // A device's root leaf if there is one (nothing above it
                // bounds its keys), else the first leaf.
                let target = image
                    .device_roots()
                    .into_iter()
                    .map(|(_, r)| r)
                    .find(|r| image.node(*r).is_leaf() && image.node(*r).nr_entries() > 0)
                    .unwrap_or(leaf);
                let max = image.node(target).max_entries();
                image.set_nr_entries(target, max + 1);
                at(target, &[target])
            }
            Damage::DataBlockBeyondEnd => {
                let nr = image.superblock().data_sm_root.nr_blocks;
                image.set_value_u64(leaf, 0, (nr + 5) << 24);
                at(leaf, &[leaf])
            }
            Damage::ChildBeyondDevice => {
                let node = image
                    .an_internal_node()
                    .ok_or_else(|| none("internal node"))?;
                let beyond = (image.bytes.len() / BS) as u64 + 1000;
                let child = image.node(node).value_u64(0);
                image.set_value_u64(node, 0, beyond);
                via(node, node, &[child])
            }
            Damage::SuperblockChecksum => {
                image.block_mut(0)[1000] ^= 0xff;
                at(0, &[])
            }
            Damage::WrongMappedBlocks => {
                let details = image.superblock().details_root;
                if !image.node(details).is_leaf() {
                    return Err(none("single-leaf details tree"));
                }
                let max = image.node(details).max_entries() as usize;
                let off = 32 + max * 8;
                let v = u64::from_le_bytes(image.block(details)[off..off + 8].try_into().unwrap());
                image.block_mut(details)[off..off + 8].copy_from_slice(&(v + 1).to_le_bytes());
                image.reseal_node(details);
                at(details, &[])
            }
            Damage::DeviceMissingFromTopLevel => {
                let top = image.superblock().mapping_root;
                let node = image.node(top);
                if !node.is_leaf() || node.nr_entries() == 0 {
                    return Err(none("single-leaf top-level tree"));
                }
                let n = node.nr_entries();
                image.set_nr_entries(top, n - 1);
                at(top, &[])
            }
            Damage::BitmapChecksum => {
                let index = image.superblock().metadata_sm_root.bitmap_root;
                let bm = bitmap::metadata_index_entry(image.block(index), 0).blocknr;
                image.block_mut(bm)[4000] ^= 0x01;
                at(bm, &[])
            }
            Damage::WrongNodeBlocknr => {
                image.block_mut(leaf)[8..16].copy_from_slice(&(leaf + 1).to_le_bytes());
                image.reseal_node(leaf);
                at(leaf, &[leaf])
            }
            Damage::DuplicateKey => {
                let node = image.node(leaf);
                if node.nr_entries() < 2 {
                    return Err(none("leaf with two entries"));
                }
                let k = node.key(0);
                image.set_key(leaf, 1, k);
                at(leaf, &[leaf])
            }
            Damage::KeyOutsideParentRange => {
                // The second leaf under a bottom internal node gets a first
                // key just below the range its parent gives it.
                let parent = bottom()?;
                let node = image.node(parent);
                let (second, bound) = (node.value_u64(1), node.key(1));
                image.set_key(second, 0, bound - 1);
                at(second, &[second])
            }
            Damage::SwappedChildPointers => {
                let parent = bottom()?;
                let node = image.node(parent);
                let (a, b) = (node.value_u64(0), node.value_u64(1));
                image.set_value_u64(parent, 0, b);
                image.set_value_u64(parent, 1, a);
                via(parent, parent, &[a, b])
            }
            Damage::FutureMappingTime => {
                let time = image.superblock().time + 5;
                let v = BlockTime::unpack(image.node(leaf).value_u64(0));
                image.set_value_u64(leaf, 0, BlockTime { time, ..v }.pack());
                at(leaf, &[])
            }
            Damage::FutureSnapshotTime => {
                let details = image.superblock().details_root;
                let d = image.first_leaf(details);
                let max = image.node(d).max_entries() as usize;
                // snapshotted_time: the last u32 of the first 24-byte value.
                let off = 32 + max * 8 + 20;
                let time = image.superblock().time + 3;
                image.block_mut(d)[off..off + 4].copy_from_slice(&time.to_le_bytes());
                image.reseal_node(d);
                at(d, &[])
            }
            Damage::StaleIndexNrFree => {
                // Leaked blocks set in the bitmap alone: the index entry's
                // nr_free and the superblock's nr_allocated do not follow.
                let mut first = None;
                for _ in 0..STALE_LEAKS {
                    let b = image
                        .try_find_block_with_count(false, 0)
                        .ok_or_else(|| none("free metadata block"))?;
                    image.set_bitmap_entry_only(b, 1);
                    first.get_or_insert(b);
                }
                at(first.unwrap(), &[])
            }
            Damage::WrongNrAllocated => {
                let mut sb = image.superblock();
                sb.data_sm_root.nr_allocated += 7;
                image.set_superblock(&sb);
                at(0, &[])
            }
            Damage::ZeroedNode => {
                image.block_mut(leaf).fill(0);
                at(leaf, &[leaf])
            }
            Damage::DanglingChild | Damage::DanglingChildSpaceMapsFollow => {
                let parent = bottom()?;
                let old = image.node(parent).value_u64(0);
                let target = image
                    .free_non_node()
                    .ok_or_else(|| none("free block without a node"))?;
                image.set_value_u64(parent, 0, target);
                if self == Damage::DanglingChildSpaceMapsFollow {
                    image.release_node(old)?;
                    image.set_count(false, target, 1)?;
                }
                via(target, parent, &[old])
            }
            Damage::DeviceMissingFromDetails => {
                let details = image.superblock().details_root;
                if !image.node(details).is_leaf() || image.node(details).nr_entries() == 0 {
                    return Err(none("single-leaf details tree"));
                }
                image.remove_entry(details, 0);
                at(details, &[])
            }
            Damage::DeletedDevice => {
                let id = image.last_device().ok_or_else(|| none("device"))?;
                let root = image.delete_device(id)?;
                at(root, &[])
            }
        })
    }
}
