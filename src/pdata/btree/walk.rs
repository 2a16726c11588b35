//! A parallel btree walker for checking.
//!
//! Many trees share nodes (snapshots share whole subtrees), so the walker
//! keeps one set of visited nodes for all the trees it walks: a node is
//! validated, and its leaf entries handed to the visitor, once, however many
//! parents point at it. Every pointer, on the other hand, is one reference:
//! the computed reference count of a node is the number of its parents,
//! which is what the space map must store.
//!
//! Damage is recorded per node and the walk goes on with the rest of the
//! tree: a bad node loses only the key range below it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::io::checksum::{self, BlockKind};
use crate::io::{BlockError, BlockSource};
use crate::pdata::block_hash::BlockMap;
use crate::pdata::btree::node::{NodeError, NodeKind, NodeView};
use crate::pdata::refcount::RefCounter;
use crate::report::Progress;

/// Keys a node is allowed to hold: [lo, hi). `None` is unbounded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyRange {
    pub lo: Option<u64>,
    pub hi: Option<u64>,
}

impl KeyRange {
    pub const ALL: KeyRange = KeyRange { lo: None, hi: None };

    pub fn contains(&self, k: u64) -> bool {
        self.lo.is_none_or(|lo| k >= lo) && self.hi.is_none_or(|hi| k < hi)
    }

    /// The keys child `i` of internal node `node`, itself allowed
    /// `self`, may hold: from its key up to the next child's.
    pub fn child(&self, node: &NodeView<'_>, i: u32) -> KeyRange {
        let n = node.nr_entries();
        KeyRange {
            lo: Some(node.key(i)),
            hi: if i + 1 < n {
                Some(node.key(i + 1))
            } else {
                self.hi
            },
        }
    }
}

impl std::fmt::Display for KeyRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[")?;
        if let Some(lo) = self.lo {
            write!(f, "{lo}")?;
        }
        write!(f, "..")?;
        if let Some(hi) = self.hi {
            write!(f, "{hi}")?;
        }
        write!(f, "]")
    }
}

/// Why a node (or a pointer to it) is unusable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    Block(BlockError),
    Node(NodeError),
    /// The node's keys fall outside what its parent's keys allow.
    KeysOutOfRange {
        first: u64,
        last: u64,
    },
    /// An internal node's children are not all at the same height.
    UnevenDepth,
    /// The node is sound but some of its values are not.
    BadValues(String),
    /// An internal node that is its own descendant.
    Cycle,
    /// A non-root node less than a third full (checked unless
    /// `--ignore-non-fatal-errors`, as the reference tools do).
    Underpopulated {
        nr_entries: u32,
        max_entries: u32,
    },
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Block(e) => write!(f, "{}", e.reason()),
            Damage::Node(e) => write!(f, "{e}"),
            Damage::KeysOutOfRange { first, last } => {
                write!(
                    f,
                    "keys {first}..{last} outside the range the parent allows"
                )
            }
            Damage::UnevenDepth => write!(f, "btree nodes are not all at the same depth"),
            Damage::Cycle => write!(f, "the node is its own descendant (a cycle)"),
            Damage::BadValues(what) => write!(f, "value error: {what}"),
            Damage::Underpopulated {
                nr_entries,
                max_entries,
            } => write!(
                f,
                "nr_entries < max_entries / 3 ({nr_entries} of {max_entries} in a non-root node)"
            ),
        }
    }
}

/// One damaged node or pointer, with where it was found.
#[derive(Clone, Debug)]
pub struct NodeDamage {
    /// The tree being walked ("device details tree", "device 3", ...).
    pub tree: String,
    /// Block numbers from the tree's root to the damaged node.
    pub path: Vec<u64>,
    /// Keys that the damage makes unreadable.
    pub keys: KeyRange,
    pub damage: Damage,
}

impl NodeDamage {
    pub fn block(&self) -> u64 {
        *self.path.last().unwrap_or(&0)
    }

