//! Which entries of a damaged node to keep.
//!
//! A node whose checksum is sound can still hold entries that are wrong:
//! a count beyond its room, a key outside the range its parent gives it,
//! a key written twice, keys out of order. Each such entry is dropped on
//! its own evidence; the rest of the node stands:
//! 1. only the entries that fit the node (`max_entries`) are read; of a
//!    node claiming more than fit, trailing all-zero slots are unused;
//! 2. entries whose key lies outside the parent's range are dropped (of
//!    an internal node, whose keys only separate its children, those
//!    whose child's range misses the parent's);
//! 3. a key held by several entries with the same value is kept once;
//!    held with different values, none of them can be trusted;
//! 4. of what remains, the entries that every longest strictly ascending
//!    selection of keys keeps are kept. An entry out of order is not in
//!    every such selection, and neither is the neighbour it swapped places
//!    with: either could be the wrong one, so both go.

/// An inclusive range of keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    pub lo: u64,
    pub hi: u64,
}

impl Span {
    pub const ALL: Span = Span {
        lo: 0,
        hi: u64::MAX,
    };

    pub fn contains(&self, key: u64) -> bool {
        (self.lo..=self.hi).contains(&key)
    }
}

/// The entries of a node to keep, of the first `n` (those that fit), when
/// the keys must lie in `span`. None when every one of the `nr_entries`
/// the node records is kept as it is. An internal node's entry stands for
/// the keys from its own up to the next entry's.
pub fn kept_entries(
    n: u32,
    nr_entries: u32,
    internal: bool,
    key: impl Fn(u32) -> u64,
    same_value: impl Fn(u32, u32) -> bool,
    zero: impl Fn(u32) -> bool,
    span: Span,
) -> Option<Vec<u16>> {
    let mut n = n;
    if n < nr_entries {
        while n > 0 && zero(n - 1) {
            n -= 1;
        }
    }
    let in_range = |i: u32| {
        let k = key(i);
        span.contains(k) || internal && k < span.lo && (i + 1 == n || key(i + 1) > span.lo)
    };
    let in_order = (0..n).all(|i| in_range(i) && (i == 0 || key(i - 1) < key(i)));
    if n == nr_entries && in_order {
        return None;
    }
    let mut candidates: Vec<u32> = (0..n).filter(|&i| in_range(i)).collect();

    // Keys held more than once.
    let mut by_key: Vec<(u64, u32)> = candidates.iter().map(|&i| (key(i), i)).collect();
    by_key.sort_unstable();
    let mut dropped = vec![false; n as usize];
    for group in by_key.chunk_by(|a, b| a.0 == b.0) {
        if group.len() == 1 {
            continue;
        }
        let first = group[0].1;
        let all_same = group[1..].iter().all(|&(_, i)| same_value(first, i));
        let skip = if all_same { 1 } else { 0 };
        for &(_, i) in &group[skip..] {
            dropped[i as usize] = true;
        }
    }
    candidates.retain(|&i| !dropped[i as usize]);

    let keys: Vec<u64> = candidates.iter().map(|&i| key(i)).collect();
    let keep = in_every_longest_ascending(&keys);
    let kept: Vec<u16> = candidates
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(&i, _)| i as u16)
        .collect();
    if kept.len() == nr_entries as usize && kept.iter().enumerate().all(|(j, &i)| i as usize == j) {
        return None;
    }
    Some(kept)
}

/// For each key, whether every longest strictly ascending subsequence of
/// `keys` contains it. Nodes hold at most a few hundred entries, and only
/// damaged ones come here: quadratic is fine.
fn in_every_longest_ascending(keys: &[u64]) -> Vec<bool> {
    let m = keys.len();
    // Longest ascending run ending at i, and starting at i.
    let mut ending = vec![1usize; m];
    for i in 0..m {
        for j in 0..i {
            if keys[j] < keys[i] {
                ending[i] = ending[i].max(ending[j] + 1);
            }
        }
    }
    let mut starting = vec![1usize; m];
    for i in (0..m).rev() {
        for j in i + 1..m {
            if keys[j] > keys[i] {
                starting[i] = starting[i].max(starting[j] + 1);
            }
        }
    }
    let longest = ending.iter().copied().max().unwrap_or(0);
    let on_some: Vec<bool> = (0..m)
        .map(|i| ending[i] + starting[i] - 1 == longest)
        .collect();
    // An entry is on every longest one if no other entry on some longest
    // one can take its position.
    let mut at_position = vec![0usize; longest + 1];
    for i in 0..m {
        if on_some[i] {
            at_position[ending[i]] += 1;
        }
    }
    (0..m)
        .map(|i| on_some[i] && at_position[ending[i]] == 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(keys: &[u64], values: &[u64], nr: u32, span: Span) -> Option<Vec<u16>> {
        kept_entries(
            keys.len() as u32,
            nr,
            false,
            |i| keys[i as usize],
            |a, b| values[a as usize] == values[b as usize],
            |i| keys[i as usize] == 0 && values[i as usize] == 0,
            span,
        )
    }

    #[test]
    fn a_sound_node_keeps_everything() {
        assert_eq!(kept(&[1, 2, 5], &[0, 0, 0], 3, Span::ALL), None);
    }

    #[test]
    fn swapped_neighbours_both_go() {
        let k = [10, 12, 11, 13, 14];
        assert_eq!(kept(&k, &[0; 5], 5, Span::ALL), Some(vec![0, 3, 4]));
    }

    #[test]
    fn one_key_out_of_place_goes_alone() {
        let k = [10, 11, 3, 13, 14];
        assert_eq!(kept(&k, &[0; 5], 5, Span::ALL), Some(vec![0, 1, 3, 4]));
        // The same key outside the parent's range.
        let k = [3, 11, 12];
        let span = Span { lo: 10, hi: 20 };
        assert_eq!(kept(&k, &[0; 3], 3, span), Some(vec![1, 2]));
    }

    #[test]
    fn a_key_held_twice_is_kept_once_only_if_the_values_agree() {
        let k = [10, 10, 12];
        assert_eq!(kept(&k, &[7, 8, 9], 3, Span::ALL), Some(vec![2]));
        assert_eq!(kept(&k, &[7, 7, 9], 3, Span::ALL), Some(vec![0, 2]));
    }

    #[test]
    fn an_internal_entry_below_the_range_still_covers_its_start() {
        let k = [3u64, 15, 18];
        let f = |internal| {
            kept_entries(
                3,
                3,
                internal,
                |i| k[i as usize],
                |_, _| false,
                |_| false,
                Span { lo: 10, hi: 20 },
            )
        };
        assert_eq!(f(true), None);
        assert_eq!(f(false), Some(vec![1, 2]));
    }

    #[test]
    fn an_overfull_node_keeps_what_fits_and_is_in_order() {
        // Five slots read of a claimed six; the stale tail is out of order.
        let k = [10, 11, 12, 4, 5];
        assert_eq!(kept(&k, &[0; 5], 6, Span::ALL), Some(vec![0, 1, 2]));
        // Everything in order but more claimed than fits: all that fits.
        assert_eq!(kept(&[1, 2, 3], &[0; 3], 4, Span::ALL), Some(vec![0, 1, 2]));
        // Unused slots are zero: they do not count as repeats of key 0.
        let k = [0, 5, 0, 0];
        assert_eq!(kept(&k, &[9, 9, 0, 0], 6, Span::ALL), Some(vec![0, 1]));
    }
}
