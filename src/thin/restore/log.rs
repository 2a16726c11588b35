//! The items of a thin XML document, recorded compactly by the
//! validating pass so that the building pass replays them instead of
//! parsing the XML a second time.
//!
//! Each item is a tag byte, the distance in bytes from the previous
//! item's position, then its fields as LEB128 varints; a mapping stores
//! its virtual and data blocks as zigzag differences from where the
//! previous mapping ended, so a typical run takes 6 to 10 bytes instead
//! of the 70 to 90 of its XML. Recording stops (and the log is dropped)
//! past a memory budget; the building pass then parses the XML again.

use crate::io::varint::{self, put, unzigzag, zigzag};

use super::xml::{DeviceAttrs, Item, ItemSource, MappingRun, SuperblockAttrs, XmlError, XmlResult};

/// Bytes a log may grow to before it is abandoned.
pub const DEFAULT_BUDGET: usize = 128 << 20;

const SUPERBLOCK: u8 = 0;
const END_SUPERBLOCK: u8 = 1;
const DEF: u8 = 2;
const END_DEF: u8 = 3;
const DEVICE: u8 = 4;
const END_DEVICE: u8 = 5;
const MAPPING: u8 = 6;
const REF: u8 = 7;

/// Where the previous mapping ended and the previous item began: the
/// bases the differences are taken from, kept the same way by the writer
/// and the reader.
#[derive(Default, Clone, Copy)]
struct Bases {
    at: u64,
    virt_end: u64,
    data_end: u64,
}

impl std::fmt::Debug for ItemLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ItemLog({} bytes)", self.bytes.len())
    }
}

pub struct ItemLog {
    bytes: Vec<u8>,
    budget: usize,
    bases: Bases,
    abandoned: bool,
}

impl ItemLog {
    pub fn new(budget: usize) -> ItemLog {
        ItemLog {
            bytes: Vec::new(),
            budget,
            bases: Bases::default(),
            abandoned: false,
        }
    }

    /// The log, unless it outgrew its budget.
    pub fn finish(self) -> Option<ItemLog> {
        (!self.abandoned).then_some(self)
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn record(&mut self, item: &Item, at: u64) {
        if self.abandoned {
            return;
        }
        if self.bytes.len() > self.budget {
            self.abandoned = true;
            self.bytes = Vec::new();
            return;
        }
        let out = &mut self.bytes;
        let tag = match item {
            Item::Superblock(_) => SUPERBLOCK,
            Item::EndSuperblock => END_SUPERBLOCK,
            Item::Def(_) => DEF,
            Item::EndDef => END_DEF,
            Item::Device(_) => DEVICE,
            Item::EndDevice => END_DEVICE,
            Item::Mapping(_) => MAPPING,
            Item::Ref(_) => REF,
        };
        out.push(tag);
        put(out, at.wrapping_sub(self.bases.at));
        self.bases.at = at;
        match item {
            Item::Superblock(s) => {
                put_str(out, &s.uuid);
                for v in [
                    s.time as u64,
                    s.transaction,
                    s.flags as u64,
                    s.version as u64,
                    s.data_block_size as u64,
                    s.nr_data_blocks,
                ] {
                    put(out, v);
                }
            }
            Item::Def(name) | Item::Ref(name) => put_str(out, name),
            Item::Device(d) => {
                for v in [
                    d.dev_id as u64,
                    d.mapped_blocks,
                    d.transaction,
                    d.creation_time as u64,
                    d.snap_time as u64,
                ] {
                    put(out, v);
                }
            }
            Item::Mapping(m) => {
                put(out, zigzag(m.virt.wrapping_sub(self.bases.virt_end)));
                put(out, zigzag(m.data.wrapping_sub(self.bases.data_end)));
                put(out, m.len);
                put(out, m.time as u64);
                self.bases.virt_end = m.virt.wrapping_add(m.len);
                self.bases.data_end = m.data.wrapping_add(m.len);
            }
            Item::EndSuperblock | Item::EndDef | Item::EndDevice => {}
        }
    }

    pub fn replay(&self) -> LogReplay<'_> {
        LogReplay {
            bytes: &self.bytes,
            pos: 0,
            bases: Bases::default(),
        }
    }
}

/// The recorded items, in order.
pub struct LogReplay<'a> {
    bytes: &'a [u8],
    pos: usize,
    bases: Bases,
}

