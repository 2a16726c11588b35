//! Reading era metadata for the tools that do not check it: which
//! superblock to use (live or metadata snapshot), the writesets it
//! holds, its era array.
//!
//! ```ignore
//! let state = EraState::open(&src, Side::Live)?;
//! for ws in &state.writesets { let bits = ws.bits(&src); ... }
//! let eras = state.era_array(&src);            // an ArrayView of u32
//! ```

use anyhow::{anyhow, bail, Result};

use crate::io::BlockSource;
use crate::pdata::array::view::ArrayView;
use crate::pdata::bitset::BitsetView;
use crate::pdata::btree::walk::{read_entries, try_read_entries};

use super::superblock::{bad_superblock, Superblock, Writeset, SUPERBLOCK_LOCATION, WRITESET_SIZE};
use super::ERA_ENTRY_SIZE;

/// Which view of the metadata a tool reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Live,
    /// The metadata snapshot (`--metadata-snapshot`).
    Snapshot,
}

/// Where a writeset comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An archived writeset of the writeset tree.
    Tree,
    /// The superblock's open (current) writeset.
    Current,
}

/// One writeset: the blocks written during `era`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EraWriteset {
    pub era: u32,
    pub writeset: Writeset,
    pub origin: Origin,
}

impl EraWriteset {
    /// Its name in messages ("writeset era 3", "current writeset (era 4)").
    pub fn name(&self) -> String {
        match self.origin {
            Origin::Tree => format!("writeset era {}", self.era),
            Origin::Current => format!("current writeset (era {})", self.era),
        }
    }

    pub fn bits<'a>(&self, src: &'a BlockSource) -> BitsetView<'a> {
        BitsetView::read(
            src,
            &self.name(),
            self.writeset.root,
            self.writeset.nr_bits as u64,
        )
    }
}

/// The superblock a tool reads and the writesets it names.
pub struct EraState {
    /// The live superblock.
    pub live: Superblock,
    /// The superblock whose roots are read: the live one or the snapshot.
    pub sb: Superblock,
    pub side: Side,
    /// Archived writesets in ascending era, then the open current
    /// writeset (live side only, when one is open).
    pub writesets: Vec<EraWriteset>,
    /// Problems met reading the writeset tree (lenient reads only).
    pub problems: Vec<String>,
}

/// The live superblock, or an error in the reference tools' words.
pub fn live_superblock(src: &BlockSource) -> Result<Superblock> {
    Superblock::read(src, SUPERBLOCK_LOCATION).map_err(|e| anyhow!("{}", bad_superblock(src, &e)))
}

/// The writeset tree's (era, writeset) entries and the problems met.
pub type TreeRead = (Vec<(u32, Writeset)>, Vec<String>);

/// The writeset tree's entries: strictly (the first damaged node or bad
/// key is an error) or leniently (what can be read; problems listed).
pub fn writeset_tree(src: &BlockSource, root: u64, strict: bool) -> Result<TreeRead> {
    let mut problems = Vec::new();
    let entries = if strict {
        try_read_entries(src, root, WRITESET_SIZE)
            .map_err(|(block, d)| anyhow!("writeset tree: node error at block {block}: {d}"))?
    } else {
        let all = read_entries(src, root, WRITESET_SIZE);
        if let Err((block, d)) = try_read_entries(src, root, WRITESET_SIZE) {
            problems.push(format!(
                "writeset tree: node error at block {block}: {d}; the eras below it are lost"
            ));
        }
        all
    };
    let mut out: Vec<(u32, Writeset)> = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let Ok(era) = u32::try_from(key) else {
            let m = format!("writeset tree: key {key} is not a 32-bit era");
            if strict {
                bail!("{m}");
            }
            problems.push(m);
            continue;
        };
        if out.last().is_some_and(|(e, _)| *e >= era) {
            let m = format!("writeset tree: era {era} out of order or repeated");
            if strict {
                bail!("{m}");
            }
            problems.push(m);
            continue;
        }
        out.push((era, Writeset::parse(value)));
    }
    Ok((out, problems))
}

impl EraState {
    /// Reads the superblock(s) and the writeset tree of `side`. `strict`:
    /// any damage in the tree is an error.
    pub fn open(src: &BlockSource, side: Side, strict: bool) -> Result<EraState> {
        EraState::with_live(src, live_superblock(src)?, side, strict)
    }

    /// As `open`, with the live superblock already read.
    pub fn with_live(
        src: &BlockSource,
        live: Superblock,
        side: Side,
        strict: bool,
    ) -> Result<EraState> {
        let sb = match side {
            Side::Live => live.clone(),
            Side::Snapshot => {
                if live.metadata_snap == 0 {
                    bail!("no current metadata snap");
                }
                Superblock::read(src, live.metadata_snap).map_err(|e| {
                    anyhow!(
                        "metadata snapshot at block {}: bad checksum in superblock ({e})",
                        live.metadata_snap
                    )
                })?
            }
        };
        let (tree, problems) = writeset_tree(src, sb.writeset_tree_root, strict)?;
        let mut writesets: Vec<EraWriteset> = tree
            .into_iter()
            .map(|(era, writeset)| EraWriteset {
                era,
                writeset,
                origin: Origin::Tree,
            })
            .collect();
        // The snapshot's current writeset belongs to the live side (it is
        // the era begun by the snapshot, not referenced by it).
        if side == Side::Live && sb.current_writeset.root != 0 {
            writesets.push(EraWriteset {
                era: sb.current_era,
                writeset: sb.current_writeset,
                origin: Origin::Current,
            });
        }
        Ok(EraState {
            live,
            sb,
            side,
            writesets,
            problems,
        })
    }

    /// The era array of the superblock read, `nr_blocks` entries.
    pub fn era_array<'a>(&self, src: &'a BlockSource) -> ArrayView<'a> {
        ArrayView::read(
            src,
            "era array",
            self.sb.era_array_root,
            ERA_ENTRY_SIZE,
            Some(self.sb.nr_blocks as u64),
        )
    }
}

/// Era array entry `b`'s value, if readable.
#[inline]
pub fn era_of(array: &ArrayView<'_>, b: u64) -> Option<u32> {
    array
        .get(b)
        .map(|v| u32::from_le_bytes(v.try_into().unwrap()))
}
