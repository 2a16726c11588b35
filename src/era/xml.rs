//! Reading era XML (era_dump's output, or hand-written) into an
//! `EraModel`, validated in full: a restore touches its output only
//! after this has succeeded.
//!
//! ```text
//! superblock  uuid block_size nr_blocks current_era
//!   writeset  era nr_bits
//!     bit     block value          (value true/false; only true marks)
//!     marked  block_begin len      (a run of marked blocks)
//!   era_array
//!     era     block era
//! ```
//!
//! Rules: one superblock, first; writesets and the era array inside it;
//! bits and runs inside a writeset, below its nr_bits (a run may cross
//! any number of 64-bit words); eras of writesets distinct and not newer
//! than current_era; era-array blocks strictly increasing, below
//! nr_blocks, their eras not newer than current_era (blocks not listed
//! are era 0). Container elements may be written self-closing.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::io::xml::{err, take_front, Attrs, Released, XmlDoc, XmlResult};

use super::model::{EraModel, ModelWriteset};

#[derive(PartialEq, Eq)]
enum In {
    Nothing,
    Superblock,
    Writeset,
    EraArray,
    Ended,
}

struct Parser {
    model: Option<EraModel>,
    state: In,
    writeset: Option<ModelWriteset>,
    last_era_block: Option<u32>,
    seen_era_array: bool,
}

fn bool_value(a: &Attrs<'_>, at: u64) -> XmlResult<bool> {
    match a.raw("value") {
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => err(
            at,
            format!("<bit> value must be 'true' or 'false', not '{v}'"),
        ),
        None => err(at, "missing attribute 'value' in <bit>"),
    }
}

impl Parser {
    fn model(&mut self) -> &mut EraModel {
        self.model.as_mut().expect("inside the superblock")
    }

    fn start(&mut self, e: &BytesStart<'_>, at: u64, empty: bool) -> XmlResult<()> {
        let name = e.name().into_inner();
        match (name, &self.state) {
            ("superblock", In::Nothing) => {
                let a = Attrs::read(
                    e,
                    "superblock",
                    &["uuid", "block_size", "nr_blocks", "current_era"],
                    at,
                )?;
                a.string("uuid")?;
                let block_size: u32 = a.number("block_size", "32 bits")?;
                if block_size == 0 {
                    return err(at, "block_size must not be 0");
                }
                self.model = Some(EraModel {
                    block_size,
                    nr_blocks: a.number("nr_blocks", "32 bits")?,
                    current_era: a.number("current_era", "32 bits")?,
                    ..Default::default()
                });
                self.state = In::Superblock;
                if empty {
                    self.state = In::Ended;
                }
            }
            ("superblock", In::Ended) => return err(at, "content after </superblock>"),
            ("superblock", _) => return err(at, "duplicated superblock"),
            (_, In::Nothing) => {
                return err(
                    at,
                    "missing superblock: the document must start with <superblock>",
                )
            }
            (_, In::Ended) => return err(at, "content after </superblock>"),
            ("writeset", In::Superblock) => {
                let a = Attrs::read(e, "writeset", &["era", "nr_bits"], at)?;
                let era: u32 = a.number("era", "32 bits")?;
                let nr_bits: u32 = a.number("nr_bits", "32 bits")?;
                let m = self.model();
                if era > m.current_era {
                    return err(
                        at,
                        format!(
                            "writeset era {era} is newer than the current era {}",
                            m.current_era
                        ),
                    );
                }
                if m.writesets.iter().any(|w| w.era == era) {
                    return err(at, format!("writeset era {era} is given twice"));
                }
                self.writeset = Some(ModelWriteset {
                    era,
                    nr_bits,
                    marked: Vec::new(),
                });
                self.state = In::Writeset;
                if empty {
                    self.end_writeset();
                }
            }
            ("era_array", In::Superblock) => {
                Attrs::read(e, "era_array", &[], at)?;
                if self.seen_era_array {
                    return err(at, "a second <era_array>");
                }
                self.seen_era_array = true;
                self.state = if empty { In::Superblock } else { In::EraArray };
            }
            ("bit", In::Writeset) => {
                let a = Attrs::read(e, "bit", &["block", "value"], at)?;
                let block: u64 = a.number("block", "32 bits")?;
                let value = bool_value(&a, at)?;
                self.bit(block, value, at)?;
            }
            ("marked", In::Writeset) => {
                let a = Attrs::read(e, "marked", &["block_begin", "len"], at)?;
                let begin: u64 = a.number("block_begin", "32 bits")?;
                let len: u64 = a.number("len", "32 bits")?;
                let ws = self.writeset.as_mut().unwrap();
                if begin + len > ws.nr_bits as u64 {
                    return err(
                        at,
                        format!(
                            "marked blocks {begin}..{} reach beyond writeset era {}'s {} bits",
                            begin + len,
                            ws.era,
                            ws.nr_bits
                        ),
                    );
                }
                ws.mark(begin..begin + len);
            }
            ("era", In::EraArray) => {
                let a = Attrs::read(e, "era", &["block", "era"], at)?;
                let block: u32 = a.number("block", "32 bits")?;
                let era: u32 = a.number("era", "32 bits")?;
                self.era_entry(block, era, at)?;
            }
            ("bit" | "marked", _) => return err(at, format!("<{name}> outside a <writeset>")),
            ("era", _) => return err(at, "<era> outside the <era_array>"),
            ("writeset" | "era_array", _) => {
                return err(at, format!("<{name}> must be directly inside <superblock>"))
            }
            (other, _) => return err(at, format!("unknown element <{other}>")),
        }
        Ok(())
    }

