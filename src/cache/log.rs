//! The items of a cache XML document, recorded compactly by the
//! validating pass so that the building pass replays them instead of
//! parsing the XML a second time (as thin's restore does).
//!
//! A mapping or hint is a tag byte, the distance in bytes from the
//! previous item's position, the cache block as a zigzag difference from
//! the one after the previous, then the origin block (as a difference
//! from the one after the previous mapping's) and dirty flag, or the
//! hint's bytes: 4 to 8 bytes instead of the 50 to 70 of its XML. The
//! few other items are kept whole beside. Past a memory budget the log is
//! dropped and the building pass parses the XML again.

use crate::io::varint::{self, put, unzigzag, zigzag};

use super::restore::ItemSource;
use super::xml::{Hint, Item, Mapping, XmlError, XmlResult, MAX_HINT_BYTES};

/// Bytes a log may grow to before it is abandoned.
pub const DEFAULT_BUDGET: usize = 128 << 20;

const CLEAN: u8 = 0;
const DIRTY: u8 = 1;
const HINT: u8 = 2;
/// The next of the items kept whole.
const OTHER: u8 = 3;

#[derive(Default, Clone, Copy)]
struct Bases {
    at: u64,
    next_block: u64,
    next_origin: u64,
}

pub struct CacheLog {
    bytes: Vec<u8>,
    others: Vec<Item>,
    budget: usize,
    bases: Bases,
    abandoned: bool,
}

impl CacheLog {
    pub fn new(budget: usize) -> CacheLog {
        CacheLog {
            bytes: Vec::new(),
            others: Vec::new(),
            budget,
            bases: Bases::default(),
            abandoned: false,
        }
    }

    /// The log, unless it outgrew its budget.
    pub fn finish(self) -> Option<CacheLog> {
        (!self.abandoned).then_some(self)
    }

    pub fn record(&mut self, item: &Item, at: u64) {
        if self.abandoned {
            return;
        }
        if self.bytes.len() > self.budget {
            self.abandoned = true;
            self.bytes = Vec::new();
            self.others = Vec::new();
            return;
        }
        let out = &mut self.bytes;
        let b = &mut self.bases;
        let tag = match item {
            Item::Mapping(m) if m.dirty => DIRTY,
            Item::Mapping(_) => CLEAN,
            Item::Hint(_) => HINT,
            _ => OTHER,
        };
        out.push(tag);
        put(out, at.wrapping_sub(b.at));
        b.at = at;
        let mut block = |out: &mut Vec<u8>, cb: u32| {
            put(out, zigzag((cb as u64).wrapping_sub(b.next_block)));
            b.next_block = cb as u64 + 1;
        };
        match item {
            Item::Mapping(m) => {
                block(out, m.cache_block);
                put(out, zigzag(m.origin_block.wrapping_sub(b.next_origin)));
                b.next_origin = m.origin_block.wrapping_add(1);
            }
            Item::Hint(h) => {
                block(out, h.cache_block);
                put(out, h.len as u64);
                out.extend_from_slice(h.data());
            }
            other => self.others.push(other.clone()),
        }
    }

    pub fn replay(&self) -> CacheLogReplay<'_> {
        CacheLogReplay {
            log: self,
            pos: 0,
            other: 0,
            bases: Bases::default(),
        }
    }
}

/// The recorded items, in order.
pub struct CacheLogReplay<'a> {
    log: &'a CacheLog,
    pos: usize,
    other: usize,
    bases: Bases,
}

impl CacheLogReplay<'_> {
    fn get(&mut self) -> XmlResult<u64> {
        varint::get(&self.log.bytes, &mut self.pos).ok_or_else(|| self.corrupt())
    }

    fn block(&mut self) -> XmlResult<u32> {
        let cb = self.bases.next_block.wrapping_add(unzigzag(self.get()?));
        self.bases.next_block = cb.wrapping_add(1);
        u32::try_from(cb).map_err(|_| self.corrupt())
    }

    /// Only a bug could make a log unreadable: it is written and read by
    /// this module alone, in memory.
    fn corrupt(&self) -> XmlError {
        XmlError {
            offset: self.bases.at,
            message: format!("internal error: item log unreadable at byte {}", self.pos),
        }
    }
}

