//! Finding every btree node on the device.
//!
//! A block is a node if its checksum says so and its header can be read:
//! leaf or internal, a value size the thin trees use, room for its
//! max_entries. What the header may get wrong without making the node
//! unreadable is recorded instead of rejected: an entry count beyond the
//! node's room (its entries are read as far as they fit) and a
//! self-location naming another block (the node stays where it was found,
//! and is used where a parent points at it).

use rayon::prelude::*;

use crate::io::checksum::{self, BlockKind};
use crate::io::{le_u32, BlockSource, BLOCK_SIZE};
use crate::pdata::block_hash::BlockMap;
use crate::pdata::btree::node::{
    NodeView, INTERNAL_NODE, INTERNAL_VALUE_SIZE, KEY_SIZE, LEAF_NODE, NODE_HEADER_SIZE,
};
use crate::thin::device_details::DEVICE_DETAILS_SIZE;

/// Value size of mapping and top-level leaves.
const U64_VALUE_SIZE: u32 = 8;

#[derive(Clone, Copy)]
pub struct Node<'a> {
    pub view: NodeView<'a>,
    /// The entries that can be read: nr_entries, or max_entries if less.
    pub n: u32,
    /// The block the node records as its own, when it is not where it was
    /// found.
    pub recorded_at: Option<u64>,
}

impl Node<'_> {
    pub fn overfull(&self) -> bool {
        self.view.nr_entries() > self.n
    }

    pub fn key(&self, i: u32) -> u64 {
        self.view.key(i)
    }

    /// The first and last key as stored, whatever their order.
    pub fn raw_span(&self) -> Option<(u64, u64)> {
        (self.n > 0).then(|| (self.key(0), self.key(self.n - 1)))
    }
}

/// Reads block `b` as a node, if it is one.
fn node_at(src: &BlockSource, b: u64) -> Option<Node<'_>> {
    let data = src.block(b).ok()?;
    // Cheap header tests first: most blocks that are not nodes fail them
    // without a checksum being computed.
    let flags = le_u32(data, 4);
    let vs = le_u32(data, 24);
    let value_ok = match flags {
        INTERNAL_NODE => vs == INTERNAL_VALUE_SIZE,
        LEAF_NODE => vs == U64_VALUE_SIZE || vs == DEVICE_DETAILS_SIZE,
        _ => false,
    };
    if !value_ok || !checksum::matches(data, BlockKind::BtreeNode) {
        return None;
    }
    let view = NodeView::new(data);
    let max = view.max_entries();
    let room = ((BLOCK_SIZE - NODE_HEADER_SIZE) / (KEY_SIZE + vs as usize)) as u32;
    if max == 0 || max > room {
        return None;
    }
    let n = view.nr_entries().min(max);
    if flags == INTERNAL_NODE && n == 0 {
        return None;
    }
    Some(Node {
        view,
        n,
        recorded_at: (view.blocknr() != b).then_some(view.blocknr()),
    })
}

/// Every node of the device, by the block it was found at.
pub fn scan(src: &BlockSource) -> BlockMap<Node<'_>> {
    src.data_extents()
        .into_par_iter()
        .flat_map(|blocks| blocks.into_par_iter())
        .filter_map(|b| node_at(src, b).map(|n| (b, n)))
        .collect()
}
