//! Finding the leaf runs devices share, so a dump writes them once.
//!
//! Each device's mapping tree is a sequence of leaves in key order.
//! Leaves that appear in more than one device are shared. Two neighbouring
//! shared leaves x, y belong to one run when every device holding x holds
//! y right after it and every device holding y holds x right before it:
//! runs are then maximal, identical wherever they occur, and named after
//! their first leaf's block.

use crate::pdata::block_hash::BlockMap;

/// A stretch of one device's leaf sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Leaves only this device holds, written inline.
    Inline(Vec<u64>),
    /// A shared run, by the index of its definition.
    Shared(usize),
}

#[derive(Debug, Default)]
pub struct Sharing {
    /// Shared runs, in ascending order of their first leaf's block (the
    /// order the reference tools write them in).
    pub defs: Vec<Vec<u64>>,
    /// Each device's sequence as segments.
    pub devices: Vec<Vec<Segment>>,
}

/// What follows (or precedes) a leaf wherever it occurs: nothing yet,
/// one and the same leaf, or differing leaves (or a sequence's end).
/// Packed in a u64 per block, so that the links of every block fit
/// dense arrays: a hash map per link cost a fifth of a large dump.
const NONE: u64 = u64::MAX;
const MANY: u64 = u64::MAX - 1;

fn link(have: u64, b: Option<u64>) -> u64 {
    match (have, b) {
        (_, None) => MANY,
        (NONE, Some(b)) => b,
        (a, Some(b)) if a == b => a,
        _ => MANY,
    }
}

/// Splits each device's leaf sequence into inline and shared segments.
pub fn analyse(sequences: &[Vec<u64>]) -> Sharing {
    let end = sequences
        .iter()
        .flatten()
        .max()
        .map_or(0, |&b| b as usize + 1);
    // Uses saturate at 2: only "shared or not" is asked.
    let mut uses = vec![0u8; end];
    let mut next = vec![NONE; end];
    let mut prev = vec![NONE; end];
    for seq in sequences {
        for (i, &leaf) in seq.iter().enumerate() {
            let l = leaf as usize;
            uses[l] = uses[l].saturating_add(1).min(2);
            next[l] = link(next[l], seq.get(i + 1).copied());
            prev[l] = link(prev[l], i.checked_sub(1).map(|j| seq[j]));
        }
    }
    let shared = |b: u64| uses[b as usize] > 1;
    let joined = |x: u64, y: u64| next[x as usize] == y && prev[y as usize] == x;

    let mut out = Sharing::default();
    let mut def_of: BlockMap<usize> = BlockMap::default();
    for seq in sequences {
        let mut segments = Vec::new();
        let mut i = 0;
        while i < seq.len() {
            if !shared(seq[i]) {
                let start = i;
                while i < seq.len() && !shared(seq[i]) {
                    i += 1;
                }
                segments.push(Segment::Inline(seq[start..i].to_vec()));
                continue;
            }
            let start = i;
            while i + 1 < seq.len() && shared(seq[i + 1]) && joined(seq[i], seq[i + 1]) {
                i += 1;
            }
            i += 1;
            let first = seq[start];
            let idx = *def_of.entry(first).or_insert_with(|| {
                out.defs.push(seq[start..i].to_vec());
                out.defs.len() - 1
            });
            segments.push(Segment::Shared(idx));
        }
        out.devices.push(segments);
    }
    sort_defs(&mut out);
    out
}

fn sort_defs(s: &mut Sharing) {
    let mut order: Vec<usize> = (0..s.defs.len()).collect();
    order.sort_by_key(|&i| s.defs[i][0]);
    let mut new_index = vec![0; order.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let mut defs: Vec<Option<Vec<u64>>> =
        std::mem::take(&mut s.defs).into_iter().map(Some).collect();
    s.defs = order.iter().map(|&i| defs[i].take().unwrap()).collect();
    for segments in &mut s.devices {
        for seg in segments {
            if let Segment::Shared(i) = seg {
                *i = new_index[*i];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_where_devices_diverge() {
        // Device 0: 1 2 3 4; device 1: 1 2 3 5; device 2: 9 2 3.
        let s = analyse(&[vec![1, 2, 3, 4], vec![1, 2, 3, 5], vec![9, 2, 3]]);
        // 1 is shared by two devices, 2 3 by three: 1 | 2 3 are separate runs.
        assert_eq!(s.defs, vec![vec![1], vec![2, 3]]);
        let t = analyse(&[vec![7, 8], vec![7, 8, 1], vec![5, 1]]);
        assert_eq!(t.defs, vec![vec![1], vec![7, 8]]);
        assert_eq!(t.devices[1], vec![Segment::Shared(1), Segment::Shared(0)]);
        assert_eq!(
            s.devices[0],
            vec![
                Segment::Shared(0),
                Segment::Shared(1),
                Segment::Inline(vec![4])
            ]
        );
        assert_eq!(
            s.devices[2],
            vec![Segment::Inline(vec![9]), Segment::Shared(1)]
        );
    }
}
