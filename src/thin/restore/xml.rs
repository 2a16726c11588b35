//! Reading thin XML as a stream of items, one element at a time, with
//! every attribute checked: known, present when required, and a decimal
//! number of the right width. Positions are byte offsets; `locate` turns
//! one into a line and column for messages.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::io::xml::{err, take_front, Attrs, Cursor, Released};
pub use crate::io::xml::{locate, XmlDoc, XmlError, XmlResult};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuperblockAttrs {
    pub uuid: String,
    pub time: u32,
    pub transaction: u64,
    pub flags: u32,
    pub version: u32,
    pub data_block_size: u32,
    pub nr_data_blocks: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceAttrs {
    pub dev_id: u32,
    pub mapped_blocks: u64,
    pub transaction: u64,
    pub creation_time: u32,
    pub snap_time: u32,
}

/// `len` virtual blocks from `virt` map to data blocks from `data`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappingRun {
    pub virt: u64,
    pub data: u64,
    pub len: u64,
    pub time: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Superblock(SuperblockAttrs),
    EndSuperblock,
    Def(String),
    EndDef,
    Device(DeviceAttrs),
    EndDevice,
    Mapping(MappingRun),
    Ref(String),
}

/// The largest block number a mapping can hold (40 bits beside the
/// 24-bit time in a 64-bit value).
pub const MAX_DATA_BLOCK: u64 = (1 << 40) - 1;
pub const MAX_TIME: u32 = (1 << 24) - 1;

/// The items of a document held in memory, parsed without copying.
pub struct XmlItems<'a> {
    reader: Reader<&'a [u8]>,
    input: &'a [u8],
    /// Bytes read by the canonical-line reader, which the parser's
    /// positions leave out.
    skipped: u64,
    /// Whether canonical lines are read without the general parser.
    fast: bool,
    /// Whether the parser has returned an element (see `take_front`).
    started: bool,
}

impl<'a> XmlItems<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        let mut reader = Reader::from_reader(input);
        reader.config_mut().check_end_names = true;
        XmlItems {
            reader,
            input,
            skipped: 0,
            fast: true,
            started: false,
        }
    }

    /// Reads every element with the general parser.
    #[cfg(test)]
    fn general_only(mut self) -> Self {
        self.fast = false;
        self
    }

    /// How far into the input the reader has come.
    fn position(&self) -> u64 {
        self.skipped + self.reader.buffer_position()
    }

    /// The next item and the byte offset where it starts; None at the end.
    pub fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        match self.next_raw() {
            Ok(Some(Produced::Element(e))) => e.item(self.input).map(Some),
            Ok(Some(Produced::Item(i))) => i.map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The next item, with an element's attributes left unread: reading
    /// them is the larger part of parsing, and can be done elsewhere.
    fn next_raw(&mut self) -> XmlResult<Option<Produced>> {
        if self.fast && self.started {
            if let Some((item, at)) =
                take_front(&mut self.reader, &mut self.skipped, canonical_leaf)
            {
                return Ok(Some(Produced::Item(Ok((item, at)))));
            }
        }
        self.started = true;
        loop {
            let at = self.position();
            let event = match self.reader.read_event() {
                Ok(e) => e,
                Err(e) => {
                    return err(
                        self.skipped + self.reader.error_position(),
                        format!("parse error: {e}"),
                    )
                }
            };
            let item = match event {
                Event::Eof => return Ok(None),
                Event::Text(_) | Event::Comment(_) => continue,
                Event::Start(e) => return Ok(Some(self.element(&e, at, false))),
                Event::Empty(e) => return Ok(Some(self.element(&e, at, true))),
                Event::End(e) => match e.name().into_inner() {
                    "superblock" => Item::EndSuperblock,
                    "def" => Item::EndDef,
                    "device" => Item::EndDevice,
                    other => return err(at, format!("unknown end tag '</{other}>'")),
                },
                Event::Decl(_) => return err(at, "unsupported element: XML declaration"),
                Event::DocType(_) => return err(at, "unsupported element: DOCTYPE"),
                Event::PI(_) => return err(at, "unsupported element: processing instruction"),
                Event::CData(_) => return err(at, "unsupported element: CDATA section"),
                Event::GeneralRef(_) => return err(at, "unsupported element: entity reference"),
            };
            return Ok(Some(Produced::Item(Ok((item, at)))));
        }
    }

    /// Where an element's content lies in the input.
    fn element(&self, e: &BytesStart, at: u64, empty: bool) -> Produced {
        let content: &str = e;
        Produced::Element(RawElement {
            at,
            start: content.as_ptr() as usize - self.input.as_ptr() as usize,
            len: content.len(),
            name_len: e.name().into_inner().len(),
            empty,
        })
    }
}

