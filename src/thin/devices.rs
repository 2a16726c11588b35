//! The two top-level trees as plain maps: device id to mapping-tree root,
//! and device id to details. Damaged nodes are skipped here; the checker
//! reports them.

use std::collections::BTreeMap;

use crate::io::BlockSource;
use crate::pdata::btree::walk::{read_entries, try_read_entries};
use crate::thin::device_details::{DeviceDetails, DEVICE_DETAILS_SIZE};

/// Value size of the top-level mapping tree (a subtree root).
pub const TOP_LEVEL_VALUE_SIZE: u32 = 8;

pub fn read_roots(src: &BlockSource, root: u64) -> BTreeMap<u64, u64> {
    read_entries(src, root, TOP_LEVEL_VALUE_SIZE)
        .into_iter()
        .map(|(k, v)| (k, u64::from_le_bytes(v.try_into().unwrap())))
        .collect()
}

pub fn read_details(src: &BlockSource, root: u64) -> BTreeMap<u64, DeviceDetails> {
    read_entries(src, root, DEVICE_DETAILS_SIZE)
        .into_iter()
        .map(|(k, v)| (k, DeviceDetails::parse(v)))
        .collect()
}

/// Ids present in only one of the two trees: (only mapped, only detailed).
pub fn unmatched_ids(
    roots: &BTreeMap<u64, u64>,
    details: &BTreeMap<u64, DeviceDetails>,
) -> (Vec<u64>, Vec<u64>) {
    (
        roots
            .keys()
            .filter(|k| !details.contains_key(k))
            .copied()
            .collect(),
        details
            .keys()
            .filter(|k| !roots.contains_key(k))
            .copied()
            .collect(),
    )
}

/// Both trees, failing on the first damaged node (for tools that cannot
/// work around damage: thin_ls, thin_delta, thin_rmap).
pub fn read_devices_strict(
    src: &BlockSource,
    mapping_root: u64,
    details_root: u64,
) -> anyhow::Result<(BTreeMap<u64, u64>, BTreeMap<u64, DeviceDetails>)> {
    use crate::pdata::btree::walk::Damage;
    let named = |tree: &str, (block, damage): (u64, Damage)| match damage {
        Damage::Block(crate::io::BlockError::OutOfBounds { .. }) => anyhow::anyhow!(
            "'{}' looks truncated: the {tree} needs block {block}, beyond its end \
             ({} blocks, {} bytes)",
            src.path().display(),
            src.nr_blocks(),
            src.len()
        ),
        damage => anyhow::anyhow!("{tree}: node error at block {block}: {damage}"),
    };
    let roots = try_read_entries(src, mapping_root, TOP_LEVEL_VALUE_SIZE)
        .map_err(|e| named("mapping top-level", e))?
        .into_iter()
        .map(|(k, v)| (k, u64::from_le_bytes(v.try_into().unwrap())))
        .collect();
    let details = try_read_entries(src, details_root, DEVICE_DETAILS_SIZE)
        .map_err(|e| named("device details tree", e))?
        .into_iter()
        .map(|(k, v)| (k, DeviceDetails::parse(v)))
        .collect();
    Ok((roots, details))
}