impl LogReplay<'_> {
    fn get(&mut self) -> XmlResult<u64> {
        varint::get(self.bytes, &mut self.pos).ok_or_else(|| self.corrupt())
    }

    fn get_u32(&mut self) -> XmlResult<u32> {
        u32::try_from(self.get()?).map_err(|_| self.corrupt())
    }

    fn get_str(&mut self) -> XmlResult<String> {
        let len = self.get()? as usize;
        let end = self.pos.checked_add(len).ok_or_else(|| self.corrupt())?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or_else(|| self.corrupt())?;
        self.pos = end;
        String::from_utf8(s.to_vec()).map_err(|_| self.corrupt())
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

impl ItemSource for LogReplay<'_> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        let Some(&tag) = self.bytes.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        let at = self.bases.at.wrapping_add(self.get()?);
        self.bases.at = at;
        let item = match tag {
            SUPERBLOCK => Item::Superblock(SuperblockAttrs {
                uuid: self.get_str()?,
                time: self.get_u32()?,
                transaction: self.get()?,
                flags: self.get_u32()?,
                version: self.get_u32()?,
                data_block_size: self.get_u32()?,
                nr_data_blocks: self.get()?,
            }),
            END_SUPERBLOCK => Item::EndSuperblock,
            DEF => Item::Def(self.get_str()?),
            END_DEF => Item::EndDef,
            DEVICE => Item::Device(DeviceAttrs {
                dev_id: self.get_u32()?,
                mapped_blocks: self.get()?,
                transaction: self.get()?,
                creation_time: self.get_u32()?,
                snap_time: self.get_u32()?,
            }),
            END_DEVICE => Item::EndDevice,
            MAPPING => {
                let virt = self.bases.virt_end.wrapping_add(unzigzag(self.get()?));
                let data = self.bases.data_end.wrapping_add(unzigzag(self.get()?));
                let len = self.get()?;
                let time = self.get_u32()?;
                self.bases.virt_end = virt.wrapping_add(len);
                self.bases.data_end = data.wrapping_add(len);
                Item::Mapping(MappingRun {
                    virt,
                    data,
                    len,
                    time,
                })
            }
            REF => Item::Ref(self.get_str()?),
            _ => return Err(self.corrupt()),
        };
        Ok(Some((item, at)))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<(Item, u64)> {
        vec![
            (
                Item::Superblock(SuperblockAttrs {
                    uuid: "abc".into(),
                    time: 7,
                    transaction: u64::MAX,
                    flags: 1,
                    version: 2,
                    data_block_size: 128,
                    nr_data_blocks: 1 << 40,
                }),
                0,
            ),
            (Item::Def("d".into()), 120),
            (
                Item::Mapping(MappingRun {
                    virt: 5,
                    data: 1000,
                    len: 3,
                    time: 0,
                }),
                140,
            ),
            (Item::EndDef, 200),
            (
                Item::Device(DeviceAttrs {
                    dev_id: u32::MAX,
                    mapped_blocks: 3,
                    transaction: 0,
                    creation_time: 1,
                    snap_time: 2,
                }),
                210,
            ),
            (
                // data goes backwards: a negative difference
                Item::Mapping(MappingRun {
                    virt: 0,
                    data: 2,
                    len: 1,
                    time: (1 << 24) - 1,
                }),
                300,
            ),
            (Item::Ref("d".into()), 380),
            (
                Item::Mapping(MappingRun {
                    virt: u64::MAX - 1,
                    data: (1 << 40) - 1,
                    len: 1,
                    time: 3,
                }),
                400,
            ),
            (Item::EndDevice, 480),
            (Item::EndSuperblock, 490),
        ]
    }

    #[test]
    fn replays_what_it_recorded() {
        let mut log = ItemLog::new(DEFAULT_BUDGET);
        for (item, at) in sample() {
            log.record(&item, at);
        }
        let log = log.finish().unwrap();
        let mut replay = log.replay();
        let mut got = Vec::new();
        while let Some(i) = replay.next_item().unwrap() {
            got.push(i);
        }
        assert_eq!(got, sample());
    }

    #[test]
    fn is_abandoned_past_its_budget() {
        let mut log = ItemLog::new(16);
        for (item, at) in sample() {
            log.record(&item, at);
        }
        assert!(log.finish().is_none());
    }

    #[test]
    fn zigzag_round_trips() {
        for d in [0u64, 1, u64::MAX, 5u64.wrapping_neg(), 1 << 63, 12345] {
            assert_eq!(unzigzag(zigzag(d)), d);
        }
        assert_eq!(zigzag(1u64.wrapping_neg()), 1);
        assert_eq!(zigzag(1), 2);
    }
}
