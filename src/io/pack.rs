//! The pack format: a metadata device's metadata blocks, compressed.
//!
//! Header: magic, version 3, block size 4096, number of blocks of the
//! device (u64 little-endian each). Then chunks to the end of the file:
//! a u64 compressed length and that many bytes of a zlib stream. A
//! chunk's stream is a list of records: a u64 block number and a program
//! for a small machine that writes the block's 4096 bytes (see `Machine`).
//! Blocks not in the pack read back as zeros.

use std::io::{Read, Write};

use rayon::prelude::*;

use super::checksum;
use super::BLOCK_SIZE;

pub const PACK_MAGIC: u64 = 0xa537_a0aa_6309_ef77;
pub const PACK_VERSION: u64 = 3;
const HEADER_SIZE: usize = 32;
/// Blocks per chunk the packer writes.
const CHUNK_BLOCKS: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackError {
    NotAPack,
    BadVersion(u64),
    BadBlockSize(u64),
    Truncated {
        offset: u64,
        what: &'static str,
    },
    Zlib {
        chunk_offset: u64,
        message: String,
    },
    BadProgram {
        chunk_offset: u64,
        block: u64,
        message: String,
    },
    BlockOutOfRange {
        chunk_offset: u64,
        block: u64,
        nr_blocks: u64,
    },
    NotMetadata {
        block: u64,
    },
    TooLarge(u64),
}

impl std::fmt::Display for PackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PackError::NotAPack => write!(f, "Not a pack file (bad magic number)"),
            PackError::BadVersion(v) => write!(f, "unsupported pack version {v} (expected {PACK_VERSION})"),
            PackError::BadBlockSize(s) => write!(f, "unsupported pack block size {s} (expected {BLOCK_SIZE})"),
            PackError::Truncated { offset, what } => write!(f, "pack file truncated at byte {offset}: {what}"),
            PackError::Zlib { chunk_offset, message } => {
                write!(f, "pack chunk at byte {chunk_offset}: bad compressed data: {message}")
            }
            PackError::BadProgram { chunk_offset, block, message } => {
                write!(f, "pack chunk at byte {chunk_offset}, block {block}: {message}")
            }
            PackError::BlockOutOfRange { chunk_offset, block, nr_blocks } => write!(
                f,
                "pack chunk at byte {chunk_offset}: block {block} is beyond the device's {nr_blocks} blocks"
            ),
            PackError::NotMetadata { block } => {
                write!(f, "packed block {block} has no valid metadata checksum")
            }
            PackError::TooLarge(n) => write!(
                f,
                "the pack declares {n} blocks, more than any metadata device holds ({MAX_PACKED_BLOCKS})"
            ),
        }
    }
}

impl std::error::Error for PackError {}

fn u64_at(bytes: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(bytes[off..off + 8].try_into().unwrap())
}

pub fn is_pack(head: &[u8]) -> bool {
    head.len() >= 8 && u64_at(head, 0) == PACK_MAGIC
}

/// The header's number of blocks, after checking magic, version and size.
pub fn read_header(bytes: &[u8]) -> Result<u64, PackError> {
    if bytes.len() < 8 || !is_pack(bytes) {
        return Err(PackError::NotAPack);
    }
    if bytes.len() < HEADER_SIZE {
        return Err(PackError::Truncated {
            offset: bytes.len() as u64,
            what: "incomplete header",
        });
    }
    let version = u64_at(bytes, 8);
    if version != PACK_VERSION {
        return Err(PackError::BadVersion(version));
    }
    let bs = u64_at(bytes, 16);
    if bs != BLOCK_SIZE as u64 {
        return Err(PackError::BadBlockSize(bs));
    }
    let nr_blocks = u64_at(bytes, 24);
    if nr_blocks > MAX_PACKED_BLOCKS {
        return Err(PackError::TooLarge(nr_blocks));
    }
    Ok(nr_blocks)
}

/// No metadata device is larger than 2^40 bytes (a thin or cache
/// metadata space map tops out near 16 GiB).
pub const MAX_PACKED_BLOCKS: u64 = (1 << 40) / BLOCK_SIZE as u64;