/// A start or empty element found by the parser, its attributes not yet
/// read: a range of the input.
#[derive(Clone, Copy, Debug)]
pub struct RawElement {
    at: u64,
    start: usize,
    len: usize,
    name_len: usize,
    empty: bool,
}

impl RawElement {
    /// The element as an item: its attributes read and checked.
    fn item(&self, input: &[u8]) -> XmlResult<(Item, u64)> {
        let bytes = &input[self.start..self.start + self.len];
        // SAFETY: the parser handed these bytes out as a &str, so they
        // are valid UTF-8; the input has not changed since.
        let content = unsafe { std::str::from_utf8_unchecked(bytes) };
        let e = BytesStart::from_content(content, self.name_len);
        start_item(&e, self.at, self.empty).map(|i| (i, self.at))
    }
}

/// What a producer hands over: an item, or an element to finish.
pub enum Produced {
    Item(XmlResult<(Item, u64)>),
    Element(RawElement),
}

/// Anything that yields thin items in document order: a parser, or
/// metadata salvaged in memory (repair).
pub trait ItemSource {
    /// The next item and where it starts (a byte offset for XML); None
    /// at the end.
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>>;
}

impl ItemSource for XmlItems<'_> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        XmlItems::next_item(self)
    }
}

/// Items per message between the parsing thread and its consumer: large
/// enough that the channel costs nothing, small enough to stay in cache.
const BATCH: usize = 2048;
/// Batches parsed ahead of the consumer.
const BATCHES_AHEAD: usize = 8;

type Batch = Vec<Produced>;

/// The producing side of `ItemsAhead`: batches items for the consumer.
pub struct Emitter {
    tx: std::sync::mpsc::SyncSender<Batch>,
    batch: Batch,
    /// Batches sent and not yet taken by the consumer.
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Emitter {
    /// Queues an item (or a problem); false once the consumer has
    /// stopped, when the producer should return.
    pub fn emit(&mut self, item: XmlResult<(Item, u64)>) -> bool {
        self.push(Produced::Item(item))
    }

    fn push(&mut self, p: Produced) -> bool {
        self.batch.push(p);
        if self.batch.len() < BATCH {
            return true;
        }
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        self.in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tx.send(full).is_ok()
    }

    /// Batches the consumer has yet to take.
    fn backlog(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Emitter {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.batch));
        }
    }
}

/// Items produced on a second thread (parsed XML, or salvaged metadata),
/// so that producing them overlaps what is done with them. Create it
/// inside `std::thread::scope`; dropping it early stops the producer at
/// its next batch.
pub struct ItemsAhead<'a> {
    rx: std::sync::mpsc::Receiver<Batch>,
    in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    batch: std::vec::IntoIter<Produced>,
    /// The document raw elements lie in.
    input: &'a [u8],
}