    /// The damage as a fatal check finding, located by tree, block, keys
    /// and node path.
    pub fn finding(&self) -> crate::report::findings::Finding {
        use crate::report::findings::{Finding, Location};
        Finding::fatal("node_damage", self.plain())
            .with_detail(self.to_string())
            .at(Location {
                tree: Some(self.tree.clone()),
                block: Some(self.block()),
                keys: Some(self.keys.to_string()),
                node_path: Some(crate::pdata::node_path::encode(&self.path)),
                ..Default::default()
            })
    }
}

impl NodeDamage {
    /// The reference tools' words for the kind of damage, and its reason.
    fn kind_and_reason(&self) -> (&'static str, String) {
        match &self.damage {
            Damage::BadValues(what) => ("value error", what.clone()),
            Damage::UnevenDepth => ("context error", self.damage.to_string()),
            other => ("node error", other.to_string()),
        }
    }

    /// `tree: node error: reason (block B, keys [a..b])`: as the Display
    /// form without the encoded node path, for people rather than scripts.
    pub fn plain(&self) -> String {
        let (kind, reason) = self.kind_and_reason();
        format!(
            "{}: {kind}: {reason} (block {}, keys {})",
            self.tree,
            self.block(),
            self.keys
        )
    }
}

/// `tree: node error: reason PATH (block B, keys [a..b])`: the reference
/// tools' wording and encoded node path, then the location in plain words.
impl std::fmt::Display for NodeDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, reason) = self.kind_and_reason();
        write!(
            f,
            "{}: {kind}: {reason} {} (block {}, keys {})",
            self.tree,
            crate::pdata::node_path::encode(&self.path),
            self.block(),
            self.keys
        )
    }
}

/// Which nodes of a tree must be at least a third full (the kernel keeps
/// them so; mapping-tree leaves are exempt, as in the reference tools).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    AllNodes,
    InternalNodes,
}

/// The shape of a tree: its leaves' value size and fill rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeSpec {
    pub value_size: u32,
    pub fill: Fill,
}

impl TreeSpec {
    pub const fn new(value_size: u32) -> TreeSpec {
        TreeSpec {
            value_size,
            fill: Fill::AllNodes,
        }
    }

    /// A device's mapping tree (8-byte block/time values).
    pub const MAPPING: TreeSpec = TreeSpec {
        value_size: 8,
        fill: Fill::InternalNodes,
    };
}

