//! What every XML reader of the suite (thin, cache, era) shares: the
//! document mapped read-only, problems located by byte offset (and
//! turned into line and column for messages), and the attributes of one
//! element read against the names it allows, each checked to be a
//! decimal number of the right width where one is wanted.
//!
//! ```ignore
//! let a = Attrs::read(&element, "mapping", &["cache_block", "origin_block", "dirty"], at)?;
//! let cblock: u32 = a.number("cache_block", "32 bits")?;
//! ```

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use quick_xml::events::BytesStart;

/// A problem at a byte offset of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    pub offset: u64,
    pub message: String,
}

pub type XmlResult<T> = Result<T, XmlError>;

pub fn err<T>(offset: u64, message: impl Into<String>) -> XmlResult<T> {
    Err(XmlError {
        offset,
        message: message.into(),
    })
}

/// Bytes parsed between releases of the mapped pages behind a parser,
/// and how far behind it the release stays (elements queued for a
/// consumer lie in the last megabyte or two).
const RELEASE_EVERY: u64 = 32 << 20;
const RELEASE_LAG: u64 = 16 << 20;

/// How far a parser of an `XmlDoc` has let go of the pages behind it.
#[derive(Default)]
pub struct Released(u64);

/// An XML document's bytes: the file mapped read-only, or a copy
/// when it cannot be mapped (empty files, pipes).
pub struct XmlDoc {
    bytes: DocBytes,
}

enum DocBytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl XmlDoc {
    pub fn open(path: &Path) -> std::io::Result<XmlDoc> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_file() && meta.len() > 0 {
            // SAFETY: the mapping is read-only and private to this
            // process; a file truncated underneath would fault, as a
            // read of it would fail.
            if let Ok(map) = unsafe { memmap2::Mmap::map(&file) } {
                let _ = map.advise(memmap2::Advice::Sequential);
                return Ok(XmlDoc {
                    bytes: DocBytes::Mapped(map),
                });
            }
        }
        let mut v = Vec::new();
        BufReader::new(file).read_to_end(&mut v)?;
        Ok(XmlDoc {
            bytes: DocBytes::Owned(v),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            DocBytes::Mapped(m) => m,
            DocBytes::Owned(v) => v,
        }
    }

    /// Lets go of the mapped pages before byte `offset`, which the
    /// parser has passed: they stay in the page cache but leave this
    /// process's resident set, so a large document costs no more memory
    /// than a buffered read of it.
    pub fn release_before(&self, offset: usize) {
        const PAGE: usize = 4096;
        if let DocBytes::Mapped(m) = &self.bytes {
            let len = offset / PAGE * PAGE;
            if len > 0 {
                // SAFETY: the mapping is private and read-only: a page
                // dropped here reads back from the file, unchanged, if it
                // is touched again (the caller keeps well behind what is
                // still being read, so that is rare).
                let _ =
                    unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, 0, len) };
            }
        }
    }

    /// Called as a parser reaches byte `at`: now and then lets go of
    /// the pages well behind it (`release_before`).
    #[inline]
    pub fn release_behind(&self, at: u64, released: &mut Released) {
        if at >= released.0 + RELEASE_EVERY + RELEASE_LAG {
            released.0 = at - RELEASE_LAG;
            self.release_before(released.0 as usize);
        }
    }
}

/// Attribute values of one element, checked against what it allows.
/// Most attributes an element has.
const MAX_ATTRS: usize = 8;

pub struct Attrs<'a> {
    tag: &'static str,
    names: &'static [&'static str],
    /// Values by position in `names`, borrowed from the element.
    values: [Option<std::borrow::Cow<'a, str>>; MAX_ATTRS],
    at: u64,
}

