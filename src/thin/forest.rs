//! The mapping trees of a set of devices, validated once with the
//! checker's walker, for the read-only tools that need them whole
//! (thin_ls, thin_rmap, thin_delta). Any damage is an error naming the
//! device, block and key range: these tools do not work around it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use anyhow::{bail, Result};

use crate::io::{BlockError, BlockSource};
use crate::pdata::block_hash::BlockMap;
use crate::pdata::btree::node::NodeView;
use crate::pdata::btree::walk::{Damage, LeafVisitor, SubtreeSummary, TreeSpec, Walker};

/// Value size of mapping-tree leaves (a packed block/time).
pub const MAPPING_VALUE_SIZE: u32 = 8;

/// Collects the distinct leaves (when asked to), and hands each to
/// `also` as well.
struct Leaves<'v, V> {
    blocks: Option<Mutex<Vec<u64>>>,
    also: &'v V,
}

impl<V: LeafVisitor> LeafVisitor for Leaves<'_, V> {
    fn visit(&self, tree: &str, block: u64, leaf: NodeView<'_>) -> Option<Damage> {
        if let Some(blocks) = &self.blocks {
            blocks.lock().unwrap().push(block);
        }
        self.also.visit(tree, block, leaf)
    }
}

/// Whether the caller needs the list of distinct leaves: 8 bytes per
/// leaf, which tools that gather what they need while visiting are spared.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LeafList {
    Keep,
    Drop,
}

/// Visits nothing more.
pub struct Nothing;

impl LeafVisitor for Nothing {
    fn visit(&self, _tree: &str, _block: u64, _leaf: NodeView<'_>) -> Option<Damage> {
        None
    }
}

pub struct Forest {
    /// Every distinct leaf of the trees, in no particular order (empty
    /// unless asked for with `LeafList::Keep`).
    pub leaves: Vec<u64>,
    /// Summaries (entry counts, heights) of every distinct internal node.
    pub internals: BlockMap<SubtreeSummary>,
}

/// Validates the trees (name, root) strictly.
pub fn validate_named(src: &BlockSource, roots: &[(String, u64)]) -> Result<Forest> {
    validate_named_with(src, roots, &Nothing, LeafList::Drop)
}

/// Validates the trees of `roots` strictly, handing each distinct valid
/// leaf to `visitor` while it is in cache, so a tool that needs every
/// leaf once does not read them all again after the walk.
pub fn validate_with<V: LeafVisitor>(
    src: &BlockSource,
    roots: &BTreeMap<u64, u64>,
    visitor: &V,
    list: LeafList,
) -> Result<Forest> {
    let named: Vec<(String, u64)> = roots
        .iter()
        .map(|(id, root)| (format!("device {id}"), *root))
        .collect();
    validate_named_with(src, &named, visitor, list)
}

fn validate_named_with<V: LeafVisitor>(
    src: &BlockSource,
    roots: &[(String, u64)],
    visitor: &V,
    list: LeafList,
) -> Result<Forest> {
    let walker = Walker::uncounted(src, true);
    let leaves = Leaves {
        blocks: (list == LeafList::Keep).then(|| Mutex::new(Vec::new())),
        also: visitor,
    };
    let trees: Vec<(String, u64, Vec<u64>)> = roots
        .iter()
        .map(|(name, root)| (name.clone(), *root, vec![]))
        .collect();
    walker.walk_many(&trees, TreeSpec::MAPPING, &leaves);
    let mut internals = BlockMap::default();
    for (name, root) in roots {
        walker.summarise(name, *root, &mut internals);
    }
    let damage = walker.take_findings();
    let beyond = damage
        .iter()
        .filter(|d| matches!(d.damage, Damage::Block(BlockError::OutOfBounds { .. })))
        .count();
    if beyond > 0 {
        bail!(
            "'{}' looks truncated: {beyond} of the nodes its trees need lie beyond its end \
             ({} blocks, {} bytes); first: {}",
            src.path().display(),
            src.nr_blocks(),
            src.len(),
            damage[0]
        );
    }
    if let Some(d) = damage.first() {
        let more = if damage.len() > 1 {
            format!(" and {} more", damage.len() - 1)
        } else {
            String::new()
        };
        bail!("metadata contains errors: {d}{more}");
    }
    Ok(Forest {
        leaves: leaves
            .blocks
            .map_or_else(Vec::new, |b| b.into_inner().unwrap()),
        internals,
    })
}

/// The leaves under `root` in key order (the tree must be validated).
pub fn ordered_leaves(src: &BlockSource, root: u64) -> Vec<u64> {
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(b) = stack.pop() {
        let Ok(data) = src.block(b) else { continue };
        let node = NodeView::new(data);
        if node.is_leaf() {
            out.push(b);
        } else {
            stack.extend((0..node.nr_entries()).rev().map(|i| node.value_u64(i)));
        }
    }
    out
}