/// What a tree's leaves hold, and what to do with them.
pub trait LeafVisitor: Sync {
    /// Called once per distinct, valid leaf. `tree` names the first tree
    /// that reached it. Returns damage found in the values, if any.
    fn visit(&self, tree: &str, block: u64, leaf: NodeView<'_>) -> Option<Damage>;
}

/// A set of blocks threads may add to concurrently.
pub struct AtomicBitSet {
    words: Vec<AtomicU64>,
}

impl AtomicBitSet {
    pub fn new(nr_bits: u64) -> AtomicBitSet {
        AtomicBitSet {
            words: (0..nr_bits.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// Adds `b`; true if it was not there before.
    #[inline]
    pub fn insert(&self, b: u64) -> bool {
        let mask = 1u64 << (b % 64);
        self.words[(b / 64) as usize].fetch_or(mask, Ordering::Relaxed) & mask == 0
    }

    /// Adds the set bits of `bits` to word `w` (blocks 64w..64w+64).
    #[inline]
    pub fn or_word(&self, w: u64, bits: u64) {
        if let Some(word) = self.words.get(w as usize) {
            word.fetch_or(bits, Ordering::Relaxed);
        }
    }

    /// Word `w` of the set (0 beyond its size).
    #[inline]
    pub fn word(&self, w: u64) -> u64 {
        self.words
            .get(w as usize)
            .map_or(0, |x| x.load(Ordering::Relaxed))
    }

    /// Words in the set (64 blocks each).
    pub fn nr_words(&self) -> u64 {
        self.words.len() as u64
    }

    /// Blocks beyond the set's size are never in it.
    #[inline]
    pub fn contains(&self, b: u64) -> bool {
        self.words
            .get((b / 64) as usize)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1u64 << (b % 64)) != 0)
    }
}

/// Summary of a subtree, for comparing with what other structures claim.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubtreeSummary {
    /// Entries in the valid leaves.
    pub entries: u64,
    /// Damaged nodes (or pointers) below, counted once per path.
    pub damaged: u64,
    /// Levels below the root, 0 for a leaf; None when unknown (damaged).
    pub height: Option<u32>,
}

pub struct Walker<'a> {
    src: &'a BlockSource,
    visited: AtomicBitSet,
    /// Nodes whose first visit found them valid: later visits trust
    /// them without computing the checksum again.
    valid: AtomicBitSet,
    /// 1 + the entry count of each valid leaf (0: not known to be one),
    /// so summaries never read a leaf again.
    leaf_entries: Vec<AtomicU16>,
    /// None when the walk only validates (thin_ls, thin_rmap, ...):
    /// a dense scratch counter would be 4 bytes per metadata block.
    metadata_refs: Option<&'a RefCounter>,
    /// Nodes at or beyond this are out of bounds: the smaller of the
    /// source's and the counter's sizes.
    nr_blocks: u64,
    strict: bool,
    damaged: Mutex<HashMap<u64, Damage>>,
    findings: Mutex<Vec<NodeDamage>>,
    progress: Progress,
}

