//! Cache XML (what cache_dump writes and cache_restore reads):
//!
//! ```text
//! <superblock uuid="" block_size="64" nr_cache_blocks="4096" policy="smq" hint_width="4">
//!   <mappings>
//!     <mapping cache_block="0" origin_block="6643" dirty="false"/>
//!   </mappings>
//!   <hints>
//!     <hint cache_block="0" data="AAAAAA=="/>
//!   </hints>
//!   <discards>
//!     <discard dbegin="0" dend="64"/>
//!   </discards>
//! </superblock>
//! ```
//!
//! Two-space indentation, attributes in this order, no XML declaration
//! and no newline after the final `</superblock>`; a section with no
//! items is a start tag line and an end tag line. `dirty` is `true` or
//! `false`; hint `data` is standard padded Base64 of the hint's bytes as
//! stored (a little-endian u32 for every policy the kernel has).
//! `<discards>` ranges are half-open, in cache-block units of the origin;
//! the dump never writes them (as the reference's), the restore accepts
//! them.
//!
//! The reader yields one item per element, every attribute checked
//! (known, present, a decimal number of the right width), positions as
//! byte offsets for `io::xml::locate`.

use std::io::Write;

use quick_xml::events::BytesStart;
use quick_xml::Reader;

use crate::io::xml::{
    err, next_markup, push_attr, push_text_attr, take_front, Attrs, Cursor, Markup, Released,
};
pub use crate::io::xml::{locate, XmlDoc, XmlError, XmlResult};

