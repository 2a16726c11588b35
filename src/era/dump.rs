//! era_dump's engine: the metadata read into an `EraModel` (strictly, or
//! salvaged with `--repair`) and written as XML.

use std::io::Write;
use std::ops::Range;

use anyhow::{bail, Result};

use crate::io::BlockSource;
use crate::pdata::array::max_entries_for;
use crate::pdata::array::view::ArrayView;
use crate::pdata::bitset::WORD_SIZE;

use super::model::{EraModel, ModelWriteset};
use super::read::{era_of, EraState, Side};

#[derive(Clone, Copy, Debug, Default)]
pub struct DumpOptions {
    pub logical: bool,
    pub repair: bool,
}

/// The marked runs of a bitset's words; words that cannot be read are
/// `unknown` (`Some(true)`: counted as marked, `None`: an error).
pub fn runs_from_words(words: &ArrayView<'_>, nr_bits: u64) -> (Vec<Range<u64>>, Vec<Range<u64>>) {
    let mut marked: Vec<Range<u64>> = Vec::new();
    let mut unknown: Vec<Range<u64>> = Vec::new();
    let push = |v: &mut Vec<Range<u64>>, r: Range<u64>| match v.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => v.push(r),
    };
    let per_block = max_entries_for(WORD_SIZE) as u64;
    let nr_words = nr_bits.div_ceil(64);
    for k in 0..nr_words.div_ceil(per_block) {
        let words_here = k * per_block..((k + 1) * per_block).min(nr_words);
        let Some(block) = words.block(k) else {
            // A lost array block: all its bits at once.
            let bits = words_here.start * 64..(words_here.end * 64).min(nr_bits);
            push(&mut unknown, bits);
            continue;
        };
        for w in words_here {
            let first = w * 64;
            let valid = (nr_bits - first).min(64);
            let Some(bytes) = block.value((w % per_block) as u32) else {
                push(&mut unknown, first..first + valid);
                continue;
            };
            let mut word = u64::from_le_bytes(bytes.try_into().unwrap());
            if valid < 64 {
                word &= (1u64 << valid) - 1;
            }
            if word == u64::MAX {
                push(&mut marked, first..first + 64);
                continue;
            }
            while word != 0 {
                let start = word.trailing_zeros() as u64;
                let len = (!(word >> start)).trailing_zeros() as u64;
                push(&mut marked, first + start..first + start + len);
                word &= if start + len >= 64 {
                    0
                } else {
                    !((1u64 << (start + len)) - 1)
                };
            }
        }
    }
    (marked, unknown)
}

/// The live metadata as a model, every structure read strictly: the
/// first problem is the error.
pub fn read_model(src: &BlockSource) -> Result<EraModel> {
    let state = EraState::open(src, Side::Live, true)?;
    let sb = &state.sb;
    let mut model = EraModel {
        block_size: sb.data_block_size,
        nr_blocks: sb.nr_blocks,
        current_era: sb.current_era,
        ..Default::default()
    };
    for ws in &state.writesets {
        if model.writesets.last().is_some_and(|l| l.era == ws.era) {
            bail!(
                "era {} has two writesets: one in the writeset tree and the open current \
                 writeset (era_dump --repair merges them)",
                ws.era
            );
        }
        let view = ws.bits(src);
        if let Some(p) = view.array().first_problem() {
            bail!("{p}");
        }
        let (marked, _) = runs_from_words(view.array(), ws.writeset.nr_bits as u64);
        model.writesets.push(ModelWriteset {
            era: ws.era,
            nr_bits: ws.writeset.nr_bits,
            marked,
        });
    }
    let array = state.era_array(src);
    if let Some(p) = array.first_problem() {
        bail!("{p}");
    }
    for b in 0..sb.nr_blocks as u64 {
        match era_of(&array, b) {
            Some(0) => {}
            Some(e) => model.eras.push((b as u32, e)),
            None => bail!("era array: origin block {b} cannot be read"),
        }
    }
    Ok(model)
}

/// Dumps `src` as era XML into `out`; returns the salvage's warnings
/// (`--repair`).
pub fn dump(src: &BlockSource, opts: &DumpOptions, out: &mut dyn Write) -> Result<Vec<String>> {
    let (model, warnings) = if opts.repair {
        let s = super::repair::salvage(src)?;
        (s.model, s.warnings)
    } else {
        (read_model(src)?, Vec::new())
    };
    if opts.logical {
        model.write_logical_xml(out)?;
    } else {
        model.write_xml(out)?;
    }
    Ok(warnings)
}