impl<'a> Walker<'a> {
    /// `metadata_refs` receives one reference per pointer followed.
    /// `strict` adds the checks `--ignore-non-fatal-errors` relaxes.
    pub fn new(src: &'a BlockSource, metadata_refs: &'a RefCounter, strict: bool) -> Walker<'a> {
        Walker::with_counter(src, Some(metadata_refs), strict)
    }

    /// A walker that validates and visits but counts no references.
    pub fn uncounted(src: &'a BlockSource, strict: bool) -> Walker<'a> {
        Walker::with_counter(src, None, strict)
    }

    fn with_counter(
        src: &'a BlockSource,
        metadata_refs: Option<&'a RefCounter>,
        strict: bool,
    ) -> Walker<'a> {
        let counted = metadata_refs.map_or(u64::MAX, |r| r.nr_blocks());
        Walker {
            src,
            visited: AtomicBitSet::new(src.nr_blocks()),
            valid: AtomicBitSet::new(src.nr_blocks()),
            leaf_entries: (0..src.nr_blocks()).map(|_| AtomicU16::new(0)).collect(),
            metadata_refs,
            nr_blocks: src.nr_blocks().min(counted),
            strict,
            damaged: Mutex::new(HashMap::new()),
            findings: Mutex::new(Vec::new()),
            progress: Progress::none(),
        }
    }

    /// The metadata being walked.
    pub fn source(&self) -> &'a BlockSource {
        self.src
    }

    /// Advances `progress` by one for every node visited.
    pub fn set_progress(&mut self, progress: Progress) {
        self.progress = progress;
    }

    pub fn nodes_visited(&self) -> u64 {
        // Counted from the visited set when asked: a shared counter
        // bumped per node would bounce between the walking threads.
        (0..self.visited.nr_words())
            .map(|w| self.visited.word(w).count_ones() as u64)
            .sum()
    }

    /// Damage recorded so far, in a stable order, and cleared.
    pub fn take_findings(&self) -> Vec<NodeDamage> {
        let mut v = std::mem::take(&mut *self.findings.lock().unwrap());
        v.sort_by(|a, b| a.tree.cmp(&b.tree).then(a.path.cmp(&b.path)));
        v
    }

    /// Records one reference to `block` that is not a btree node (bitmap,
    /// index block, superblock).
    pub fn count_reference(&self, block: u64) -> bool {
        if block < self.nr_blocks {
            if let Some(refs) = self.metadata_refs {
                refs.inc(block);
            }
            true
        } else {
            false
        }
    }

    /// Walks the tree at `root` (reached through `path`), visiting each
    /// node not yet visited by this walker.
    pub fn walk<V: LeafVisitor>(
        &self,
        tree: &str,
        root: u64,
        path: &[u64],
        spec: TreeSpec,
        visitor: &V,
    ) {
        rayon::scope(|s| {
            self.arrive(s, tree, root, path, KeyRange::ALL, spec, visitor);
        });
    }

    /// Walks many trees in parallel, e.g. every device's mapping tree.
    pub fn walk_many<V: LeafVisitor>(
        &self,
        trees: &[(String, u64, Vec<u64>)],
        spec: TreeSpec,
        visitor: &V,
    ) {
        rayon::scope(|s| {
            for (tree, root, path) in trees {
                s.spawn(move |s| {
                    self.arrive(s, tree, *root, path, KeyRange::ALL, spec, visitor);
                });
            }
        });
    }

    fn record(&self, tree: &str, path: Vec<u64>, keys: KeyRange, damage: Damage) {
        self.findings.lock().unwrap().push(NodeDamage {
            tree: tree.to_string(),
            path,
            keys,
            damage,
        });
    }

    /// One pointer to `block` has been followed.
    #[allow(clippy::too_many_arguments)]
    fn arrive<'s, V: LeafVisitor>(
        &'s self,
        scope: &rayon::Scope<'s>,
        tree: &'s str,
        block: u64,
        parent_path: &[u64],
        keys: KeyRange,
        spec: TreeSpec,
        visitor: &'s V,
    ) {
        // The path to this node, on the stack for any sane depth: one
        // heap allocation per node visited would cost more than the rest
        // of the bookkeeping.
        let mut on_stack = [0u64; 16];
        let on_heap: Vec<u64>;
        let depth = parent_path.len();
        let path: &[u64] = if depth < on_stack.len() {
            on_stack[..depth].copy_from_slice(parent_path);
            on_stack[depth] = block;
            &on_stack[..=depth]
        } else {
            on_heap = [parent_path, &[block]].concat();
            &on_heap
        };

        if block >= self.nr_blocks {
            let e = BlockError::OutOfBounds {
                block,
                nr_blocks: self.nr_blocks,
            };
            self.record(tree, path.to_vec(), keys, Damage::Block(e));
            return;
        }
        if let Some(refs) = self.metadata_refs {
            refs.inc(block);
        }

        if self.visited.insert(block) {
            self.progress.inc(1);
            match self.first_visit(block, spec, parent_path.is_empty()) {
                Err(damage) => {
                    self.damaged.lock().unwrap().insert(block, damage.clone());
                    self.record(tree, path.to_vec(), keys, damage);
                }
                Ok((node, kind)) => {
                    self.valid.insert(block);
                    self.check_key_range(tree, node, path, keys);
                    match kind {
                        NodeKind::Leaf => {
                            // validate() bounds nr_entries by max_entries,
                            // which fits a block: no overflow.
                            self.leaf_entries[block as usize]
                                .store(node.nr_entries() as u16 + 1, Ordering::Relaxed);
                            if let Some(damage) = visitor.visit(tree, block, node) {
                                self.record(tree, path.to_vec(), keys, damage);
                            }
                        }
                        NodeKind::Internal => {
                            self.descend(scope, tree, node, path, keys, spec, visitor);
                        }
                    }
                }
            }
            return;
        }
        // Another parent already reached this node; its keys must still
        // fit this parent's range. (Damage was reported on first visit.)
        if keys != KeyRange::ALL {
            if let Ok(data) = self.src.block(block) {
                // The first visit may still be under way on another
                // thread: then the checksum decides.
                if self.valid.contains(block) || checksum::matches(data, BlockKind::BtreeNode) {
                    self.check_key_range(tree, NodeView::new(data), path, keys);
                }
            }
        }
    }

    fn first_visit(
        &self,
        block: u64,
        spec: TreeSpec,
        is_root: bool,
    ) -> Result<(NodeView<'a>, NodeKind), Damage> {
        let data = self
            .src
            .checked(block, BlockKind::BtreeNode)
            .map_err(Damage::Block)?;
        let node = NodeView::new(data);
        let kind = node
            .validate(spec.value_size, self.strict)
            .map_err(Damage::Node)?;
        let fill_checked = match spec.fill {
            Fill::AllNodes => true,
            Fill::InternalNodes => kind == NodeKind::Internal,
        };
        if self.strict && !is_root && fill_checked && node.nr_entries() < node.max_entries() / 3 {
            return Err(Damage::Underpopulated {
                nr_entries: node.nr_entries(),
                max_entries: node.max_entries(),
            });
        }
        Ok((node, kind))
    }

    #[allow(clippy::too_many_arguments)]
    fn descend<'s, V: LeafVisitor>(
        &'s self,
        scope: &rayon::Scope<'s>,
        tree: &'s str,
        node: NodeView<'a>,
        path: &[u64],
        keys: KeyRange,
        spec: TreeSpec,
        visitor: &'s V,
    ) {
        let n = node.nr_entries();
        // Children are scattered over the metadata: start loading their
        // headers a few ahead, so each visit finds its node in cache
        // rather than waiting on memory (and a TLB walk) for it.
        const AHEAD: u32 = 4;
        for i in 0..n.min(AHEAD) {
            self.src.prefetch_header(node.value_u64(i));
        }
        for i in 0..n {
            if i + AHEAD < n {
                self.src.prefetch_header(node.value_u64(i + AHEAD));
            }
            let child = node.value_u64(i);
            let child_keys = keys.child(&node, i);
            // Leaves are cheap: visit them on this thread. Internal
            // children become tasks of their own.
            let is_internal = self
                .src
                .block(child)
                .map(|b| NodeView::new(b).kind() == Some(NodeKind::Internal))
                .unwrap_or(false);
            if is_internal {
                let path = path.to_vec();
                scope.spawn(move |s| {
                    self.arrive(s, tree, child, &path, child_keys, spec, visitor);
                });
            } else {
                self.arrive(scope, tree, child, path, child_keys, spec, visitor);
            }
        }
    }

    fn check_key_range(&self, tree: &str, node: NodeView<'_>, path: &[u64], keys: KeyRange) {
        if keys == KeyRange::ALL {
            return;
        }
        let Some((first, last)) = node.key_bounds_unchecked() else {
            return;
        };
        if !keys.contains(first) || !keys.contains(last) {
            self.record(
                tree,
                path.to_vec(),
                keys,
                Damage::KeysOutOfRange { first, last },
            );
        }
    }

    /// Whether `block` was found damaged during the walk.
    pub fn is_damaged(&self, block: u64) -> bool {
        self.damaged.lock().unwrap().contains_key(&block)
    }

    /// Entry counts and heights of the tree at `root`, computed from the
    /// nodes the walk validated. `memo` carries internal-node summaries
    /// between trees that share subtrees. Uneven depth is recorded as
    /// damage of the internal node concerned.
    pub fn summarise(
        &self,
        tree: &str,
        root: u64,
        memo: &mut BlockMap<SubtreeSummary>,
    ) -> SubtreeSummary {
        let damaged = self.damaged.lock().unwrap();
        self.summarise_node(tree, root, &damaged, memo)
    }

    fn summarise_node(
        &self,
        tree: &str,
        block: u64,
        damaged: &HashMap<u64, Damage>,
        memo: &mut BlockMap<SubtreeSummary>,
    ) -> SubtreeSummary {
        let unusable = SubtreeSummary {
            entries: 0,
            damaged: 1,
            height: None,
        };
        if damaged.contains_key(&block) || !self.visited.contains(block) {
            return unusable;
        }
        if let Some(n) = self.leaf_entries.get(block as usize) {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                return SubtreeSummary {
                    entries: n as u64 - 1,
                    damaged: 0,
                    height: Some(0),
                };
            }
        }
        let Ok(data) = self.src.block(block) else {
            return unusable;
        };
        let node = NodeView::new(data);
        if node.is_leaf() {
            return SubtreeSummary {
                entries: node.nr_entries() as u64,
                damaged: 0,
                height: Some(0),
            };
        }
        if let Some(s) = memo.get(&block) {
            if *s == IN_PROGRESS {
                // The node is its own descendant: a cycle.
                self.record(tree, vec![block], KeyRange::ALL, Damage::Cycle);
                return unusable;
            }
            return *s;
        }
        memo.insert(block, IN_PROGRESS);
        let mut sum = SubtreeSummary::default();
        // The lowest and highest child heights: a sound node has one.
        let mut heights: Option<(u32, u32)> = None;
        for i in 0..node.nr_entries() {
            let child = self.summarise_node(tree, node.value_u64(i), damaged, memo);
            sum.entries += child.entries;
            sum.damaged += child.damaged;
            if let Some(h) = child.height {
                heights = Some(heights.map_or((h, h), |(lo, hi)| (lo.min(h), hi.max(h))));
            }
        }
        sum.height = match heights {
            Some((lo, hi)) if lo == hi => Some(lo + 1),
            None => None,
            Some(_) => {
                sum.damaged += 1;
                self.record(tree, vec![block], KeyRange::ALL, Damage::UnevenDepth);
                None
            }
        };
        memo.insert(block, sum);
        sum
    }
}