impl<'a> Attrs<'a> {
    pub fn read(
        e: &'a BytesStart<'a>,
        tag: &'static str,
        names: &'static [&'static str],
        at: u64,
    ) -> XmlResult<Attrs<'a>> {
        debug_assert!(names.len() <= MAX_ATTRS);
        let mut values: [Option<std::borrow::Cow<'a, str>>; MAX_ATTRS] = Default::default();
        let mut attributes = e.attributes();
        // Duplicates are found below, by position; quick-xml's own check
        // costs a scan per attribute.
        attributes.with_checks(false);
        for attr in attributes {
            let attr = match attr {
                Ok(a) => a,
                Err(e) => return err(at, format!("parse error in <{tag}> attributes: {e}")),
            };
            let key = attr.key.into_inner();
            let Some(i) = names.iter().position(|n| *n == key) else {
                return err(at, format!("unknown attribute '{key}' in <{tag}>"));
            };
            if values[i].is_some() {
                return err(at, format!("attribute '{key}' given twice in <{tag}>"));
            }
            values[i] = Some(attr.value);
        }
        Ok(Attrs {
            tag,
            names,
            values,
            at,
        })
    }

    pub fn raw(&self, name: &str) -> Option<&str> {
        // Callers pass the same literals as `names`: the address usually
        // matches before any bytes need comparing.
        let i = self
            .names
            .iter()
            .position(|n| std::ptr::eq(*n, name))
            .or_else(|| self.names.iter().position(|n| *n == name))?;
        self.values[i].as_deref()
    }

    pub fn string(&self, name: &str) -> XmlResult<String> {
        match self.raw(name) {
            Some(v) => Ok(v.to_string()),
            None => err(
                self.at,
                format!("missing attribute '{name}' in <{}>", self.tag),
            ),
        }
    }

    pub fn number<T: TryFrom<u64>>(&self, name: &str, width: &str) -> XmlResult<T> {
        match self.raw(name) {
            Some(v) => self.parse(name, v, width),
            None => err(
                self.at,
                format!("missing attribute '{name}' in <{}>", self.tag),
            ),
        }
    }

    pub fn optional<T: TryFrom<u64>>(&self, name: &str, width: &str) -> XmlResult<Option<T>> {
        match self.raw(name) {
            None => Ok(None),
            Some(v) => self.parse(name, v, width).map(Some),
        }
    }

    pub fn parse<T: TryFrom<u64>>(&self, name: &str, v: &str, width: &str) -> XmlResult<T> {
        let Some(n) = decimal(v.as_bytes()) else {
            return err(
                self.at,
                format!(
                    "attribute '{name}' of <{}> is not a decimal number: '{v}'",
                    self.tag
                ),
            );
        };
        n.and_then(|n| T::try_from(n).ok()).map_or_else(
            || {
                err(
                    self.at,
                    format!(
                        "attribute '{name}' of <{}> does not fit {width}: '{v}'",
                        self.tag
                    ),
                )
            },
            Ok,
        )
    }
}

/// The value of ASCII decimal digits in one pass: None if `digits` is
/// not a decimal number, Some(None) if it does not fit 64 bits.
pub fn decimal(digits: &[u8]) -> Option<Option<u64>> {
    if digits.is_empty() {
        return None;
    }
    let mut n = Some(0u64);
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.and_then(|n| n.checked_mul(10)?.checked_add((c - b'0') as u64));
    }
    Some(n)
}

/// One piece of markup a reader of the suite's XML acts on: text and
/// comments are passed over, and everything the formats do not use (an
/// XML declaration, DOCTYPE, processing instructions, CDATA, entity
/// references) is an error at its offset.
pub enum Markup<'a> {
    Start(BytesStart<'a>),
    Empty(BytesStart<'a>),
    End(quick_xml::events::BytesEnd<'a>),
}

/// The next piece of markup of a document held in memory and the byte
/// offset where it starts; None at the end.
pub fn next_markup<'a>(
    reader: &mut quick_xml::Reader<&'a [u8]>,
) -> XmlResult<Option<(Markup<'a>, u64)>> {
    use quick_xml::events::Event;
    loop {
        let at = reader.buffer_position();
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => return err(reader.error_position(), format!("parse error: {e}")),
        };
        let m = match event {
            Event::Eof => return Ok(None),
            Event::Text(_) | Event::Comment(_) => continue,
            Event::Start(e) => Markup::Start(e),
            Event::Empty(e) => Markup::Empty(e),
            Event::End(e) => Markup::End(e),
            Event::Decl(_) => return err(at, "unsupported element: XML declaration"),
            Event::DocType(_) => return err(at, "unsupported element: DOCTYPE"),
            Event::PI(_) => return err(at, "unsupported element: processing instruction"),
            Event::CData(_) => return err(at, "unsupported element: CDATA section"),
            Event::GeneralRef(_) => return err(at, "unsupported element: entity reference"),
        };
        return Ok(Some((m, at)));
    }
}

