//! Era metadata as values: what the XML says and what a restore writes.
//! Writesets are kept as runs of marked blocks and the era array as its
//! non-zero entries, so memory follows what is marked, not the origin's
//! size (an XML document naming two billion blocks costs nothing until
//! it lists them).

use std::io::Write;
use std::ops::Range;

use anyhow::Result;

use crate::io::xml::push_u64;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelWriteset {
    pub era: u32,
    pub nr_bits: u32,
    /// Marked blocks: ascending, disjoint, not adjacent, inside nr_bits.
    pub marked: Vec<Range<u64>>,
}

impl ModelWriteset {
    /// Marks `r` (any order): call `normalise` when done.
    pub fn mark(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        match self.marked.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => self.marked.push(r),
        }
    }

    /// Sorts and merges the runs.
    pub fn normalise(&mut self) {
        if self.marked.windows(2).all(|w| w[0].end < w[1].start) {
            return;
        }
        self.marked.sort_by_key(|r| r.start);
        let mut out: Vec<Range<u64>> = Vec::with_capacity(self.marked.len());
        for r in self.marked.drain(..) {
            match out.last_mut() {
                Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
                _ => out.push(r),
            }
        }
        self.marked = out;
    }

    pub fn nr_marked(&self) -> u64 {
        self.marked.iter().map(|r| r.end - r.start).sum()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EraModel {
    pub block_size: u32,
    pub nr_blocks: u32,
    pub current_era: u32,
    /// Ascending, distinct eras.
    pub writesets: Vec<ModelWriteset>,
    /// Non-zero era array entries (block, era), ascending blocks.
    pub eras: Vec<(u32, u32)>,
}

/// Gathers XML in a buffer and hands it to the writer in large pieces.
struct Out<'w> {
    buf: Vec<u8>,
    w: &'w mut dyn Write,
}