impl ItemSource for CacheLogReplay<'_> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        let Some(&tag) = self.log.bytes.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        let at = self.bases.at.wrapping_add(self.get()?);
        self.bases.at = at;
        let item = match tag {
            CLEAN | DIRTY => {
                let cache_block = self.block()?;
                let origin_block = self.bases.next_origin.wrapping_add(unzigzag(self.get()?));
                self.bases.next_origin = origin_block.wrapping_add(1);
                Item::Mapping(Mapping {
                    cache_block,
                    origin_block,
                    dirty: tag == DIRTY,
                })
            }
            HINT => {
                let cache_block = self.block()?;
                let len = self.get()? as usize;
                let kept = len.min(MAX_HINT_BYTES);
                let data = self
                    .log
                    .bytes
                    .get(self.pos..self.pos + kept)
                    .ok_or_else(|| self.corrupt())?;
                let mut bytes = [0u8; MAX_HINT_BYTES];
                bytes[..kept].copy_from_slice(data);
                self.pos += kept;
                Item::Hint(Hint {
                    cache_block,
                    len,
                    bytes,
                })
            }
            OTHER => {
                let item = self
                    .log
                    .others
                    .get(self.other)
                    .ok_or_else(|| self.corrupt())?;
                self.other += 1;
                item.clone()
            }
            _ => return Err(self.corrupt()),
        };
        Ok(Some((item, at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::xml::CacheXmlItems;

    const DOC: &str = "<superblock uuid=\"u\" block_size=\"128\" nr_cache_blocks=\"4096\" policy=\"smq\" hint_width=\"4\">\n\
      \x20 <mappings>\n\
      \x20   <mapping cache_block=\"3\" origin_block=\"281474976710655\" dirty=\"true\"/>\n\
      \x20   <mapping cache_block=\"4\" origin_block=\"0\" dirty=\"false\"/>\n\
      \x20   <mapping cache_block=\"4095\" origin_block=\"1\" dirty=\"false\"/>\n\
      \x20 </mappings>\n\
      \x20 <hints>\n\
      \x20   <hint cache_block=\"0\" data=\"AQIDBA==\"/>\n\
      \x20   <hint cache_block=\"4095\" data=\"AQIDBAUGBwgJCgsMDQ4PEBES\"/>\n\
      \x20 </hints>\n\
      \x20 <discards>\n\
      \x20   <discard dbegin=\"5\" dend=\"9\"/>\n\
      \x20 </discards>\n\
      </superblock>";

    fn parsed() -> Vec<(Item, u64)> {
        let mut r = CacheXmlItems::new(DOC.as_bytes());
        let mut out = Vec::new();
        while let Some(i) = r.next_item().unwrap() {
            out.push(i);
        }
        out
    }

    #[test]
    fn replays_what_it_recorded() {
        let items = parsed();
        let mut log = CacheLog::new(DEFAULT_BUDGET);
        for (i, at) in &items {
            log.record(i, *at);
        }
        let log = log.finish().unwrap();
        let mut replay = log.replay();
        let mut got = Vec::new();
        while let Some(i) = replay.next_item().unwrap() {
            got.push(i);
        }
        assert_eq!(got, items);
    }

    /// A run of mappings to consecutive origin blocks costs 4 bytes each.
    #[test]
    fn a_run_of_mappings_is_four_bytes_each() {
        let mut log = CacheLog::new(DEFAULT_BUDGET);
        for i in 0..1000u32 {
            let m = Mapping {
                cache_block: i,
                origin_block: 5000 + i as u64,
                dirty: i % 2 == 0,
            };
            log.record(&Item::Mapping(m), 60 * i as u64);
        }
        assert!(log.bytes.len() <= 4 * 1000 + 4, "{} bytes", log.bytes.len());
    }

    #[test]
    fn is_abandoned_past_its_budget() {
        let mut log = CacheLog::new(10);
        for (i, at) in parsed() {
            log.record(&i, at);
        }
        assert!(log.finish().is_none());
    }
}
