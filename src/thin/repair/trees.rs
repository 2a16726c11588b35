//! The trees the scanned nodes make, salvaged entry by entry.
//!
//! Every node is classified (a mapping, top-level or details node) and
//! trees are summarised bottom-up, each node within the key range its
//! parent gives it. Nothing is all-or-nothing: a child that is missing,
//! of another class or part of a cycle costs its own keys; an entry that
//! is wrong costs itself (see `entries`); children whose keys show that
//! their pointers were swapped are put back where their keys say.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::rc::Rc;

use crate::io::BlockSource;
use crate::pdata::block_hash::{BlockHasher, BlockMap, BlockSet};
use crate::thin::block_time::BlockTime;
use crate::thin::device_details::{DeviceDetails, DEVICE_DETAILS_SIZE};

use super::entries::{kept_entries, Span};
use super::scan::{scan, Node};

/// A key range for messages.
fn show(span: Span) -> String {
    match (span.lo, span.hi) {
        (0, u64::MAX) => "(all)".to_string(),
        (lo, u64::MAX) => format!("{lo}.."),
        (lo, hi) => format!("{lo}..={hi}"),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    Mapping,
    TopLevel,
    Details,
}

/// No btree on a 16 GiB device is this deep; anything deeper is a chain
/// of damaged nodes.
const MAX_DEPTH: u32 = 32;

/// Counts by time, sorted by time. A tree holds few distinct times, so a
/// sorted vector beats a map at adding and merging.
#[derive(Clone, Debug, Default)]
pub struct Histogram(Vec<(u32, u64)>);

impl Histogram {
    fn add(&mut self, time: u32, n: u64) {
        match self.0.binary_search_by_key(&time, |(t, _)| *t) {
            Ok(i) => self.0[i].1 = self.0[i].1.saturating_add(n),
            Err(i) => self.0.insert(i, (time, n)),
        }
    }

    fn merge(&mut self, other: &Histogram) {
        for &(t, n) in &other.0 {
            self.add(t, n);
        }
    }

    pub fn iter(&self) -> std::slice::Iter<'_, (u32, u64)> {
        self.0.iter()
    }
}

/// What is known of a salvaged subtree.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Mappings (mapping trees) or devices (top-level, details).
    pub entries: u64,
    /// Mapping times -> number of mappings (mapping and top-level trees).
    pub times: Histogram,
    pub highest_data: u64,
    /// Top-level: mappings of its devices; details: sum of mapped_blocks.
    pub mapped_sum: u64,
    pub max_transaction: u64,
    /// Newest mapping time, or creation/snapshot time (details).
    pub age: u32,
}

impl Summary {
    fn merge(&mut self, c: &Summary) {
        self.entries = self.entries.saturating_add(c.entries);
        self.times.merge(&c.times);
        self.highest_data = self.highest_data.max(c.highest_data);
        self.mapped_sum = self.mapped_sum.saturating_add(c.mapped_sum);
        self.max_transaction = self.max_transaction.max(c.max_transaction);
        self.age = self.age.max(c.age);
    }
}

/// A child of an internal node and the keys it may hold.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub child: u64,
    pub span: Span,
}

type SpanMap<V> = HashMap<(u64, Span), V, BuildHasherDefault<BlockHasher>>;

/// A leaf reached by a salvage walk, with the entries kept of it (None:
/// all of them).
pub type SalvagedLeaf = (u64, Option<Rc<[u16]>>);

pub struct Trees<'a> {
    pub src: &'a BlockSource,
    pub nodes: BlockMap<Node<'a>>,
    /// A block the superblock names as the top-level root: an empty leaf
    /// there is an empty top-level tree, not an empty mapping tree.
    named_top_level: Option<u64>,
    classes: BlockMap<Option<Class>>,
    summaries: SpanMap<Option<Rc<Summary>>>,
    slots: SpanMap<Rc<[Slot]>>,
    kept: SpanMap<Option<Rc<[u16]>>>,
    /// Internal nodes whose children were put back by their keys.
    moves: BlockMap<String>,
    busy: BlockSet,
    /// What the salvage found wrong, once per node.
    pub notes: Vec<String>,
    noted: std::collections::HashSet<(u64, u8)>,
}