impl<'a> ItemsAhead<'a> {
    pub fn spawn<'scope, 'env, F>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        produce: F,
    ) -> ItemsAhead<'a>
    where
        F: FnOnce(&mut Emitter) + Send + 'scope,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(BATCHES_AHEAD);
        let in_flight = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = in_flight.clone();
        scope.spawn(move || {
            let mut out = Emitter {
                tx,
                batch: Vec::with_capacity(BATCH),
                in_flight: counter,
            };
            produce(&mut out);
        });
        ItemsAhead {
            rx,
            in_flight,
            batch: Vec::new().into_iter(),
            input: &[],
        }
    }

    /// The items of `doc`, parsed ahead: the other thread finds the
    /// elements, this one reads their attributes, which splits the cost
    /// of parsing about evenly.
    pub fn parse<'scope>(
        scope: &'scope std::thread::Scope<'scope, 'a>,
        doc: &'a XmlDoc,
    ) -> ItemsAhead<'a> {
        let mut ahead = Self::spawn(scope, move |out| {
            let mut items = XmlItems::new(doc.bytes());
            let mut released = Released::default();
            loop {
                doc.release_behind(items.position(), &mut released);
                match items.next_raw() {
                    Ok(Some(p)) => {
                        // Share the work: while the consumer keeps up,
                        // it reads the attributes; once batches queue up,
                        // this thread does.
                        let p = match p {
                            Produced::Element(e) if out.backlog() > BATCHES_AHEAD / 2 => {
                                Produced::Item(e.item(doc.bytes()))
                            }
                            p => p,
                        };
                        let failed = matches!(p, Produced::Item(Err(_)));
                        if !out.push(p) || failed {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        out.emit(Err(e));
                        return;
                    }
                }
            }
        });
        ahead.input = doc.bytes();
        ahead
    }
}

impl ItemSource for ItemsAhead<'_> {
    fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        loop {
            match self.batch.next() {
                Some(Produced::Item(r)) => return r.map(Some),
                Some(Produced::Element(e)) => return e.item(self.input).map(Some),
                None => {}
            }
            match self.rx.recv() {
                Ok(b) => {
                    self.in_flight
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    self.batch = b.into_iter()
                }
                Err(_) => return Ok(None),
            }
        }
    }
}

/// A `<range_mapping>` or `<single_mapping>` exactly as thin_dump writes
/// it, read without the general parser; None for anything else,
/// including values the general reader would reject, so that it reads
/// them and says what is wrong.
fn canonical_leaf(cur: &mut Cursor) -> Option<Item> {
    let (virt, data, len) = if cur.eat(b"<range_mapping origin_begin=\"") {
        let virt = cur.decimal()?;
        if !cur.eat(b"\" data_begin=\"") {
            return None;
        }
        let data = cur.decimal()?;
        if !cur.eat(b"\" length=\"") {
            return None;
        }
        (virt, data, cur.decimal()?)
    } else if cur.eat(b"<single_mapping origin_block=\"") {
        let virt = cur.decimal()?;
        if !cur.eat(b"\" data_block=\"") {
            return None;
        }
        (virt, cur.decimal()?, 1)
    } else {
        return None;
    };
    if !cur.eat(b"\" time=\"") {
        return None;
    }
    let time = u32::try_from(cur.decimal()?).ok()?;
    if !cur.eat(b"\"/>") {
        return None;
    }
    mapping(0, virt, data, len, time).ok()
}