impl Out<'_> {
    #[inline]
    fn room(&mut self) -> Result<()> {
        if self.buf.len() >= 1 << 20 {
            self.w.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        self.w.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
}

impl EraModel {
    /// Era array entry `b`'s value at cursor `i` into `eras` (advanced).
    #[inline]
    fn era_at(&self, i: &mut usize, b: u64) -> u32 {
        while *i < self.eras.len() && (self.eras[*i].0 as u64) < b {
            *i += 1;
        }
        match self.eras.get(*i) {
            Some(&(blk, era)) if blk as u64 == b => era,
            _ => 0,
        }
    }

    fn superblock_start(&self, o: &mut Out<'_>) {
        o.buf
            .extend_from_slice(b"<superblock uuid=\"\" block_size=\"");
        push_u64(&mut o.buf, self.block_size as u64);
        o.buf.extend_from_slice(b"\" nr_blocks=\"");
        push_u64(&mut o.buf, self.nr_blocks as u64);
        o.buf.extend_from_slice(b"\" current_era=\"");
        push_u64(&mut o.buf, self.current_era as u64);
        o.buf.extend_from_slice(b"\">\n");
    }

    fn era_array(&self, o: &mut Out<'_>, era_of: &mut dyn FnMut(u64) -> u32) -> Result<()> {
        o.buf.extend_from_slice(b"  <era_array>\n");
        for b in 0..self.nr_blocks as u64 {
            o.buf.extend_from_slice(b"    <era block=\"");
            push_u64(&mut o.buf, b);
            o.buf.extend_from_slice(b"\" era=\"");
            push_u64(&mut o.buf, era_of(b) as u64);
            o.buf.extend_from_slice(b"\"/>\n");
            o.room()?;
        }
        o.buf.extend_from_slice(b"  </era_array>\n");
        Ok(())
    }

    /// era_dump's XML: every writeset with one `<bit>` per bit, then the
    /// era array; no newline after the last tag.
    pub fn write_xml(&self, w: &mut dyn Write) -> Result<()> {
        let mut o = Out {
            buf: Vec::with_capacity(1 << 21),
            w,
        };
        self.superblock_start(&mut o);
        for ws in &self.writesets {
            o.buf.extend_from_slice(b"  <writeset era=\"");
            push_u64(&mut o.buf, ws.era as u64);
            o.buf.extend_from_slice(b"\" nr_bits=\"");
            push_u64(&mut o.buf, ws.nr_bits as u64);
            o.buf.extend_from_slice(b"\">\n");
            let mut runs = ws.marked.iter().peekable();
            for b in 0..ws.nr_bits as u64 {
                while runs.next_if(|r| r.end <= b).is_some() {}
                let set = runs.peek().is_some_and(|r| r.start <= b);
                o.buf.extend_from_slice(b"    <bit block=\"");
                push_u64(&mut o.buf, b);
                o.buf.extend_from_slice(if set {
                    b"\" value=\"true\"/>\n"
                } else {
                    b"\" value=\"false\"/>\n"
                });
                o.room()?;
            }
            o.buf.extend_from_slice(b"  </writeset>\n");
        }
        let mut i = 0;
        self.era_array(&mut o, &mut |b| self.era_at(&mut i, b))?;
        o.buf.extend_from_slice(b"</superblock>");
        o.finish()
    }

    /// era_dump --logical: the era array with every block marked in a
    /// writeset given the newest such writeset's era (bit b of the
    /// writeset is origin block b: bit i of word k is block 64k + i).
    /// Without writesets, the plain dump.
    pub fn write_logical_xml(&self, w: &mut dyn Write) -> Result<()> {
        if self.writesets.is_empty() {
            return self.write_xml(w);
        }
        let mut o = Out {
            buf: Vec::with_capacity(1 << 21),
            w,
        };
        self.superblock_start(&mut o);
        let mut i = 0;
        let mut cursors: Vec<std::iter::Peekable<std::slice::Iter<'_, Range<u64>>>> = self
            .writesets
            .iter()
            .map(|ws| ws.marked.iter().peekable())
            .collect();
        let mut era_of = |b: u64| {
            let mut newest = None;
            for (ws, runs) in self.writesets.iter().zip(cursors.iter_mut()) {
                while runs.next_if(|r| r.end <= b).is_some() {}
                if runs.peek().is_some_and(|r| r.start <= b) {
                    newest = Some(ws.era);
                }
            }
            newest.unwrap_or_else(|| self.era_at(&mut i, b))
        };
        self.era_array(&mut o, &mut era_of)?;
        o.buf.extend_from_slice(b"</superblock>");
        o.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> EraModel {
        EraModel {
            block_size: 128,
            nr_blocks: 4,
            current_era: 2,
            writesets: vec![ModelWriteset {
                era: 2,
                nr_bits: 4,
                marked: std::iter::once(1..3).collect(),
            }],
            eras: vec![(0, 1), (3, 1)],
        }
    }

    #[test]
    fn plain_xml_lists_every_bit_and_entry() {
        let mut out = Vec::new();
        model().write_xml(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"4\" current_era=\"2\">\n  \
             <writeset era=\"2\" nr_bits=\"4\">\n    <bit block=\"0\" value=\"false\"/>\n    \
             <bit block=\"1\" value=\"true\"/>\n    <bit block=\"2\" value=\"true\"/>\n    \
             <bit block=\"3\" value=\"false\"/>\n  </writeset>\n  <era_array>\n    \
             <era block=\"0\" era=\"1\"/>\n    <era block=\"1\" era=\"0\"/>\n    \
             <era block=\"2\" era=\"0\"/>\n    <era block=\"3\" era=\"1\"/>\n  </era_array>\n\
             </superblock>"
        );
    }

    #[test]
    fn logical_xml_gives_marked_blocks_the_newest_era() {
        let mut m = model();
        m.writesets.insert(
            0,
            ModelWriteset {
                era: 1,
                nr_bits: 4,
                marked: std::iter::once(2..4).collect(),
            },
        );
        let mut out = Vec::new();
        m.write_logical_xml(&mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("<writeset"));
        let eras: Vec<&str> = s.lines().filter(|l| l.contains("<era block")).collect();
        assert_eq!(
            eras,
            [
                "    <era block=\"0\" era=\"1\"/>",
                "    <era block=\"1\" era=\"2\"/>",
                "    <era block=\"2\" era=\"2\"/>",
                "    <era block=\"3\" era=\"1\"/>",
            ]
        );
    }

    #[test]
    fn runs_marked_out_of_order_are_merged() {
        let mut ws = ModelWriteset::default();
        ws.mark(10..12);
        ws.mark(0..3);
        ws.mark(3..5);
        ws.mark(11..20);
        ws.normalise();
        assert_eq!(ws.marked, vec![0..5, 10..20]);
    }
}