/// Takes one element off the front of what `reader` has yet to read,
/// when `read` recognises it in the form the suite's own dumps write
/// (nearly every line of a large document): a reader's general parsing
/// costs several times more. Whitespace before the element is passed
/// over; nothing is taken when `read` returns None. Call it only between
/// elements, once the reader has returned one: the reader then stands
/// looking for the next '<', and whitespace and whole self-closing
/// elements taken from in front of it change nothing it expects.
/// `skipped` counts the bytes taken, which the reader's positions leave
/// out; the item comes with the offset of its '<'.
pub fn take_front<'a, T>(
    reader: &mut quick_xml::Reader<&'a [u8]>,
    skipped: &mut u64,
    read: impl FnOnce(&mut Cursor<'a>) -> Option<T>,
) -> Option<(T, u64)> {
    let rest: &'a [u8] = reader.get_ref();
    let lt = rest
        .iter()
        .position(|c| !matches!(c, b' ' | b'\n' | b'\t' | b'\r'))?;
    let mut cur = Cursor { s: rest, i: lt };
    let item = read(&mut cur)?;
    let at = *skipped + reader.buffer_position() + lt as u64;
    *reader.get_mut() = &rest[cur.i..];
    *skipped += cur.i as u64;
    Some((item, at))
}

/// A position in bytes being matched against literal text.
pub struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    /// Literals are arrays, so that the comparison is a few word loads
    /// rather than a call (it runs several times per line).
    #[inline]
    pub fn eat<const N: usize>(&mut self, lit: &[u8; N]) -> bool {
        let hit = self.s[self.i..].first_chunk::<N>() == Some(lit);
        if hit {
            self.i += N;
        }
        hit
    }

    /// Digits up to the closing quote (left unread), as a number that
    /// fits 64 bits.
    #[inline]
    pub fn decimal(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n = 0u64;
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'0'..=b'9' => n = n.checked_mul(10)?.checked_add((c - b'0') as u64)?,
                b'"' => break,
                _ => return None,
            }
            self.i += 1;
        }
        (self.i > start && self.s.get(self.i) == Some(&b'"')).then_some(n)
    }

    /// `true` or `false`.
    pub fn boolean(&mut self) -> Option<bool> {
        if self.eat(b"true") {
            Some(true)
        } else if self.eat(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// The bytes up to the next '"' (a short value), which is left unread.
    pub fn until_quote(&mut self) -> Option<&'a [u8]> {
        const LONGEST: usize = 64;
        let s: &'a [u8] = self.s;
        let rest = &s[self.i..s.len().min(self.i + LONGEST)];
        let n = rest.iter().position(|&c| c == b'"')?;
        let v = &s[self.i..self.i + n];
        self.i += n;
        Some(v)
    }
}

