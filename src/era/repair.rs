//! Salvaging damaged era metadata into an `EraModel` (era_repair, and
//! era_dump --repair): a damaged writeset costs only its unreadable
//! words, a damaged era array block only its entries.
//!
//! What cannot be read is counted as written, never as clean: a block
//! whose writeset word is lost is marked in that era, an era-array entry
//! that is lost (or newer than the current era) gets the current era.
//! Backup and replication tools then copy those blocks again instead of
//! missing a change. The open current writeset is folded into the
//! writeset tree under the current era, as the kernel's next rollover
//! would; a metadata snapshot is not carried over.

use std::ops::Range;

use anyhow::{bail, Result};

use crate::io::BlockSource;
use crate::pdata::array::max_entries_for;
use crate::pdata::array::view::ArrayView;
use crate::pdata::bitset::{words_for, BITS_PER_ARRAY_BLOCK, WORD_SIZE};

use super::dump::runs_from_words;
use super::model::{EraModel, ModelWriteset};
use super::read::{era_of, live_superblock, EraState, Side};
use super::superblock::{Superblock, ERA_MAGIC, ERA_VERSION};
use super::ERA_ENTRY_SIZE;

pub struct Salvage {
    pub model: EraModel,
    /// What was lost or changed, one line each.
    pub warnings: Vec<String>,
}

fn ranges(rs: &[Range<u64>]) -> String {
    let shown: Vec<String> = rs
        .iter()
        .take(4)
        .map(|r| {
            if r.end - r.start == 1 {
                r.start.to_string()
            } else {
                format!("{}..{}", r.start, r.end - 1)
            }
        })
        .collect();
    let more = if rs.len() > 4 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

pub fn salvage(src: &BlockSource) -> Result<Salvage> {
    let mut warnings = Vec::new();
    let live = match live_superblock(src) {
        Ok(sb) => sb,
        Err(e) => {
            let sb = superblock_despite_checksum(src).ok_or(e)?;
            warnings.push(
                "the superblock's checksum is wrong, but its fields are an era superblock's \
                 and its roots lead to btree nodes: they are used as they are"
                    .to_string(),
            );
            sb
        }
    };
    let state = EraState::with_live(src, live, Side::Live, false)?;
    let sb = &state.sb;
    let current = sb.current_era;
    warnings.extend(state.problems.iter().cloned());
    if sb.data_block_size == 0 {
        bail!(
            "the superblock's data block size is 0 sectors: the era block size cannot be \
             told; dump with era_dump --repair, set block_size, and era_restore"
        );
    }
    let capacity = src
        .nr_blocks()
        .saturating_mul(max_entries_for(ERA_ENTRY_SIZE) as u64);
    if sb.nr_blocks as u64 > capacity {
        bail!(
            "the superblock's nr_blocks {} is more than a {}-block metadata device can track",
            sb.nr_blocks,
            src.nr_blocks()
        );
    }
    let mut model = EraModel {
        block_size: sb.data_block_size,
        nr_blocks: sb.nr_blocks,
        current_era: current,
        ..Default::default()
    };
    let mut sets: Vec<ModelWriteset> = Vec::new();
    for ws in &state.writesets {
        let name = ws.name();
        let mut nr_bits = ws.writeset.nr_bits as u64;
        let most = src.nr_blocks().saturating_mul(BITS_PER_ARRAY_BLOCK);
        if nr_bits > most {
            warnings.push(format!(
                "{name}: nr_bits {nr_bits} is more than a {}-block metadata device can hold; \
                 taken as nr_blocks {}",
                src.nr_blocks(),
                sb.nr_blocks
            ));
            nr_bits = sb.nr_blocks as u64;
        }
        let mut words = ArrayView::read(
            src,
            &name,
            ws.writeset.root,
            WORD_SIZE,
            Some(words_for(nr_bits)),
        );
        if !words.is_intact() {
            // A whole bitset of another length: nr_bits is what is wrong.
            let held = ArrayView::read(src, &name, ws.writeset.root, WORD_SIZE, None);
            let n = held.len();
            if held.is_intact() && n != words_for(nr_bits) {
                let fixed = if n == words_for(sb.nr_blocks as u64) {
                    sb.nr_blocks as u64
                } else {
                    n * 64
                };
                warnings.push(format!(
                    "{name}: nr_bits {nr_bits} disagrees with its bitset of {n} words; \
                     restored with nr_bits {fixed}"
                ));
                nr_bits = fixed.min(u32::MAX as u64);
                words = held;
            }
        }
        let (mut marked, unknown) = runs_from_words(&words, nr_bits);
        if !unknown.is_empty() {
            warnings.push(format!(
                "{name}: bits {} cannot be read; those blocks are counted as written in era {}",
                ranges(&unknown),
                ws.era
            ));
            marked.extend(unknown);
        }
        let mut era = ws.era;
        if era > current {
            warnings.push(format!(
                "{name} is newer than the current era {current}; its blocks are counted as \
                 written in era {current}"
            ));
            era = current;
        }
        let mut set = ModelWriteset {
            era,
            nr_bits: nr_bits as u32,
            marked,
        };
        set.normalise();
        sets.push(set);
    }
    // One writeset per era: merge the open one (or a moved one) in.
    sets.sort_by_key(|s| s.era);
    for s in sets {
        match model.writesets.last_mut() {
            Some(last) if last.era == s.era => {
                last.nr_bits = last.nr_bits.max(s.nr_bits);
                last.marked.extend(s.marked);
                last.normalise();
            }
            _ => model.writesets.push(s),
        }
    }

    let array = state.era_array(src);
    for d in &array.index_damage {
        warnings.push(format!("{d}"));
    }
    for d in &array.damage {
        let what =
            d.describe(&|r| crate::pdata::array::name_range("origin block", "origin blocks", r));
        if d.entries.is_empty() {
            warnings.push(what);
        } else {
            warnings.push(format!(
                "{what}; those blocks are given the current era {current}"
            ));
        }
    }
    let mut newer = 0u64;
    for b in 0..sb.nr_blocks as u64 {
        let era = match era_of(&array, b) {
            Some(e) if e > current => {
                newer += 1;
                current
            }
            Some(e) => e,
            None => current,
        };
        if era != 0 {
            model.eras.push((b as u32, era));
        }
    }
    if newer > 0 {
        warnings.push(format!(
            "era array: {newer} origin block(s) had an era newer than the current era {current}; \
             they are given the current era"
        ));
    }
    Ok(Salvage { model, warnings })
}

/// Block 0 read as an era superblock although its checksum fails: only
/// when its magic and version are right, it records block 0 as its
/// location, and both its writeset tree and era array roots are valid
/// btree nodes (a block overwritten by anything else fails that).
fn superblock_despite_checksum(src: &BlockSource) -> Option<Superblock> {
    use crate::io::checksum::BlockKind;
    let sb = Superblock::parse(src.block(0).ok()?);
    if sb.magic != ERA_MAGIC || sb.version != ERA_VERSION || sb.blocknr != 0 {
        return None;
    }
    for root in [sb.writeset_tree_root, sb.era_array_root] {
        src.checked(root, BlockKind::BtreeNode).ok()?;
    }
    Some(sb)
}