    /// A `<bit>` of the open writeset.
    fn bit(&mut self, block: u64, value: bool, at: u64) -> XmlResult<()> {
        let ws = self.writeset.as_mut().unwrap();
        if !value {
            return Ok(());
        }
        if block >= ws.nr_bits as u64 {
            return err(
                at,
                format!(
                    "bit {block} is beyond writeset era {}'s {} bits",
                    ws.era, ws.nr_bits
                ),
            );
        }
        ws.mark(block..block + 1);
        Ok(())
    }

    /// An `<era>` of the era array.
    fn era_entry(&mut self, block: u32, era: u32, at: u64) -> XmlResult<()> {
        if self.last_era_block.is_some_and(|l| l >= block) {
            return err(
                at,
                format!(
                    "era array blocks out of order: block {block} after {}",
                    self.last_era_block.unwrap()
                ),
            );
        }
        self.last_era_block = Some(block);
        let m = self.model();
        if block >= m.nr_blocks {
            return err(
                at,
                format!(
                    "era array block {block} is beyond nr_blocks {}",
                    m.nr_blocks
                ),
            );
        }
        if era > m.current_era {
            return err(
                at,
                format!(
                    "block {block} has era {era}, newer than the current era {}",
                    m.current_era
                ),
            );
        }
        if era != 0 {
            m.eras.push((block, era));
        }
        Ok(())
    }

    /// A `<bit>` or `<era>` exactly as era_dump writes it, where one may
    /// stand, read without the general parser: true if one was read
    /// (and accepted or rejected), false to leave it to the general one,
    /// which also says what is wrong with any other form.
    fn canonical(
        &mut self,
        reader: &mut Reader<&[u8]>,
        skipped: &mut u64,
    ) -> Option<XmlResult<()>> {
        enum Leaf {
            Bit(u64, bool),
            Era(u32, u32),
        }
        let state = &self.state;
        let (leaf, at) = take_front(reader, skipped, |cur| match state {
            In::Writeset if cur.eat(b"<bit block=\"") => {
                let block = cur.decimal()?;
                if !cur.eat(b"\" value=\"") {
                    return None;
                }
                let value = cur.boolean()?;
                cur.eat(b"\"/>").then_some(Leaf::Bit(block, value))
            }
            In::EraArray if cur.eat(b"<era block=\"") => {
                let block = u32::try_from(cur.decimal()?).ok()?;
                if !cur.eat(b"\" era=\"") {
                    return None;
                }
                let era = u32::try_from(cur.decimal()?).ok()?;
                cur.eat(b"\"/>").then_some(Leaf::Era(block, era))
            }
            _ => None,
        })?;
        Some(match leaf {
            Leaf::Bit(block, value) => self.bit(block, value, at),
            Leaf::Era(block, era) => self.era_entry(block, era, at),
        })
    }