/// Marks an internal node whose summary is being computed.
const IN_PROGRESS: SubtreeSummary = SubtreeSummary {
    entries: u64::MAX,
    damaged: u64::MAX,
    height: None,
};

/// A leaf entry: key and value bytes.
pub type Entry<'a> = (u64, &'a [u8]);

/// The entries of a tree in key order, reading only nodes that validate
/// and skipping damaged subtrees (the walk reports those). Counts nothing:
/// for views of trees the walker has already checked.
pub fn read_entries(src: &BlockSource, root: u64, value_size: u32) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    let _ = visit_entries(src, root, value_size, false, &mut out);
    out
}

/// Like `read_entries`, but the first damaged node is an error naming it.
pub fn try_read_entries(
    src: &BlockSource,
    root: u64,
    value_size: u32,
) -> Result<Vec<Entry<'_>>, (u64, Damage)> {
    let mut out = Vec::new();
    visit_entries(src, root, value_size, true, &mut out)?;
    Ok(out)
}

fn visit_entries<'a>(
    src: &'a BlockSource,
    root: u64,
    value_size: u32,
    stop_at_damage: bool,
    out: &mut Vec<Entry<'a>>,
) -> Result<(), (u64, Damage)> {
    let mut stack = vec![(root, 0u32)];
    while let Some((block, depth)) = stack.pop() {
        // Depth bounds a cycle of internal nodes.
        if depth > 64 {
            continue;
        }
        let node = src
            .checked(block, BlockKind::BtreeNode)
            .map_err(Damage::Block)
            .and_then(|data| {
                let node = NodeView::new(data);
                node.validate(value_size, false)
                    .map(|kind| (node, kind))
                    .map_err(Damage::Node)
            });
        match node {
            Ok((node, NodeKind::Leaf)) => {
                out.extend((0..node.nr_entries()).map(|i| (node.key(i), node.value(i))));
            }
            Ok((node, NodeKind::Internal)) => {
                for i in (0..node.nr_entries()).rev() {
                    stack.push((node.value_u64(i), depth + 1));
                }
            }
            Err(damage) if stop_at_damage => return Err((block, damage)),
            Err(_) => {}
        }
    }
    Ok(())
}