/// Most bytes a hint item carries (the kernel's largest hint is 4).
pub const MAX_HINT_BYTES: usize = 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuperblockAttrs {
    pub uuid: String,
    /// Cache block size in sectors.
    pub block_size: u32,
    pub nr_cache_blocks: u32,
    /// The policy name as given (no NUL padding).
    pub policy: Vec<u8>,
    /// Bytes per hint.
    pub hint_width: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub cache_block: u32,
    pub origin_block: u64,
    pub dirty: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hint {
    pub cache_block: u32,
    /// Bytes the data decodes to (may exceed `MAX_HINT_BYTES`, when only
    /// the first ones are kept).
    pub len: usize,
    pub bytes: [u8; MAX_HINT_BYTES],
}

impl Hint {
    pub fn data(&self) -> &[u8] {
        &self.bytes[..self.len.min(MAX_HINT_BYTES)]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Superblock(SuperblockAttrs),
    EndSuperblock,
    Mappings,
    EndMappings,
    Mapping(Mapping),
    Hints,
    EndHints,
    Hint(Hint),
    Discards,
    EndDiscards,
    /// Origin blocks `begin..end` are known to be discarded.
    Discard {
        begin: u64,
        end: u64,
    },
}

/// Origin block numbers are 48 bits in a mapping.
pub const MAX_ORIGIN_BLOCK: u64 = (1 << 48) - 1;

/// The items of a cache XML document held in memory.
pub struct CacheXmlItems<'a> {
    reader: Reader<&'a [u8]>,
    /// The mapped document, whose pages behind the parser are let go.
    doc: Option<&'a XmlDoc>,
    released: Released,
    /// Bytes read by `canonical_leaf` past the general parser, which
    /// does not count them in its own position.
    skipped: u64,
    /// Whether mappings and hints in their canonical form are read
    /// without the general parser (off only to test that both ways
    /// agree).
    fast: bool,
    started: bool,
}

impl<'a> CacheXmlItems<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        let mut reader = Reader::from_reader(input);
        reader.config_mut().check_end_names = true;
        CacheXmlItems {
            reader,
            doc: None,
            released: Released::default(),
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

    /// The items of a mapped document; the pages the parser has passed
    /// leave the resident set as it goes, so a large document costs no
    /// more memory than a buffered read of it.
    pub fn of_doc(doc: &'a XmlDoc) -> Self {
        CacheXmlItems {
            doc: Some(doc),
            ..Self::new(doc.bytes())
        }
    }

    /// The next item and the byte offset where it starts; None at the end.
    pub fn next_item(&mut self) -> XmlResult<Option<(Item, u64)>> {
        if let Some(doc) = self.doc {
            let at = self.skipped + self.reader.buffer_position();
            doc.release_behind(at, &mut self.released);
        }
        if self.fast && self.started {
            if let Some(found) = take_front(&mut self.reader, &mut self.skipped, canonical_leaf) {
                return Ok(Some(found));
            }
        }
        self.started = true;
        let Some((markup, at)) = next_markup(&mut self.reader).map_err(|mut e| {
            e.offset += self.skipped;
            e
        })?
        else {
            return Ok(None);
        };
        let at = at + self.skipped;
        let item = match markup {
            Markup::Start(e) => start_item(&e, at, false)?,
            Markup::Empty(e) => start_item(&e, at, true)?,
            Markup::End(e) => match e.name().into_inner() {
                "superblock" => Item::EndSuperblock,
                "mappings" => Item::EndMappings,
                "hints" => Item::EndHints,
                "discards" => Item::EndDiscards,
                other => return err(at, format!("unknown end tag '</{other}>'")),
            },
        };
        Ok(Some((item, at)))
    }
}

/// A `<mapping>` or `<hint>` exactly as cache_dump writes it, read
/// without the general parser; None for anything else, including values
/// the general reader would reject, so that it reads them and says what
/// is wrong.
fn canonical_leaf(cur: &mut Cursor) -> Option<Item> {
    if cur.eat(b"<mapping cache_block=\"") {
        let cache_block = u32::try_from(cur.decimal()?).ok()?;
        if !cur.eat(b"\" origin_block=\"") {
            return None;
        }
        let origin_block = cur.decimal()?;
        if origin_block > MAX_ORIGIN_BLOCK || !cur.eat(b"\" dirty=\"") {
            return None;
        }
        let dirty = cur.boolean()?;
        cur.eat(b"\"/>").then_some(Item::Mapping(Mapping {
            cache_block,
            origin_block,
            dirty,
        }))
    } else if cur.eat(b"<hint cache_block=\"") {
        let cache_block = u32::try_from(cur.decimal()?).ok()?;
        if !cur.eat(b"\" data=\"") {
            return None;
        }
        let mut bytes = [0u8; MAX_HINT_BYTES];
        let len = base64_decode(cur.until_quote()?, &mut bytes)?;
        cur.eat(b"\"/>").then_some(Item::Hint(Hint {
            cache_block,
            len,
            bytes,
        }))
    } else {
        None
    }
}

fn start_item(e: &BytesStart, at: u64, empty: bool) -> XmlResult<Item> {
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
    let no_attributes =
        |tag: &'static str| -> XmlResult<()> { Attrs::read(e, tag, &[], at).map(|_| ()) };
    match e.name().into_inner() {
        "superblock" => {
            container("superblock")?;
            let a = Attrs::read(
                e,
                "superblock",
                &[
                    "uuid",
                    "block_size",
                    "nr_cache_blocks",
                    "policy",
                    "hint_width",
                ],
                at,
            )?;
            let policy = a.string("policy")?;
            let policy = match quick_xml::escape::unescape(&policy) {
                Ok(p) => p.into_owned().into_bytes(),
                Err(e) => return err(at, format!("attribute 'policy' of <superblock>: {e}")),
            };
            Ok(Item::Superblock(SuperblockAttrs {
                uuid: a.string("uuid")?,
                block_size: a.number("block_size", "32 bits")?,
                nr_cache_blocks: a.number("nr_cache_blocks", "32 bits")?,
                policy,
                hint_width: a.number("hint_width", "32 bits")?,
            }))
        }
        "mappings" => {
            container("mappings")?;
            no_attributes("mappings")?;
            Ok(Item::Mappings)
        }
        "hints" => {
            container("hints")?;
            no_attributes("hints")?;
            Ok(Item::Hints)
        }
        "discards" => {
            container("discards")?;
            no_attributes("discards")?;
            Ok(Item::Discards)
        }
        "mapping" => {
            leaf("mapping")?;
            let a = Attrs::read(e, "mapping", &["cache_block", "origin_block", "dirty"], at)?;
            let cache_block = a.number("cache_block", "32 bits")?;
            let origin_block: u64 = a.number("origin_block", "64 bits")?;
            if origin_block > MAX_ORIGIN_BLOCK {
                return err(
                    at,
                    format!(
                        "origin block {origin_block} of cache block {cache_block} exceeds the \
                         48-bit limit of a mapping"
                    ),
                );
            }
            let dirty = match a.raw("dirty") {
                Some("true") => true,
                Some("false") => false,
                Some(other) => {
                    return err(
                        at,
                        format!(
                        "attribute 'dirty' of <mapping> must be 'true' or 'false', not '{other}'"
                    ),
                    )
                }
                None => return err(at, "missing attribute 'dirty' in <mapping>"),
            };
            Ok(Item::Mapping(Mapping {
                cache_block,
                origin_block,
                dirty,
            }))
        }
        "hint" => {
            leaf("hint")?;
            let a = Attrs::read(e, "hint", &["cache_block", "data"], at)?;
            let cache_block = a.number("cache_block", "32 bits")?;
            let Some(text) = a.raw("data") else {
                return err(at, "missing attribute 'data' in <hint>");
            };
            let mut bytes = [0u8; MAX_HINT_BYTES];
            let Some(len) = base64_decode(text.as_bytes(), &mut bytes) else {
                return err(
                    at,
                    format!(
                        "hint of cache block {cache_block}: data '{text}' is not padded Base64"
                    ),
                );
            };
            Ok(Item::Hint(Hint {
                cache_block,
                len,
                bytes,
            }))
        }
        "discard" => {
            leaf("discard")?;
            let a = Attrs::read(e, "discard", &["dbegin", "dend"], at)?;
            let begin: u64 = a.number("dbegin", "64 bits")?;
            let end: u64 = a.number("dend", "64 bits")?;
            if begin >= end {
                return err(
                    at,
                    format!("an empty or reversed discard range {begin}..{end}"),
                );
            }
            Ok(Item::Discard { begin, end })
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

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends the standard, padded Base64 form of `data`.
pub fn base64_encode(data: &[u8], out: &mut Vec<u8>) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let sextets = [n >> 18, n >> 12, n >> 6, n];
        for (i, s) in sextets.iter().enumerate() {
            if i <= chunk.len() {
                out.push(BASE64[(s & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes standard, padded Base64 into `out`, returning the decoded
/// length (which may be more than `out` holds: the bytes past its end are
/// checked but dropped). None if `text` is not padded Base64, or has
/// non-zero bits past its last byte.
pub fn base64_decode(text: &[u8], out: &mut [u8]) -> Option<usize> {
    if !text.len().is_multiple_of(4) {
        return None;
    }
    let mut len = 0;
    let quads = text.len() / 4;
    for (q, quad) in text.chunks(4).enumerate() {
        let last = q + 1 == quads;
        let pad = if last {
            quad.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = n << 6 | sextet(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        let keep = 3 - pad;
        // The bits a padded quad leaves over must be zero (canonical).
        if bytes[keep..].iter().any(|&b| b != 0) {
            return None;
        }
        for &b in &bytes[..keep] {
            if len < out.len() {
                out[len] = b;
            }
            len += 1;
        }
    }
    Some(len)
}

/// Writes cache XML as the reference's cache_dump lays it out, buffered
/// in large writes.
pub struct XmlWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    /// The buffer is written out once it holds this many bytes.
    flush_at: usize,
}

const FLUSH_AT: usize = 1 << 16;
const PART_FLUSH_AT: usize = 4096;

impl<W: Write> XmlWriter<W> {
    pub fn new(out: W) -> Self {
        XmlWriter {
            out,
            buf: Vec::with_capacity(FLUSH_AT + 256),
            flush_at: FLUSH_AT,
        }
    }

    /// A writer of a part of the document into `out`, buffering at most
    /// a line or two in `buf` (emptied first; `into_parts` gives both
    /// back for reuse): more would only be copied twice.
    pub fn part_writer(out: W, mut buf: Vec<u8>) -> Self {
        buf.clear();
        XmlWriter {
            out,
            buf,
            flush_at: PART_FLUSH_AT,
        }
    }

    #[inline]
    fn spill(&mut self) -> std::io::Result<()> {
        if self.buf.len() >= self.flush_at {
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    pub fn superblock(&mut self, sb: &SuperblockAttrs) -> std::io::Result<()> {
        let b = &mut self.buf;
        b.extend_from_slice(b"<superblock");
        push_text_attr(b, "uuid", sb.uuid.as_bytes());
        push_attr(b, "block_size", sb.block_size as u64);
        push_attr(b, "nr_cache_blocks", sb.nr_cache_blocks as u64);
        push_text_attr(b, "policy", &sb.policy);
        push_attr(b, "hint_width", sb.hint_width as u64);
        b.extend_from_slice(b">\n");
        self.spill()
    }

    fn line(&mut self, text: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(text);
        self.spill()
    }

    pub fn begin_mappings(&mut self) -> std::io::Result<()> {
        self.line(b"  <mappings>\n")
    }

    pub fn end_mappings(&mut self) -> std::io::Result<()> {
        self.line(b"  </mappings>\n")
    }

    #[inline]
    pub fn mapping(&mut self, m: &Mapping) -> std::io::Result<()> {
        let b = &mut self.buf;
        b.extend_from_slice(b"    <mapping");
        push_attr(b, "cache_block", m.cache_block as u64);
        push_attr(b, "origin_block", m.origin_block);
        b.extend_from_slice(if m.dirty {
            b" dirty=\"true\"/>\n"
        } else {
            b" dirty=\"false\"/>\n"
        });
        self.spill()
    }

    pub fn begin_hints(&mut self) -> std::io::Result<()> {
        self.line(b"  <hints>\n")
    }

    pub fn end_hints(&mut self) -> std::io::Result<()> {
        self.line(b"  </hints>\n")
    }

    #[inline]
    pub fn hint(&mut self, cache_block: u32, data: &[u8]) -> std::io::Result<()> {
        let b = &mut self.buf;
        b.extend_from_slice(b"    <hint");
        push_attr(b, "cache_block", cache_block as u64);
        b.extend_from_slice(b" data=\"");
        base64_encode(data, b);
        b.extend_from_slice(b"\"/>\n");
        self.spill()
    }

    pub fn begin_discards(&mut self) -> std::io::Result<()> {
        self.line(b"  <discards>\n")
    }

    pub fn end_discards(&mut self) -> std::io::Result<()> {
        self.line(b"  </discards>\n")
    }

    pub fn discard(&mut self, begin: u64, end: u64) -> std::io::Result<()> {
        let b = &mut self.buf;
        b.extend_from_slice(b"    <discard");
        push_attr(b, "dbegin", begin);
        push_attr(b, "dend", end);
        b.extend_from_slice(b"/>\n");
        self.spill()
    }

    /// Lines another writer formatted (a part of the document made in
    /// parallel), written in their place.
    pub fn lines(&mut self, text: &[u8]) -> std::io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.write_all(text)
    }

    /// Everything buffered, without `</superblock>`: the output of a
    /// writer that formats a part of the document.
    pub fn part(self) -> std::io::Result<W> {
        self.into_parts().map(|(out, _)| out)
    }

    /// As `part`, with the (emptied) buffer back for reuse.
    pub fn into_parts(mut self) -> std::io::Result<(W, Vec<u8>)> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok((self.out, self.buf))
    }

    /// Writes `</superblock>` and everything buffered; returns the output
    /// (not flushed).
    pub fn finish(mut self) -> std::io::Result<W> {
        self.buf.extend_from_slice(b"</superblock>");
        self.out.write_all(&self.buf)?;
        Ok(self.out)
    }

    /// Writes one item (for tests, and writers that hold items).
    pub fn item(&mut self, item: &Item) -> std::io::Result<()> {
        match item {
            Item::Superblock(sb) => self.superblock(sb),
            Item::EndSuperblock => Ok(()),
            Item::Mappings => self.begin_mappings(),
            Item::EndMappings => self.end_mappings(),
            Item::Mapping(m) => self.mapping(m),
            Item::Hints => self.begin_hints(),
            Item::EndHints => self.end_hints(),
            Item::Hint(h) => self.hint(h.cache_block, h.data()),
            Item::Discards => self.begin_discards(),
            Item::EndDiscards => self.end_discards(),
            Item::Discard { begin, end } => self.discard(*begin, *end),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::xml::{assert_read_alike, assert_short_way_took, two_way_reader};

    fn items(text: &str) -> XmlResult<Vec<Item>> {
        let mut r = CacheXmlItems::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some((i, _)) = r.next_item()? {
            out.push(i);
        }
        Ok(out)
    }

    const SMALL: &str = "<superblock uuid=\"\" block_size=\"128\" nr_cache_blocks=\"1100\" policy=\"smq\" hint_width=\"4\">\n\
      \x20 <mappings>\n\
      \x20   <mapping cache_block=\"0\" origin_block=\"100\" dirty=\"false\"/>\n\
      \x20   <mapping cache_block=\"1\" origin_block=\"7\" dirty=\"true\"/>\n\
      \x20 </mappings>\n\
      \x20 <hints>\n\
      \x20   <hint cache_block=\"0\" data=\"AQAAAA==\"/>\n\
      \x20   <hint cache_block=\"1\" data=\"PwAAAA==\"/>\n\
      \x20 </hints>\n\
      \x20 <discards>\n\
      \x20   <discard dbegin=\"5\" dend=\"9\"/>\n\
      \x20 </discards>\n\
      </superblock>";

    two_way_reader!(CacheXmlItems, Item);

    #[test]
    fn canonical_elements_read_as_the_general_parser_reads_them() {
        assert_eq!(assert_read_alike::<CacheXmlItems>(SMALL), 13);
        // The two mappings and two hints.
        assert_short_way_took::<CacheXmlItems>(SMALL, |l| {
            l.contains("<mapping ") || l.contains("<hint ")
        });
        // Forms the short way passes to the general one, and errors
        // after elements it read: same items, same places, same words.
        for text in [
            SMALL.replace("dirty=\"true\"", "dirty=\"yes\""),
            SMALL.replace("origin_block=\"7\"", "origin_block=\"7\"  "),
            SMALL.replace("<mapping cache_block=\"1\"", "<mapping  cache_block=\"1\""),
            SMALL.replace("data=\"PwAAAA==\"", "data=\"PwAAAA\""),
            SMALL.replace("cache_block=\"1\"", "cache_block=\"99999999999\""),
            SMALL.replace("origin_block=\"7\"", "origin_block=\"281474976710656\""),
            SMALL.replace(
                "\"/>\n      </mappings>",
                "\"></mapping>\n      </mappings>",
            ),
            SMALL.replace("</hints>", "</mappings>"),
            SMALL.replace("  <hints>", "  <!-- x --> junk <hints>"),
            SMALL.replace("</superblock>", ""),
            SMALL[..SMALL.find("dirty=\"true").unwrap() + 3].to_string(),
        ] {
            assert_read_alike::<CacheXmlItems>(&text);
        }
    }

    #[test]
    fn reads_and_writes_back_byte_for_byte() {
        let got = items(SMALL).unwrap();
        assert_eq!(got.len(), 13);
        assert_eq!(
            got[0],
            Item::Superblock(SuperblockAttrs {
                uuid: String::new(),
                block_size: 128,
                nr_cache_blocks: 1100,
                policy: b"smq".to_vec(),
                hint_width: 4,
            })
        );
        assert_eq!(
            got[3],
            Item::Mapping(Mapping {
                cache_block: 1,
                origin_block: 7,
                dirty: true
            })
        );
        let Item::Hint(h) = &got[7] else {
            panic!("{:?}", got[7])
        };
        assert_eq!((h.cache_block, h.data()), (1, &[63u8, 0, 0, 0][..]));
        let mut w = XmlWriter::new(Vec::new());
        for i in &got {
            w.item(i).unwrap();
        }
        assert_eq!(String::from_utf8(w.finish().unwrap()).unwrap(), SMALL);
    }

    #[test]
    fn empty_sections_are_two_lines() {
        let mut w = XmlWriter::new(Vec::new());
        w.superblock(&SuperblockAttrs {
            policy: b"a\"<b".to_vec(),
            ..Default::default()
        })
        .unwrap();
        w.begin_mappings().unwrap();
        w.end_mappings().unwrap();
        let text = String::from_utf8(w.finish().unwrap()).unwrap();
        assert_eq!(
            text,
            "<superblock uuid=\"\" block_size=\"0\" nr_cache_blocks=\"0\" policy=\"a&quot;&lt;b\" hint_width=\"0\">\n\
             \x20 <mappings>\n  </mappings>\n</superblock>"
        );
        // The escaped policy name reads back as it was.
        let Item::Superblock(sb) = &items(&text).unwrap()[0] else {
            panic!()
        };
        assert_eq!(sb.policy, b"a\"<b");
    }

    #[test]
    fn base64_both_ways() {
        for data in [
            &b""[..],
            b"\x01",
            b"\x01\x02",
            b"\x01\x00\x00\x00",
            b"\xff\xfe\xfd\xfc\xfb",
        ] {
            let mut text = Vec::new();
            base64_encode(data, &mut text);
            let mut back = [0u8; 8];
            let n = base64_decode(&text, &mut back).unwrap();
            assert_eq!(&back[..n], data, "{}", String::from_utf8_lossy(&text));
        }
        let mut t = Vec::new();
        base64_encode(&[0, 0, 0, 0], &mut t);
        assert_eq!(t, b"AAAAAA==");
        let mut out = [0u8; 4];
        assert_eq!(base64_decode(b"AAAAAAAA", &mut out), Some(6));
        for bad in [
            &b"AAAAAA="[..],
            b"AAAA=AAA",
            b"A===",
            b"AB==",
            b"AAAAA!==",
            b"AAAAAB==",
        ] {
            assert_eq!(
                base64_decode(bad, &mut out),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn rejects_what_is_not_cache_xml() {
        for (text, want) in [
            ("<?xml version=\"1.0\"?>", "XML declaration"),
            ("<superblock uuid=\"\" colour=\"red\">", "unknown attribute 'colour' in <superblock>"),
            ("<superblock uuid=\"\" block_size=\"1\" nr_cache_blocks=\"4294967296\" policy=\"\" hint_width=\"4\">", "does not fit 32 bits"),
            ("<superblock uuid=\"\" block_size=\"64\" policy=\"smq\" hint_width=\"4\">", "missing attribute 'nr_cache_blocks'"),
            ("<mappings/>", "must have an end tag"),
            ("<mapping cache_block=\"1\" origin_block=\"2\" dirty=\"yes\"/>", "'true' or 'false'"),
            ("<mapping cache_block=\"1\" origin_block=\"281474976710656\" dirty=\"true\"/>", "48-bit limit"),
            ("<mapping cache_block=\"1\" origin_block=\"2\"/>", "missing attribute 'dirty'"),
            ("<mapping cache_block=\"1\" origin_block=\"2\" dirty=\"true\">", "self-closing"),
            ("<hint cache_block=\"1\" data=\"AAA\"/>", "not padded Base64"),
            ("<discard dbegin=\"4\" dend=\"4\"/>", "empty or reversed"),
            ("<hints x=\"1\">", "unknown attribute 'x' in <hints>"),
            ("<blob/>", "unknown empty element '<blob>'"),
            ("<superblock uuid=\"\" block_size=\"64\" nr_cache_blocks=\"1\" policy=\"\" hint_width=\"4\"><blob></blob>", "unknown start tag"),
        ] {
            let e = items(text).unwrap_err();
            assert!(e.message.contains(want), "{text}: {}", e.message);
        }
    }
}
