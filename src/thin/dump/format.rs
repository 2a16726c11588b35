//! The two dump formats: thin XML and the human-readable listing.
//! Integers are formatted into stack buffers: a dump writes hundreds of
//! millions of them.

use crate::thin::device_details::DeviceDetails;

/// `len` blocks from virtual `virt` map to data from `data`, all written
/// at `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub virt: u64,
    pub data: u64,
    pub len: u64,
    pub time: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Xml,
    HumanReadable,
}

/// The superblock fields a dump shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub time: u32,
    pub transaction: u64,
    pub flags: u32,
    pub version: u32,
    pub data_block_size: u32,
    pub nr_data_blocks: u64,
}

use crate::io::xml::push_attr as attr;
pub use crate::io::xml::push_u64;

impl Format {
    pub fn begin(self, h: &Header, out: &mut Vec<u8>) {
        match self {
            Format::Xml => {
                out.extend_from_slice(b"<superblock uuid=\"\"");
                attr(out, "time", h.time as u64);
                attr(out, "transaction", h.transaction);
                if h.flags != 0 {
                    attr(out, "flags", h.flags as u64);
                }
                attr(out, "version", h.version as u64);
                attr(out, "data_block_size", h.data_block_size as u64);
                attr(out, "nr_data_blocks", h.nr_data_blocks);
                out.extend_from_slice(b">\n");
            }
            Format::HumanReadable => {
                out.extend_from_slice(
                    format!(
                        "begin superblock: \"\", {}, {}, {}, {}, {}, {}\n",
                        h.time,
                        h.transaction,
                        h.flags,
                        h.version,
                        h.data_block_size,
                        h.nr_data_blocks
                    )
                    .as_bytes(),
                );
            }
        }
    }

    pub fn end(self, out: &mut Vec<u8>) {
        match self {
            Format::Xml => out.extend_from_slice(b"</superblock>"),
            Format::HumanReadable => out.extend_from_slice(b"end superblock\n"),
        }
    }

    pub fn begin_def(self, name: u64, out: &mut Vec<u8>) {
        match self {
            Format::Xml => {
                out.extend_from_slice(b"  <def");
                attr(out, "name", name);
                out.extend_from_slice(b">\n");
            }
            Format::HumanReadable => {
                out.extend_from_slice(b"def: ");
                push_u64(out, name);
                out.push(b'\n');
            }
        }
    }

    pub fn end_def(self, out: &mut Vec<u8>) {
        match self {
            Format::Xml => out.extend_from_slice(b"  </def>\n"),
            Format::HumanReadable => out.push(b'\n'),
        }
    }

    pub fn begin_device(self, id: u64, d: &DeviceDetails, out: &mut Vec<u8>) {
        match self {
            Format::Xml => {
                out.extend_from_slice(b"  <device");
                attr(out, "dev_id", id);
                attr(out, "mapped_blocks", d.mapped_blocks);
                attr(out, "transaction", d.transaction_id);
                attr(out, "creation_time", d.creation_time as u64);
                attr(out, "snap_time", d.snapshotted_time as u64);
                out.extend_from_slice(b">\n");
            }
            Format::HumanReadable => {
                out.extend_from_slice(
                    format!(
                        "device: {id}\nmapped_blocks: {}\ntransaction: {}\ncreation time: {}\nsnap time: {}\n",
                        d.mapped_blocks, d.transaction_id, d.creation_time, d.snapshotted_time
                    )
                    .as_bytes(),
                );
            }
        }
    }

    pub fn end_device(self, out: &mut Vec<u8>) {
        match self {
            Format::Xml => out.extend_from_slice(b"  </device>\n"),
            Format::HumanReadable => out.push(b'\n'),
        }
    }

    pub fn reference(self, name: u64, out: &mut Vec<u8>) {
        match self {
            Format::Xml => {
                out.extend_from_slice(b"    <ref");
                attr(out, "name", name);
                out.extend_from_slice(b"/>\n");
            }
            Format::HumanReadable => {
                out.extend_from_slice(b"    ref: ");
                push_u64(out, name);
                out.push(b'\n');
            }
        }
    }

    pub fn run(self, r: &Run, out: &mut Vec<u8>) {
        match self {
            Format::Xml if r.len == 1 => {
                out.extend_from_slice(b"    <single_mapping");
                attr(out, "origin_block", r.virt);
                attr(out, "data_block", r.data);
                attr(out, "time", r.time as u64);
                out.extend_from_slice(b"/>\n");
            }
            Format::Xml => {
                out.extend_from_slice(b"    <range_mapping");
                attr(out, "origin_begin", r.virt);
                attr(out, "data_begin", r.data);
                attr(out, "length", r.len);
                attr(out, "time", r.time as u64);
                out.extend_from_slice(b"/>\n");
            }
            Format::HumanReadable => {
                out.extend_from_slice(b"    (");
                push_u64(out, r.virt);
                out.extend_from_slice(b"..");
                push_u64(out, r.virt + r.len - 1);
                out.extend_from_slice(b") -> (");
                push_u64(out, r.data);
                out.extend_from_slice(b"..");
                push_u64(out, r.data + r.len - 1);
                out.extend_from_slice(b"), ");
                push_u64(out, r.time as u64);
                out.push(b'\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        for v in [0u64, 7, 10, 99, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn runs_in_both_formats() {
        let mut out = Vec::new();
        let r = Run {
            virt: 5,
            data: 10,
            len: 3,
            time: 1,
        };
        Format::Xml.run(&r, &mut out);
        Format::Xml.run(&Run { len: 1, ..r }, &mut out);
        Format::HumanReadable.run(&r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "    <range_mapping origin_begin=\"5\" data_begin=\"10\" length=\"3\" time=\"1\"/>\n\
             \x20   <single_mapping origin_block=\"5\" data_block=\"10\" time=\"1\"/>\n\
             \x20   (5..7) -> (10..12), 1\n"
        );
    }
}