/// A reader with a canonical-line short way (`take_front`), for the
/// tests that hold it to what the general parser alone reads.
#[cfg(test)]
pub trait TwoWayReader<'a> {
    type Item: PartialEq + std::fmt::Debug;
    fn fast(input: &'a [u8]) -> Self;
    fn general_only(input: &'a [u8]) -> Self;
    fn next(&mut self) -> XmlResult<Option<(Self::Item, u64)>>;
    /// Bytes the short way has taken.
    fn skipped(&self) -> u64;
}

/// Implements `TwoWayReader` for a reader type with `new(input)`,
/// `general_only()`, `next_item()` and a `skipped` byte count, in the
/// tests of the module that defines it.
#[cfg(test)]
macro_rules! two_way_reader {
    ($reader:ident, $item:ty) => {
        impl<'a> $crate::io::xml::TwoWayReader<'a> for $reader<'a> {
            type Item = $item;
            fn fast(input: &'a [u8]) -> Self {
                $reader::new(input)
            }
            fn general_only(input: &'a [u8]) -> Self {
                $reader::new(input).general_only()
            }
            fn next(&mut self) -> XmlResult<Option<($item, u64)>> {
                self.next_item()
            }
            fn skipped(&self) -> u64 {
                self.skipped
            }
        }
    };
}
#[cfg(test)]
pub(crate) use two_way_reader;

/// Every item a reader yields, with its offset, or the first error.
#[cfg(test)]
fn collect<'a, R: TwoWayReader<'a>>(mut r: R) -> XmlResult<Vec<(R::Item, u64)>> {
    let mut out = Vec::new();
    while let Some(found) = r.next()? {
        out.push(found);
    }
    Ok(out)
}

/// Asserts that `text` reads alike both ways: the same items at the same
/// offsets, or the same error in the same words. Returns the number of
/// items (0 for an error).
#[cfg(test)]
pub fn assert_read_alike<'a, R: TwoWayReader<'a>>(text: &'a str) -> usize {
    let fast = collect(R::fast(text.as_bytes()));
    assert_eq!(fast, collect(R::general_only(text.as_bytes())), "{text}");
    fast.map_or(0, |items| items.len())
}

/// Asserts that the short way takes exactly the lines of `text` that
/// `canonical` picks, each with its newline and indent.
#[cfg(test)]
pub fn assert_short_way_took<'a, R: TwoWayReader<'a>>(
    text: &'a str,
    canonical: impl Fn(&str) -> bool,
) {
    let mut r = R::fast(text.as_bytes());
    while r.next().unwrap().is_some() {}
    let taken: usize = text
        .lines()
        .filter(|l| canonical(l))
        .map(|l| l.len() + 1)
        .sum();
    assert_eq!(r.skipped() as usize, taken, "{text}");
}

/// Appends the decimal digits of `v` (writers format hundreds of
/// millions of integers: no allocation, no formatting machinery).
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Appends ` name="v"` for a number.
#[inline]
pub fn push_attr(out: &mut Vec<u8>, name: &str, v: u64) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    push_u64(out, v);
    out.push(b'"');
}

/// Appends ` name="text"` with the text escaped for an attribute value;
/// bytes that are not UTF-8 are written as U+FFFD.
pub fn push_text_attr(out: &mut Vec<u8>, name: &str, text: &[u8]) {
    out.push(b' ');
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"=\"");
    let text = String::from_utf8_lossy(text);
    out.extend_from_slice(quick_xml::escape::escape(&*text).as_bytes());
    out.push(b'"');
}

/// Line and column (both from 1) of a byte offset in the file.
pub fn locate(path: &Path, offset: u64) -> (u64, u64) {
    let Ok(file) = File::open(path) else {
        return (0, 0);
    };
    let mut line = 1;
    let mut col = 1;
    let mut left = offset;
    let mut reader = BufReader::new(file.take(offset));
    let mut buf = [0u8; 1 << 16];
    while left > 0 {
        let n = match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &c in &buf[..n] {
            if c == b'\n' {
                line += 1;
                col = 1;
            } else {
                col += 1;
            }
        }
        left -= n as u64;
    }
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_digits_that_fit() {
        assert_eq!(decimal(b"0"), Some(Some(0)));
        assert_eq!(decimal(b"18446744073709551615"), Some(Some(u64::MAX)));
        assert_eq!(decimal(b"18446744073709551616"), Some(None));
        assert_eq!(decimal(b"99999999999999999999x"), None);
        assert_eq!(decimal(b""), None);
        assert_eq!(decimal(b"-1"), None);
        assert_eq!(decimal(b" 1"), None);
    }
}