/// Calls `put(block, data)` for every packed block, in file order.
pub fn unpack_each(
    bytes: &[u8],
    mut put: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let nr_blocks = read_header(bytes)?;
    let mut off = HEADER_SIZE;
    let mut stream = Vec::new();
    while off < bytes.len() {
        if off + 8 > bytes.len() {
            return Err(Box::new(PackError::Truncated {
                offset: off as u64,
                what: "incomplete chunk length",
            }));
        }
        let len = u64_at(bytes, off) as usize;
        let start = off + 8;
        let chunk_offset = off as u64;
        let Some(end) = start.checked_add(len).filter(|&e| e <= bytes.len()) else {
            return Err(Box::new(PackError::Truncated {
                offset: bytes.len() as u64,
                what: "incomplete chunk",
            }));
        };
        stream.clear();
        flate2::read::ZlibDecoder::new(&bytes[start..end])
            .read_to_end(&mut stream)
            .map_err(|e| PackError::Zlib {
                chunk_offset,
                message: e.to_string(),
            })?;
        let mut pos = 0;
        let mut block = vec![0u8; BLOCK_SIZE];
        while pos < stream.len() {
            if pos + 8 > stream.len() {
                return Err(Box::new(PackError::BadProgram {
                    chunk_offset,
                    block: 0,
                    message: "record ends inside its block number".into(),
                }));
            }
            let b = u64_at(&stream, pos);
            pos += 8;
            if b >= nr_blocks {
                return Err(Box::new(PackError::BlockOutOfRange {
                    chunk_offset,
                    block: b,
                    nr_blocks,
                }));
            }
            let used = Machine::new(&stream[pos..])
                .run(&mut block)
                .map_err(|message| PackError::BadProgram {
                    chunk_offset,
                    block: b,
                    message,
                })?;
            pos += used;
            if checksum::kind_of(&block).is_none() {
                return Err(Box::new(PackError::NotMetadata { block: b }));
            }
            put(b, &block)?;
        }
        off = end;
    }
    Ok(nr_blocks)
}

/// Unpacks through `sink` onto an output already zeroed and sized:
/// every block but block 0, a flush, then block 0 and a flush, so that a
/// crash part way never leaves a valid superblock over missing blocks.
pub fn unpack_to_sink(
    bytes: &[u8],
    sink: &mut dyn super::sink::BlockSink,
) -> Result<u64, Box<dyn std::error::Error + Send + Sync>> {
    let mut first: Option<Vec<u8>> = None;
    let nr_blocks = unpack_each(bytes, |b, data| {
        if b == 0 {
            first = Some(data.to_vec());
            Ok(())
        } else {
            sink.write_block(b, data)
        }
    })?;
    sink.flush()?;
    if let Some(block) = first {
        sink.write_block(0, &block)?;
        sink.flush()?;
    }
    Ok(nr_blocks)
}

/// Unpacks into `image`, which must hold `read_header(bytes)` blocks.
pub fn unpack_into(
    bytes: &[u8],
    image: &mut [u8],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    unpack_each(bytes, |b, data| {
        let off = b as usize * BLOCK_SIZE;
        image[off..off + BLOCK_SIZE].copy_from_slice(data);
        Ok(())
    })?;
    Ok(())
}

/// The block-rebuilding machine. Each instruction byte holds an opcode
/// (high nibble) and an operand (low nibble); "emit" appends the 64-bit
/// base, little-endian.
struct Machine<'a> {
    program: &'a [u8],
    pos: usize,
    base: u64,
}

const OP_SET: u8 = 0;
const OP_POS: u8 = 1;
const OP_POSW: u8 = 2;
const OP_NEG: u8 = 3;
const OP_NEGW: u8 = 4;
const OP_CONST: u8 = 5;
const OP_CONST8: u8 = 6;
const OP_COUNT: u8 = 7;
const OP_COUNT8: u8 = 8;
const OP_LIT: u8 = 9;
const OP_LITW: u8 = 10;
const OP_SHIFTED_RUN: u8 = 11;

