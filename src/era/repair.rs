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
use crate::pdata::bitset::{words_for, WORD_SIZE};

use super::dump::runs_from_words;
use super::model::{EraModel, ModelWriteset};
use super::read::{era_of, EraState, Side};
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
    let state = EraState::open(src, Side::Live, false)?;
    let sb = &state.sb;
    let current = sb.current_era;
    let mut warnings = state.problems.clone();
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
        let mut words = ArrayView::read(
            src,
            &name,
            ws.writeset.root,
            WORD_SIZE,
            Some(words_for(nr_bits)),
        );
        let length_wrong = words.damage.iter().any(|d| {
            matches!(
                d.kind,
                crate::pdata::array::ArrayDamageKind::Beyond
                    | crate::pdata::array::ArrayDamageKind::Header(
                        crate::pdata::array::ArrayBlockError::WrongLength { .. }
                    )
            )
        });
        if length_wrong {
            // nr_bits and the bitset disagree: the words are the witness.
            let held = ArrayView::read(src, &name, ws.writeset.root, WORD_SIZE, None);
            let n = held.len();
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
        warnings.push(format!("{d}"));
    }
    let mut lost: Vec<Range<u64>> = Vec::new();
    let mut newer = 0u64;
    for b in 0..sb.nr_blocks as u64 {
        let era = match era_of(&array, b) {
            Some(e) if e > current => {
                newer += 1;
                current
            }
            Some(e) => e,
            None => {
                match lost.last_mut() {
                    Some(r) if r.end == b => r.end = b + 1,
                    _ => lost.push(b..b + 1),
                }
                current
            }
        };
        if era != 0 {
            model.eras.push((b as u32, era));
        }
    }
    if !lost.is_empty() {
        warnings.push(format!(
            "era array: origin blocks {} cannot be read; they are given the current era {current}",
            ranges(&lost)
        ));
    }
    if newer > 0 {
        warnings.push(format!(
            "era array: {newer} origin block(s) had an era newer than the current era {current}; \
             they are given the current era"
        ));
    }
    Ok(Salvage { model, warnings })
}