fn start_item(e: &BytesStart, at: u64, empty: bool) -> XmlResult<Item> {
    let name = e.name();
    let container = |tag: &str| -> XmlResult<()> {
        if empty {
            return err(at, format!("<{tag}/> must have an end tag"));
        }
        Ok(())
    };
    let leaf = |tag: &str| -> XmlResult<()> {
        if !empty {
            return err(
                at,
                format!("<{tag}> must be written self-closing (<{tag} .../>)"),
            );
        }
        Ok(())
    };
    match name.into_inner() {
        "superblock" => {
            container("superblock")?;
            let a = Attrs::read(
                e,
                "superblock",
                &[
                    "uuid",
                    "time",
                    "transaction",
                    "flags",
                    "version",
                    "data_block_size",
                    "nr_data_blocks",
                    "metadata_snap",
                ],
                at,
            )?;
            let _: Option<u64> = a.optional("metadata_snap", "64 bits")?;
            Ok(Item::Superblock(SuperblockAttrs {
                uuid: a.string("uuid")?,
                time: a.number("time", "32 bits")?,
                transaction: a.number("transaction", "64 bits")?,
                flags: a.optional("flags", "32 bits")?.unwrap_or(0),
                version: a.optional("version", "32 bits")?.unwrap_or(2),
                data_block_size: a.number("data_block_size", "32 bits")?,
                nr_data_blocks: a.number("nr_data_blocks", "64 bits")?,
            }))
        }
        "def" => {
            container("def")?;
            let a = Attrs::read(e, "def", &["name"], at)?;
            Ok(Item::Def(a.string("name")?))
        }
        "device" => {
            container("device")?;
            let a = Attrs::read(
                e,
                "device",
                &[
                    "dev_id",
                    "mapped_blocks",
                    "transaction",
                    "creation_time",
                    "snap_time",
                ],
                at,
            )?;
            Ok(Item::Device(DeviceAttrs {
                dev_id: a.number("dev_id", "32 bits")?,
                mapped_blocks: a.number("mapped_blocks", "64 bits")?,
                transaction: a.number("transaction", "64 bits")?,
                creation_time: a.number("creation_time", "32 bits")?,
                snap_time: a.number("snap_time", "32 bits")?,
            }))
        }
        "single_mapping" => {
            leaf("single_mapping")?;
            let a = Attrs::read(
                e,
                "single_mapping",
                &["origin_block", "data_block", "time"],
                at,
            )?;
            mapping(
                at,
                a.number("origin_block", "64 bits")?,
                a.number("data_block", "64 bits")?,
                1,
                a.number("time", "32 bits")?,
            )
        }
        "range_mapping" => {
            leaf("range_mapping")?;
            let a = Attrs::read(
                e,
                "range_mapping",
                &["origin_begin", "data_begin", "length", "time"],
                at,
            )?;
            mapping(
                at,
                a.number("origin_begin", "64 bits")?,
                a.number("data_begin", "64 bits")?,
                a.number("length", "64 bits")?,
                a.number("time", "32 bits")?,
            )
        }
        "ref" => {
            leaf("ref")?;
            let a = Attrs::read(e, "ref", &["name"], at)?;
            Ok(Item::Ref(a.string("name")?))
        }
        other => {
            let kind = if empty {
                "unknown empty element"
            } else {
                "unknown start tag"
            };
            err(at, format!("{kind} '<{other}>'"))
        }
    }
}