/// Where emitted values go.
enum Sink<'o> {
    Bytes(&'o mut Vec<u8>),
    Values(&'o mut Vec<u64>, usize),
}

impl Sink<'_> {
    fn emit(&mut self, v: u64) -> Result<(), String> {
        match self {
            Sink::Bytes(out) => {
                if out.len() + 8 > BLOCK_SIZE {
                    return Err("program writes past the end of the block".into());
                }
                out.extend_from_slice(&v.to_le_bytes());
            }
            Sink::Values(vals, n) => {
                if vals.len() >= *n {
                    return Err("shifted run produces too many values".into());
                }
                vals.push(v);
            }
        }
        Ok(())
    }
}

impl<'a> Machine<'a> {
    fn new(program: &'a [u8]) -> Machine<'a> {
        Machine {
            program,
            pos: 0,
            base: 0,
        }
    }

    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.program.get(self.pos).ok_or("program ends early")?;
        self.pos += 1;
        Ok(b)
    }

    fn wide(&mut self, width: u8) -> Result<u64, String> {
        if !matches!(width, 1 | 2 | 4 | 8) {
            return Err(format!("bad integer width {width}"));
        }
        let w = width as usize;
        let bytes = self
            .program
            .get(self.pos..self.pos + w)
            .ok_or("program ends inside an integer")?;
        let mut b = [0u8; 8];
        b[..w].copy_from_slice(bytes);
        self.pos += w;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes one block into `out`; returns the program bytes used.
    fn run(mut self, out: &mut [u8]) -> Result<usize, String> {
        let mut bytes = Vec::with_capacity(BLOCK_SIZE);
        while bytes.len() < BLOCK_SIZE {
            self.step(&mut Sink::Bytes(&mut bytes))?;
        }
        out.copy_from_slice(&bytes);
        Ok(self.pos)
    }

    fn step(&mut self, sink: &mut Sink) -> Result<(), String> {
        let mut count = 1usize;
        loop {
            let ins = self.byte()?;
            let (op, arg) = (ins >> 4, ins & 0x0f);
            match op {
                OP_COUNT => {
                    count = arg as usize;
                    continue;
                }
                OP_COUNT8 => {
                    count = ((arg as usize) << 8) | self.byte()? as usize;
                    continue;
                }
                OP_SET => {
                    self.base = self.wide(arg)?;
                    for _ in 0..count {
                        sink.emit(self.base)?;
                    }
                }
                OP_POS | OP_NEG | OP_POSW | OP_NEGW => {
                    let delta = if matches!(op, OP_POSW | OP_NEGW) {
                        self.wide(arg)?
                    } else {
                        arg as u64
                    };
                    for _ in 0..count {
                        self.base = if matches!(op, OP_POS | OP_POSW) {
                            self.base.wrapping_add(delta)
                        } else {
                            self.base.wrapping_sub(delta)
                        };
                        sink.emit(self.base)?;
                    }
                }
                OP_CONST | OP_CONST8 => {
                    if count != 1 {
                        return Err("a repeat count before CONST".into());
                    }
                    let n = if op == OP_CONST {
                        arg as usize
                    } else {
                        ((arg as usize) << 8) | self.byte()? as usize
                    };
                    for _ in 0..n {
                        sink.emit(self.base)?;
                    }
                }
                OP_LIT | OP_LITW => {
                    let n = if op == OP_LIT {
                        arg as usize
                    } else {
                        self.wide(arg)? as usize
                    };
                    let Sink::Bytes(out) = sink else {
                        return Err("a literal inside a shifted run".into());
                    };
                    let lit = self
                        .program
                        .get(self.pos..self.pos.saturating_add(n))
                        .ok_or("program ends inside a literal")?;
                    if out.len() + n > BLOCK_SIZE {
                        return Err("literal runs past the end of the block".into());
                    }
                    out.extend_from_slice(lit);
                    self.pos += n;
                }
                OP_SHIFTED_RUN => {
                    let n = ((arg as usize) << 8) | self.byte()? as usize;
                    let mut high = Vec::with_capacity(n);
                    let mut low = Vec::with_capacity(n);
                    while high.len() < n {
                        self.step(&mut Sink::Values(&mut high, n))?;
                    }
                    while low.len() < n {
                        self.step(&mut Sink::Values(&mut low, n))?;
                    }
                    for (h, l) in high.iter().zip(&low) {
                        sink.emit((h << 24) | (l & 0xff_ffff))?;
                    }
                }
                _ => return Err(format!("unknown instruction {ins:#04x}")),
            }
            return Ok(());
        }
    }
}

/// Encodes one block as a single wide literal (the zlib stream around it
/// does the compressing).
fn encode_block(b: u64, data: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&b.to_le_bytes());
    out.push((OP_LITW << 4) | 2);
    out.extend_from_slice(&(BLOCK_SIZE as u16).to_le_bytes());
    out.extend_from_slice(data);
}

