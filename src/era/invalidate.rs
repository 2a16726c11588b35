//! era_invalidate's engine: the origin blocks that may have been written
//! since a given era, as runs.
//!
//! A block is listed when it may have been written in era N or later:
//! 1. it is marked in an archived writeset (the writeset tree) of era
//!    N or later;
//! 2. its era-array value is N or more (with N = 0 every block is);
//! 3. on live metadata only, it is marked in the open current writeset
//!    and the current era is N or later.
//!
//! The reference tools skip 3: they miss the current era's writes on the
//! live metadata of a running (or crashed) device. On a metadata
//! snapshot the superblock copy's current writeset is not the snapshot's
//! (it is the live side's new, empty era, freed later), so it is never
//! read there. The era array is always consulted: while the kernel keeps
//! its rule (every era-array value is at most the oldest archived era) it
//! adds nothing the writesets do not, and when it does not, it is right.

use std::io::Write;
use std::ops::Range;

use anyhow::{bail, Result};

use crate::io::xml::push_u64;
use crate::io::BlockSource;

use crate::pdata::array::max_entries_for;

use super::read::{EraState, Side};
use super::ERA_ENTRY_SIZE;

/// The runs of blocks written since era `since` on `side`.
pub fn written_since(src: &BlockSource, side: Side, since: u32) -> Result<Vec<Range<u64>>> {
    let state = EraState::open(src, side, true)?;
    let nr_blocks = state.sb.nr_blocks as u64;
    let array = state.era_array(src);
    if let Some(p) = array.first_problem() {
        bail!("{p}");
    }
    let mut listed = vec![0u64; nr_blocks.div_ceil(64) as usize];
    for ws in state.writesets.iter().filter(|w| w.era >= since) {
        let bits = ws.bits(src);
        if let Some(p) = bits.array().first_problem() {
            bail!("{p}");
        }
        let n = (ws.writeset.nr_bits as u64).min(nr_blocks);
        for (w, slot) in listed.iter_mut().enumerate().take(n.div_ceil(64) as usize) {
            let mut word = bits.word(w as u64).unwrap_or(0);
            let first = w as u64 * 64;
            if first + 64 > n {
                word &= (1u64 << (n - first)) - 1;
            }
            *slot |= word;
        }
    }
    // Block by block of the array (an entry looked up by number costs a
    // division and a bounds check each: most of the run on 4M blocks).
    let per_block = max_entries_for(ERA_ENTRY_SIZE) as u64;
    for (k, block) in array.blocks().iter().enumerate() {
        let Some(block) = block else { continue };
        let first = k as u64 * per_block;
        let values = block.values_bytes();
        let size = ERA_ENTRY_SIZE as usize;
        let n = ((values.len() / size) as u64).min(nr_blocks.saturating_sub(first));
        // 64 entries at a time into one mask (the comparisons vectorise),
        // shifted into place: blocks of the array do not start on words.
        for (c, chunk) in values[..n as usize * size].chunks(64 * size).enumerate() {
            let mut mask = 0u64;
            for (j, e) in chunk.chunks_exact(size).enumerate() {
                let era = u32::from_le_bytes(e.try_into().unwrap());
                mask |= ((era >= since) as u64) << j;
            }
            let b = first + c as u64 * 64;
            let (w, shift) = ((b / 64) as usize, b % 64);
            listed[w] |= mask << shift;
            if shift > 0 && mask >> (64 - shift) != 0 {
                listed[w + 1] |= mask >> (64 - shift);
            }
        }
    }
    let mut runs: Vec<Range<u64>> = Vec::new();
    for (w, &word) in listed.iter().enumerate() {
        let mut word = word;
        let first = w as u64 * 64;
        while word != 0 {
            let start = word.trailing_zeros() as u64;
            let len = (!(word >> start)).trailing_zeros() as u64;
            let r = first + start..first + start + len;
            match runs.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => runs.push(r),
            }
            word &= if start + len >= 64 {
                0
            } else {
                !((1u64 << (start + len)) - 1)
            };
        }
    }
    Ok(runs)
}

/// era_invalidate's XML: a run of one block as `<block>`, longer runs as
/// `<range>` with an exclusive end; no newline after `</blocks>`.
pub fn write_blocks(runs: &[Range<u64>], out: &mut dyn Write) -> Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    buf.extend_from_slice(b"<blocks>\n");
    for r in runs {
        if r.end - r.start == 1 {
            buf.extend_from_slice(b"  <block block=\"");
            push_u64(&mut buf, r.start);
            buf.extend_from_slice(b"\"/>\n");
        } else {
            buf.extend_from_slice(b"  <range begin=\"");
            push_u64(&mut buf, r.start);
            buf.extend_from_slice(b"\" end=\"");
            push_u64(&mut buf, r.end);
            buf.extend_from_slice(b"\"/>\n");
        }
        if buf.len() >= 1 << 16 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    buf.extend_from_slice(b"</blocks>");
    out.write_all(&buf)?;
    Ok(())
}