fn mapping(at: u64, virt: u64, data: u64, len: u64, time: u32) -> XmlResult<Item> {
    if len == 0 {
        return err(at, "a range_mapping of length 0");
    }
    if virt.checked_add(len).is_none() {
        return err(
            at,
            format!("virtual blocks {virt} + {len} overflow 64 bits"),
        );
    }
    if data
        .checked_add(len - 1)
        .is_none_or(|last| last > MAX_DATA_BLOCK)
    {
        return err(
            at,
            format!("data blocks from {data} (length {len}) exceed the 40-bit limit of a mapping"),
        );
    }
    if time > MAX_TIME {
        return err(
            at,
            format!("time {time} exceeds the 24-bit limit of a mapping"),
        );
    }
    Ok(Item::Mapping(MappingRun {
        virt,
        data,
        len,
        time,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::xml::{assert_read_alike, assert_short_way_took, two_way_reader};

    fn items(text: &str) -> XmlResult<Vec<Item>> {
        let mut r = XmlItems::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some((i, _)) = r.next_item()? {
            out.push(i);
        }
        Ok(out)
    }

    #[test]
    fn reads_a_small_pool() {
        let got = items(
            "<superblock uuid=\"\" time=\"1\" transaction=\"2\" data_block_size=\"128\" nr_data_blocks=\"100\">\n\
             <!-- a comment -->\n\
             <device dev_id=\"3\" mapped_blocks=\"2\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n\
             <range_mapping origin_begin=\"0\" data_begin=\"5\" length=\"2\" time=\"0\"/>\n\
             </device></superblock>",
        )
        .unwrap();
        assert_eq!(got.len(), 5);
        assert_eq!(
            got[2],
            Item::Mapping(MappingRun {
                virt: 0,
                data: 5,
                len: 2,
                time: 0
            })
        );
    }

    const POOL: &str = "<superblock uuid=\"\" time=\"1\" transaction=\"2\" version=\"2\" data_block_size=\"128\" nr_data_blocks=\"100\">
  <def name=\"1\">
    <range_mapping origin_begin=\"0\" data_begin=\"5\" length=\"2\" time=\"0\"/>
    <single_mapping origin_block=\"9\" data_block=\"20\" time=\"1\"/>
  </def>
  <device dev_id=\"3\" mapped_blocks=\"4\" transaction=\"0\" creation_time=\"0\" snap_time=\"1\">
    <ref name=\"1\"/>
    <single_mapping origin_block=\"12\" data_block=\"30\" time=\"1\"/>
  </device>
</superblock>
";

    two_way_reader!(XmlItems, Item);

    #[test]
    fn canonical_mappings_read_as_the_general_parser_reads_them() {
        assert_eq!(assert_read_alike::<XmlItems>(POOL), 10);
        assert_short_way_took::<XmlItems>(POOL, |l| l.contains("_mapping "));
        // Forms the short way passes to the general one, and errors
        // after elements it read: same items, same places, same words.
        for text in [
            POOL.replace("length=\"2\"", "length=\"0\""),
            POOL.replace("length=\"2\"", "length=\"2\"  "),
            POOL.replace("time=\"1\"/>\n  </def>", "time=\"16777216\"/>\n  </def>"),
            POOL.replace("time=\"1\"/>\n  </def>", "time=\"4294967296\"/>\n  </def>"),
            POOL.replace("data_block=\"20\"", "data_block=\"1099511627776\""),
            POOL.replace("data_block=\"30\"", "data_block=\"99999999999999999999\""),
            POOL.replace(
                "<single_mapping origin_block=\"9\"",
                "<single_mapping  origin_block=\"9\"",
            ),
            POOL.replace(
                "data_block=\"20\" time=\"1\"",
                "time=\"1\" data_block=\"20\"",
            ),
            POOL.replace("time=\"0\"/>", "time=\"0\"></range_mapping>"),
            POOL.replace("  <device", "  <!-- x --> junk <device"),
            POOL.replace("</def>", "</device>"),
            POOL.replace("</superblock>", ""),
            POOL[..POOL.find("data_block=\"30").unwrap() + 5].to_string(),
        ] {
            assert_read_alike::<XmlItems>(&text);
        }
    }

    #[test]
    fn rejects_what_is_not_thin_xml() {
        for (text, want) in [
            ("<?xml version=\"1.0\"?><superblock/>", "XML declaration"),
            ("<superblock uuid=\"\" colour=\"red\">", "unknown attribute 'colour' in <superblock>"),
            ("<superblock uuid=\"\" time=\"x\">", "not a decimal number"),
            ("<device dev_id=\"4294967296\" mapped_blocks=\"0\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">", "does not fit 32 bits"),
            ("<def/>", "must have an end tag"),
            ("<blob/>", "unknown empty element '<blob>'"),
            ("<single_mapping origin_block=\"1\" data_block=\"2\"/>", "missing attribute 'time'"),
        ] {
            let e = items(text).unwrap_err();
            assert!(e.message.contains(want), "{text}: {}", e.message);
        }
    }
}