/// Packs the metadata blocks of `image` (whole 4096-byte blocks).
pub fn pack(image: &[u8], out: &mut (impl Write + ?Sized)) -> std::io::Result<()> {
    let nr_blocks = (image.len() / BLOCK_SIZE) as u64;
    out.write_all(&PACK_MAGIC.to_le_bytes())?;
    out.write_all(&PACK_VERSION.to_le_bytes())?;
    out.write_all(&(BLOCK_SIZE as u64).to_le_bytes())?;
    out.write_all(&nr_blocks.to_le_bytes())?;
    let chunks: Vec<u64> = (0..nr_blocks).step_by(CHUNK_BLOCKS).collect();
    // Compress a window of chunks in parallel, write them in order.
    for window in chunks.chunks(64) {
        let parts: Vec<Vec<u8>> = window
            .par_iter()
            .map(|&first| {
                let mut stream = Vec::new();
                let last = (first + CHUNK_BLOCKS as u64).min(nr_blocks);
                for b in first..last {
                    let data = &image[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE];
                    if checksum::kind_of(data).is_some() {
                        encode_block(b, data, &mut stream);
                    }
                }
                if stream.is_empty() {
                    return Vec::new();
                }
                let mut z =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                z.write_all(&stream).unwrap();
                z.finish().unwrap()
            })
            .collect();
        for p in parts.into_iter().filter(|p| !p.is_empty()) {
            out.write_all(&(p.len() as u64).to_le_bytes())?;
            out.write_all(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_program(p: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = vec![0u8; BLOCK_SIZE];
        Machine::new(p).run(&mut out).map(|_| out)
    }

    #[test]
    fn machine_runs_and_shifted_runs() {
        // COUNT 2, SET width 1 = 5 -> 5, 5; POS 3 -> 8; CONST8 509 -> 8 x 509.
        let mut p = vec![0x72, 0x01, 5, 0x13, 0x61, 0xfd];
        let out = run_program(&p).unwrap();
        assert_eq!(u64_at(&out, 0), 5);
        assert_eq!(u64_at(&out, 8), 5);
        assert_eq!(u64_at(&out, 16), 8);
        assert_eq!(u64_at(&out, 4088), 8);
        // A shifted run of 512: high = 1 (x512), low = 2 (x512).
        p = vec![0xb2, 0x00, 0x01, 1, 0x61, 0xff, 0x01, 2, 0x61, 0xff];
        let out = run_program(&p).unwrap();
        assert_eq!(u64_at(&out, 0), (1 << 24) | 2);
        assert_eq!(u64_at(&out, 4088), (1 << 24) | 2);
    }

    #[test]
    fn bad_programs_are_errors_not_panics() {
        for p in [
            &[][..],
            &[0x0f],
            &[0x01],
            &[0x9f, 1, 2],
            &[0xc0],
            &[0x72, 0x51],
            &[0xa8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(run_program(p).is_err(), "{p:?}");
        }
        let mut long = vec![0x01, 1];
        long.extend(std::iter::repeat_n(0x11, 600));
        assert!(run_program(&long).is_ok(), "stops at 4096 bytes");
    }
}