    fn end_writeset(&mut self) {
        let mut ws = self.writeset.take().unwrap();
        ws.normalise();
        self.model().writesets.push(ws);
        self.state = In::Superblock;
    }

    fn end(&mut self, name: &str, at: u64) -> XmlResult<()> {
        match (name, &self.state) {
            ("superblock", In::Superblock) => self.state = In::Ended,
            ("writeset", In::Writeset) => self.end_writeset(),
            ("era_array", In::EraArray) => self.state = In::Superblock,
            (other, _) => return err(at, format!("unexpected end tag '</{other}>'")),
        }
        Ok(())
    }
}

/// Parses and validates era XML.
pub fn parse(input: &[u8]) -> XmlResult<EraModel> {
    parse_with(input, true, None)
}

/// `parse` of a mapped document, whose pages behind the parser leave the
/// resident set as it goes.
pub fn parse_doc(doc: &XmlDoc) -> XmlResult<EraModel> {
    parse_with(doc.bytes(), true, Some(doc))
}

/// `fast`: canonical `<bit>` and `<era>` elements are read past the
/// general parser (off only to test that both ways agree).
fn parse_with(input: &[u8], fast: bool, doc: Option<&XmlDoc>) -> XmlResult<EraModel> {
    let mut reader = Reader::from_reader(input);
    reader.config_mut().check_end_names = true;
    let mut p = Parser {
        model: None,
        state: In::Nothing,
        writeset: None,
        last_era_block: None,
        seen_era_array: false,
    };
    // Bytes read past the general parser (its positions leave them out).
    let mut skipped = 0;
    // Whether the reader has just returned an element (and so stands
    // before text, looking for the next '<'), where take_front may act.
    let mut between = false;
    let mut released = Released::default();
    loop {
        if let Some(doc) = doc {
            doc.release_behind(skipped + reader.buffer_position(), &mut released);
        }
        if fast && between {
            if let Some(done) = p.canonical(&mut reader, &mut skipped) {
                done?;
                continue;
            }
        }
        let at = skipped + reader.buffer_position();
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                return err(
                    skipped + reader.error_position(),
                    format!("parse error: {e}"),
                )
            }
        };
        between = matches!(event, Event::Start(_) | Event::Empty(_) | Event::End(_));
        match event {
            Event::Eof => break,
            Event::Text(_) | Event::Comment(_) => {}
            Event::Start(e) => p.start(&e, at, false)?,
            Event::Empty(e) => p.start(&e, at, true)?,
            Event::End(e) => p.end(e.name().into_inner(), at)?,
            Event::Decl(_) => return err(at, "unsupported element: XML declaration"),
            Event::DocType(_) => return err(at, "unsupported element: DOCTYPE"),
            Event::PI(_) => return err(at, "unsupported element: processing instruction"),
            Event::CData(_) => return err(at, "unsupported element: CDATA section"),
            Event::GeneralRef(_) => return err(at, "unsupported element: entity reference"),
        }
    }
    if p.state != In::Ended {
        return err(
            skipped + reader.buffer_position(),
            "incomplete source metadata: the document ends before </superblock>",
        );
    }
    let mut model = p.model.take().unwrap();
    model.writesets.sort_by_key(|w| w.era);
    Ok(model)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(body: &str) -> String {
        format!(
            "<superblock uuid=\"\" block_size=\"128\" nr_blocks=\"200\" current_era=\"5\">\n{body}\n</superblock>"
        )
    }

    #[test]
    fn marked_runs_cross_words_exactly() {
        let m = parse(
            doc(
                "<writeset era=\"5\" nr_bits=\"200\"><marked block_begin=\"60\" len=\"70\"/>\
                 <bit block=\"199\" value=\"true\"/><bit block=\"3\" value=\"false\"/></writeset>",
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(m.writesets[0].marked, vec![60..130, 199..200]);
    }

    /// The canonical lines era_dump writes read the same past the
    /// general parser as through it, and so do the forms and mistakes
    /// around them: same model, or same error at the same place.
    #[test]
    fn canonical_elements_read_as_the_general_parser_reads_them() {
        let good = doc("  <writeset era=\"4\" nr_bits=\"200\">\n    <bit block=\"0\" value=\"false\"/>\n    \
             <bit block=\"1\" value=\"true\"/>\n    <bit block=\"2\" value=\"true\"/>\n  </writeset>\n  \
             <era_array>\n    <era block=\"0\" era=\"3\"/>\n    <era block=\"1\" era=\"0\"/>\n    \
             <era block=\"7\" era=\"2\"/>\n  </era_array>");
        let m = parse_with(good.as_bytes(), true, None).unwrap();
        assert_eq!(m.writesets[0].marked, vec![1..3]);
        assert_eq!(m.eras, vec![(0, 3), (7, 2)]);
        for text in [
            good.clone(),
            good.replace(
                "<bit block=\"2\" value=\"true\"",
                "<bit block=\"200\" value=\"true\"",
            ),
            good.replace(
                "value=\"true\"/>\n    <bit block=\"2\"",
                "value=\"yes\"/>\n    <bit block=\"2\"",
            ),
            good.replace("<bit block=\"1\"", "<bit  block=\"1\""),
            good.replace("<bit block=\"1\"", "<bit block=\"99999999999999999999\""),
            good.replace("<era block=\"7\"", "<era block=\"1\""),
            good.replace("<era block=\"7\" era=\"2\"", "<era block=\"7\" era=\"9\""),
            good.replace("<era block=\"7\"", "<era block=\"4294967296\""),
            good.replace("</era_array>", "</writeset>"),
            good.replace("    <bit block=\"1\"", " x <bit block=\"1\""),
            good.replace(
                "<bit block=\"0\" value=\"false\"/>",
                "<bit block=\"0\" value=\"false\"></bit>",
            ),
            good.replace(
                "<era block=\"0\" era=\"3\"/>\n    <era",
                "<era block=\"0\" era=\"3\"/>\n    < <era",
            ),
            good[..good.find("<bit block=\"2\"").unwrap() + 10].to_string(),
        ] {
            assert_eq!(
                parse_with(text.as_bytes(), true, None),
                parse_with(text.as_bytes(), false, None),
                "{text}"
            );
        }
    }

    #[test]
    fn mistakes_are_named() {
        for (body, want) in [
            ("<writeset era=\"6\" nr_bits=\"1\"/>", "newer than the current era 5"),
            ("<writeset era=\"1\" nr_bits=\"10\"><bit block=\"10\" value=\"true\"/></writeset>", "beyond writeset era 1's 10 bits"),
            ("<writeset era=\"1\" nr_bits=\"10\"><marked block_begin=\"5\" len=\"6\"/></writeset>", "reach beyond"),
            ("<era_array><era block=\"3\" era=\"1\"/><era block=\"3\" era=\"1\"/></era_array>", "out of order"),
            ("<era_array><era block=\"200\" era=\"1\"/></era_array>", "beyond nr_blocks 200"),
            ("<era_array><era block=\"1\" era=\"9\"/></era_array>", "newer than the current era 5"),
            ("<bit block=\"1\" value=\"true\"/>", "outside a <writeset>"),
            ("<writeset era=\"1\" nr_bits=\"10\"><bit block=\"1\" value=\"yes\"/></writeset>", "'true' or 'false'"),
            ("<writeset era=\"1\" nr_bits=\"1\"/><writeset era=\"1\" nr_bits=\"1\"/>", "given twice"),
            ("<thing/>", "unknown element <thing>"),
        ] {
            let e = parse(doc(body).as_bytes()).unwrap_err();
            assert!(e.message.contains(want), "{body}: {}", e.message);
        }
        let e = parse(b"<superblock uuid=\"\" block_size=\"1\" nr_blocks=\"1\" current_era=\"1\">")
            .unwrap_err();
        assert!(e.message.contains("incomplete"), "{}", e.message);
    }
}