impl<'a> Trees<'a> {
    pub fn new(src: &'a BlockSource, named_top_level: Option<u64>) -> Trees<'a> {
        Trees {
            src,
            nodes: scan(src),
            named_top_level,
            classes: BlockMap::default(),
            summaries: SpanMap::default(),
            slots: SpanMap::default(),
            kept: SpanMap::default(),
            moves: BlockMap::default(),
            busy: BlockSet::default(),
            notes: Vec::new(),
            noted: Default::default(),
        }
    }

    /// Records a note once per block and kind of note.
    fn note(&mut self, block: u64, kind: u8, what: String) {
        if self.noted.insert((block, kind)) {
            self.notes.push(what);
        }
    }

    pub fn class(&mut self, b: u64) -> Option<Class> {
        self.class_at(b, 0)
    }

    fn class_at(&mut self, b: u64, depth: u32) -> Option<Class> {
        if let Some(c) = self.classes.get(&b) {
            return *c;
        }
        let node = *self.nodes.get(&b)?;
        if depth > MAX_DEPTH {
            return None;
        }
        self.classes.insert(b, None); // a cycle resolves to nothing
        let v = node.view;
        let class = if v.is_leaf() {
            if v.value_size() == DEVICE_DETAILS_SIZE {
                Some(Class::Details)
            } else if self.is_top_level_leaf(b, &node) {
                Some(Class::TopLevel)
            } else {
                Some(Class::Mapping)
            }
        } else {
            (0..node.n).find_map(|i| self.class_at(v.value_u64(i), depth + 1))
        };
        self.classes.insert(b, class);
        class
    }

    /// Top-level leaves map device ids to metadata blocks; mapping values
    /// pack a data block above 24 bits of time, so they are far larger
    /// unless every mapping of the leaf is of data block 0.
    fn is_top_level_leaf(&self, b: u64, node: &Node) -> bool {
        if node.n == 0 {
            return self.named_top_level == Some(b);
        }
        let nr_blocks = self.src.nr_blocks();
        let values = || (0..node.n).map(|i| node.view.value_u64(i));
        values().all(|v| v > 0 && v < nr_blocks && v != b)
            && (node.n >= 2 || values().any(|v| self.nodes.contains_key(&v)))
    }

    /// The entries of `b` kept within `span`.
    fn kept(&mut self, b: u64, span: Span) -> Option<Rc<[u16]>> {
        if let Some(k) = self.kept.get(&(b, span)) {
            return k.clone();
        }
        let node = self.nodes[&b];
        let v = node.view;
        let k = kept_entries(
            node.n,
            v.nr_entries(),
            !v.is_leaf(),
            |i| v.key(i),
            |x, y| v.value(x) == v.value(y),
            |i| v.key(i) == 0 && v.value(i).iter().all(|&b| b == 0),
            span,
        );
        let k: Option<Rc<[u16]>> = k.map(Rc::from);
        self.kept.insert((b, span), k.clone());
        k
    }

    /// Indices of the entries of `b` kept within `span`, in order.
    pub fn kept_indices(&mut self, b: u64, span: Span) -> Vec<u32> {
        match self.kept(b, span) {
            Some(k) => k.iter().map(|&i| i as u32).collect(),
            None => (0..self.nodes[&b].n).collect(),
        }
    }

    /// The children of internal node `b` within `span`, each with the keys
    /// it may hold.
    pub fn slots(&mut self, b: u64, span: Span) -> Rc<[Slot]> {
        if let Some(s) = self.slots.get(&(b, span)) {
            return s.clone();
        }
        let node = self.nodes[&b];
        let idx = self.kept_indices(b, span);
        let mut slots: Vec<Slot> = idx
            .iter()
            .enumerate()
            .map(|(j, &i)| Slot {
                child: node.view.value_u64(i),
                span: Span {
                    lo: if j == 0 { span.lo } else { node.key(i) },
                    hi: idx
                        .get(j + 1)
                        .map_or(span.hi, |&next| node.key(next).saturating_sub(1)),
                },
            })
            .collect();
        self.place_by_keys(b, &mut slots);
        let slots: Rc<[Slot]> = Rc::from(slots);
        self.slots.insert((b, span), slots.clone());
        slots
    }

    /// Children whose keys fit another slot, whose own child does not fit
    /// it either, are moved there (swapped pointers).
    fn place_by_keys(&mut self, b: u64, slots: &mut [Slot]) {
        let raw: Vec<Option<(u64, u64)>> = slots
            .iter()
            .map(|s| self.nodes.get(&s.child).and_then(|n| n.raw_span()))
            .collect();
        let fits = |child: usize, slot: &Slot| {
            raw[child].is_none_or(|(f, l)| slot.span.contains(f) && slot.span.contains(l))
        };
        let misfits: Vec<usize> = (0..slots.len()).filter(|&i| !fits(i, &slots[i])).collect();
        if misfits.is_empty() {
            return;
        }
        // The slot each misfit fits, if it fits exactly one misfit's slot.
        let mut target: Vec<Option<usize>> = vec![None; slots.len()];
        for &i in &misfits {
            let fitting: Vec<usize> = misfits
                .iter()
                .copied()
                .filter(|&j| j != i && fits(i, &slots[j]))
                .collect();
            if let [j] = fitting[..] {
                target[i] = Some(j);
            }
        }
        let old: Vec<u64> = slots.iter().map(|s| s.child).collect();
        let mut moved = Vec::new();
        for &i in &misfits {
            let Some(j) = target[i] else { continue };
            // Only one child may claim a slot.
            if misfits.iter().filter(|&&k| target[k] == Some(j)).count() == 1 {
                slots[j].child = old[i];
                moved.push((i, j));
            }
        }
        // A slot whose child moved away and which received none is empty:
        // it keeps its old child, whose entries are then filtered by span.
        if !moved.is_empty() {
            let pairs: Vec<String> = moved
                .iter()
                .map(|(i, j)| format!("entry {i} (block {}) to entry {j}", old[*i]))
                .collect();
            self.moves.insert(b, pairs.join(", "));
        }
    }

    /// The summary of the subtree at `b` as a tree of `class`, keys within
    /// `span`. None if `b` is no usable node of that class.
    pub fn summary(&mut self, b: u64, class: Class, span: Span) -> Option<Rc<Summary>> {
        self.summary_at(b, class, span, 0)
    }

    fn summary_at(&mut self, b: u64, class: Class, span: Span, depth: u32) -> Option<Rc<Summary>> {
        if let Some(s) = self.summaries.get(&(b, span)) {
            return s.clone();
        }
        if depth > MAX_DEPTH || self.class(b) != Some(class) || !self.busy.insert(b) {
            return None;
        }
        let s = Rc::new(self.compute(b, class, span, depth));
        self.busy.remove(&b);
        self.summaries.insert((b, span), Some(s.clone()));
        Some(s)
    }

    fn compute(&mut self, b: u64, class: Class, span: Span, depth: u32) -> Summary {
        let node = self.nodes[&b];
        let v = node.view;
        let mut s = Summary::default();
        if !v.is_leaf() {
            for slot in self.slots(b, span).iter() {
                if let Some(c) = self.summary_at(slot.child, class, slot.span, depth + 1) {
                    s.merge(&c);
                }
            }
            return s;
        }
        let idx = self.kept_indices(b, span);
        match class {
            Class::Mapping => {
                s.entries = idx.len() as u64;
                // Neighbouring mappings mostly share a time: count runs.
                let mut run: Option<(u32, u64)> = None;
                for &i in &idx {
                    let bt = BlockTime::unpack(v.value_u64(i));
                    match &mut run {
                        Some((t, n)) if *t == bt.time => *n += 1,
                        _ => {
                            if let Some((t, n)) = run.replace((bt.time, 1)) {
                                s.times.add(t, n);
                            }
                        }
                    }
                    s.highest_data = s.highest_data.max(bt.block);
                    s.age = s.age.max(bt.time);
                }
                if let Some((t, n)) = run {
                    s.times.add(t, n);
                }
            }
            Class::TopLevel => {
                for &i in &idx {
                    s.entries += 1;
                    let root = v.value_u64(i);
                    if let Some(c) = self.summary(root, Class::Mapping, Span::ALL) {
                        s.mapped_sum = s.mapped_sum.saturating_add(c.entries);
                        s.times.merge(&c.times);
                        s.highest_data = s.highest_data.max(c.highest_data);
                        s.age = s.age.max(c.age);
                    }
                }
            }
            Class::Details => {
                for &i in &idx {
                    let d = DeviceDetails::parse(v.value(i));
                    s.entries += 1;
                    s.mapped_sum = s.mapped_sum.saturating_add(d.mapped_blocks);
                    s.max_transaction = s.max_transaction.max(d.transaction_id);
                    s.age = s.age.max(d.creation_time).max(d.snapshotted_time);
                }
            }
        }
        s
    }

    /// The leaves of the salvaged tree at `root`, in key order.
    pub fn leaves(&mut self, root: u64, class: Class) -> Vec<SalvagedLeaf> {
        let mut out = Vec::new();
        if self.summary(root, class, Span::ALL).is_none() {
            return out;
        }
        let mut stack = vec![(root, Span::ALL)];
        // A node met twice in one tree is a cycle or a duplicate: once.
        let mut seen = BlockSet::default();
        while let Some((b, span)) = stack.pop() {
            if !seen.insert(b) {
                continue;
            }
            if self.summary(b, class, span).is_none() {
                self.note_lost(b, span);
                continue;
            }
            self.note_damage(b, span);
            if self.nodes[&b].view.is_leaf() {
                let kept = self.kept(b, span);
                out.push((b, kept));
            } else {
                let slots = self.slots(b, span);
                stack.extend(slots.iter().rev().map(|s| (s.child, s.span)));
            }
        }
        out
    }

    fn note_lost(&mut self, b: u64, span: Span) {
        let why = match self.nodes.get(&b) {
            None => "no sound node (bad checksum, not a node, or beyond the device)",
            Some(_) => "a node of another kind of tree",
        };
        self.note(
            b,
            0,
            format!(
                "block {b} holds {why}: the entries of keys {} under it are lost",
                show(span)
            ),
        );
    }

    /// Forgets the notes so far: the next walks note what they use.
    pub fn forget_notes(&mut self) {
        self.notes.clear();
        self.noted.clear();
    }

    /// Notes what was left out of a node used in a salvaged tree.
    fn note_damage(&mut self, b: u64, span: Span) {
        let node = self.nodes[&b];
        let v = node.view;
        let what = if v.value_size() == DEVICE_DETAILS_SIZE {
            "device details node"
        } else if v.is_leaf() {
            "leaf"
        } else {
            "internal node"
        };
        if let Some(at) = node.recorded_at {
            let claimed = if self.nodes.get(&at).is_some_and(|n| n.recorded_at.is_none()) {
                format!(
                    "; block {at} holds a sound node of its own, so the parent's pointer decides"
                )
            } else {
                String::new()
            };
            self.note(
                b,
                1,
                format!(
                    "{what} at block {b} records block {at} as its location; kept, its keys \
                     fitting where its parent points ({}){claimed}",
                    show(span)
                ),
            );
        }
        if let Some(k) = self.kept(b, span) {
            let fit = if node.overfull() {
                format!(" (it claims {}, {} fit)", v.nr_entries(), node.n)
            } else {
                String::new()
            };
            self.note(
                b,
                2,
                format!(
                    "{what} at block {b}: kept {} of its entries{fit}; the others were out of \
                     order, repeated or outside keys {}",
                    k.len(),
                    show(span)
                ),
            );
        }
        if let Some(m) = self.moves.get(&b).cloned() {
            self.note(
                b,
                3,
                format!("{what} at block {b}: children out of place, moved by their keys: {m}"),
            );
        }
    }

    /// Every node of the salvaged tree at `root`.
    pub fn nodes_of(&mut self, root: u64, class: Class) -> Vec<u64> {
        let mut out = Vec::new();
        let mut stack = vec![(root, Span::ALL)];
        let mut seen = BlockSet::default();
        while let Some((b, span)) = stack.pop() {
            if !seen.insert(b) || self.summary(b, class, span).is_none() {
                continue;
            }
            out.push(b);
            if !self.nodes[&b].view.is_leaf() {
                let slots = self.slots(b, span);
                stack.extend(slots.iter().map(|s| (s.child, s.span)));
            }
        }
        out
    }

    /// Keys and values of the salvaged tree at `root`, in key order.
    pub fn entries(&mut self, root: u64, class: Class) -> Vec<(u64, &'a [u8])> {
        let mut out = Vec::new();
        for (leaf, kept) in self.leaves(root, class) {
            let v = self.nodes[&leaf].view;
            match kept {
                Some(k) => out.extend(k.iter().map(|&i| (v.key(i as u32), v.value(i as u32)))),
                None => out.extend((0..v.nr_entries()).map(|i| (v.key(i), v.value(i)))),
            }
        }
        out
    }

    /// Roots of `class`: usable nodes of the class that no internal node of
    /// the class points at, in block order.
    pub fn roots(&mut self, class: Class) -> Vec<u64> {
        let mut blocks: Vec<u64> = self.nodes.keys().copied().collect();
        blocks.sort_unstable();
        let mut referenced = BlockSet::default();
        let mut members = Vec::new();
        for b in blocks {
            if self.class(b) != Some(class) {
                continue;
            }
            members.push(b);
            let node = self.nodes[&b];
            if !node.view.is_leaf() {
                for i in self.kept_indices(b, Span::ALL) {
                    referenced.insert(node.view.value_u64(i));
                }
            }
        }
        members
            .into_iter()
            .filter(|b| !referenced.contains(b))
            .filter(|&b| self.summary(b, class, Span::ALL).is_some())
            .collect()
    }
}
