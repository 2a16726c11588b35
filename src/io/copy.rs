//! Copying ranges of fixed-size blocks from one file or device to another
//! (thin_migrate): the source is read in large sequential pieces, each
//! piece written out while the next is read, with buffers aligned for
//! direct I/O. Blocks that cannot be read or written are counted, named
//! and skipped; the rest is copied.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc;

use crate::report::Progress;

/// `len` blocks from block `from` of the source go to block `to` of the
/// destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    pub from: u64,
    pub to: u64,
    pub len: u64,
}

/// One side of a copy, for messages: the file and what its blocks are
/// called ("data block", "block").
pub struct End<'a> {
    pub file: &'a File,
    pub path: &'a Path,
    pub unit_name: &'a str,
}

pub struct CopyJob<'a> {
    pub src: End<'a>,
    pub dst: End<'a>,
    /// Bytes per block.
    pub block_bytes: u64,
    /// Bytes read at a time (at least one block; two such buffers are
    /// in use, one being read while the other is written).
    pub buffer_bytes: u64,
    /// The destination reads as zeros wherever it is not written (a
    /// freshly emptied regular file): blocks of zeros are left unwritten,
    /// so they stay holes.
    pub skip_zeros: bool,
    /// Bytes in the source and in the destination (u64::MAX: no limit).
    /// A device need not end on a block boundary: of its last block only
    /// the part before the end is read (the rest of the buffer is zeros)
    /// and only the part before the destination's end is written.
    pub src_bytes: u64,
    pub dst_bytes: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Blocks written (or, with `skip_zeros`, found to be zeros).
    pub copied: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    /// The first few failures, in words.
    pub errors: Vec<String>,
}

/// Failures named in a report; the rest are only counted.
const NAMED_ERRORS: usize = 10;

impl CopyReport {
    fn fail(&mut self, what: String) {
        if self.errors.len() < NAMED_ERRORS {
            self.errors.push(what);
        }
    }

    pub fn failed(&self) -> bool {
        self.read_errors + self.write_errors > 0
    }
}

/// A heap buffer aligned for O_DIRECT.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is plain owned memory, used by one thread at a time.
unsafe impl Send for AlignedBuf {}

const ALIGN: usize = 4096;

impl AlignedBuf {
    pub fn zeroed(len: usize) -> AlignedBuf {
        let len = len.max(ALIGN).next_multiple_of(ALIGN);
        let layout = std::alloc::Layout::from_size_align(len, ALIGN).expect("buffer layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr holds len initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, borrowed mutably through self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, ALIGN).expect("buffer layout");
        // SAFETY: allocated in `zeroed` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, layout) }
    }
}

/// A piece read at once: `len` source blocks from `from`, and where each
/// part of it goes.
struct Piece {
    from: u64,
    len: u64,
    /// (block offset in the piece, destination block, blocks).
    parts: Vec<(u64, u64, u64)>,
}

/// Cuts extents (sorted by source block) into pieces of at most `max`
/// blocks, each contiguous in the source.
fn pieces(extents: &[Extent], max: u64) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for e in extents {
        let mut done = 0;
        while done < e.len {
            let from = e.from + done;
            let joins = out
                .last()
                .is_some_and(|p| p.from + p.len == from && p.len < max);
            if !joins {
                out.push(Piece {
                    from,
                    len: 0,
                    parts: Vec::new(),
                });
            }
            let p = out.last_mut().unwrap();
            let n = (e.len - done).min(max - p.len);
            p.parts.push((p.len, e.to + done, n));
            p.len += n;
            done += n;
        }
    }
    out
}

fn all_zero(bytes: &[u8]) -> bool {
    let (head, words, tail) = unsafe {
        // SAFETY: u64 has no invalid bit patterns.
        bytes.align_to::<u64>()
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Copies `extents` (sorted by source block; destinations need not be in
/// order). Never fails as a whole: what could not be copied is in the
/// report.
pub fn copy_extents(job: &CopyJob, extents: &[Extent], progress: &Progress) -> CopyReport {
    let bb = job.block_bytes;
    let per_piece = (job.buffer_bytes / bb).max(1);
    let pieces = pieces(extents, per_piece);
    let buf_len = (per_piece * bb) as usize;

    let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
    let (full_tx, full_rx) = mpsc::sync_channel::<(usize, AlignedBuf, Vec<bool>)>(1);
    for _ in 0..2 {
        let _ = free_tx.send(AlignedBuf::zeroed(buf_len));
    }
    let mut report = CopyReport::default();
    let pieces = &pieces;
    std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            let mut failures = Vec::new();
            for (i, p) in pieces.iter().enumerate() {
                let Ok(mut buf) = free_rx.recv() else { break };
                let bytes = (p.len * bb) as usize;
                let good = match read_upto(job, &mut buf.as_mut_slice()[..bytes], p.from * bb) {
                    Ok(()) => vec![true; p.len as usize],
                    // Block by block, to lose only what cannot be read.
                    Err(_) => (0..p.len)
                        .map(|k| {
                            let at = (k * bb) as usize;
                            let slot = &mut buf.as_mut_slice()[at..at + bb as usize];
                            match read_upto(job, slot, (p.from + k) * bb) {
                                Ok(()) => true,
                                Err(e) => {
                                    failures.push((p.from + k, e));
                                    false
                                }
                            }
                        })
                        .collect(),
                };
                if full_tx.send((i, buf, good)).is_err() {
                    break;
                }
            }
            drop(full_tx);
            failures
        });
        for (i, buf, good) in full_rx.iter() {
            let p = &pieces[i];
            let data = buf.as_slice();
            for &(off, to, n) in &p.parts {
                write_part(job, data, &good, (off, to, n), &mut report);
                progress.inc(n);
            }
            let _ = free_tx.send(buf);
        }
        drop(free_tx);
        for (block, e) in reader.join().unwrap_or_default() {
            report.read_errors += 1;
            report.fail(format!(
                "cannot read {} {block} of '{}': {e}",
                job.src.unit_name,
                job.src.path.display()
            ));
        }
    });
    report
}

/// The unit of the zero test when zeros are left unwritten: a page, so
/// a block that is mostly zeros stays mostly holes.
const GRANULE: u64 = 4096;

/// Writes one part of a piece read (`off`: its first block in the piece,
/// `to`: its first destination block, `n` blocks): the blocks read, less
/// the zero pages a fresh destination need not be given. A failed write
/// is retried block by block, so only the blocks that cannot be written
/// are counted.
fn write_part(
    job: &CopyJob,
    data: &[u8],
    good: &[bool],
    (off, to, n): (u64, u64, u64),
    report: &mut CopyReport,
) {
    let bb = job.block_bytes;
    let g = if job.skip_zeros && bb.is_multiple_of(GRANULE) {
        GRANULE
    } else {
        bb
    };
    let base = off * bb;
    let granules = n * bb / g;
    let want = |k: u64| {
        let at = base + k * g;
        good[(at / bb) as usize]
            && !(job.skip_zeros && all_zero(&data[at as usize..(at + g) as usize]))
    };
    let write = |from: u64, to_byte: u64| -> std::io::Result<()> {
        let at = to * bb + (from - base);
        let len = (to_byte - from).min(job.dst_bytes.saturating_sub(at));
        if len == 0 {
            return Ok(());
        }
        job.dst
            .file
            .write_all_at(&data[from as usize..(from + len) as usize], at)
    };
    let mut failed: Vec<u64> = Vec::new();
    let mut k = 0;
    while k < granules {
        if !want(k) {
            k += 1;
            continue;
        }
        let first = k;
        while k < granules && want(k) {
            k += 1;
        }
        let (from, until) = (base + first * g, base + k * g);
        if write(from, until).is_ok() {
            continue;
        }
        // Block by block, each block's share of the range.
        for b in from / bb..until.div_ceil(bb) {
            let lo = from.max(b * bb);
            let hi = until.min((b + 1) * bb);
            if let Err(e) = write(lo, hi) {
                if failed.last() != Some(&b) {
                    failed.push(b);
                    report.fail(format!(
                        "cannot write {} {} of '{}': {e}",
                        job.dst.unit_name,
                        to + (b - off),
                        job.dst.path.display()
                    ));
                }
            }
        }
    }
    let read = (off..off + n).filter(|&b| good[b as usize]).count() as u64;
    report.write_errors += failed.len() as u64;
    report.copied += read - failed.len() as u64;
}

/// Fills `buf` from source byte `offset`: what lies before the source's
/// end (`src_bytes`) is read, the rest set to zeros.
fn read_upto(job: &CopyJob, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let readable = (buf.len() as u64).min(job.src_bytes.saturating_sub(offset)) as usize;
    let (head, tail) = buf.split_at_mut(readable);
    tail.fill(0);
    if head.is_empty() {
        return Ok(());
    }
    read_full(job.src.file, head, offset)
}

/// Reads all of `buf` from `offset`; a short read (the end of the file
/// or device) is an error.
fn read_full(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, offset).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "it lies beyond the end of the file or device",
            )
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_source_neighbours_and_split_at_the_buffer() {
        let e = |from, to, len| Extent { from, to, len };
        let p = pieces(&[e(0, 10, 3), e(3, 2, 2), e(9, 0, 7)], 4);
        type Got = (u64, u64, Vec<(u64, u64, u64)>);
        let got: Vec<Got> = p.iter().map(|p| (p.from, p.len, p.parts.clone())).collect();
        assert_eq!(
            got,
            vec![
                (0, 4, vec![(0, 10, 3), (3, 2, 1)]),
                (4, 1, vec![(0, 3, 1)]),
                (9, 4, vec![(0, 0, 4)]),
                (13, 3, vec![(0, 4, 3)]),
            ]
        );
    }

    /// A source ending two and a half blocks in: the copy of blocks 0..3
    /// in place reads as the source and is as long, not a byte longer.
    #[test]
    fn a_last_partial_block_is_copied_up_to_the_end() {
        let dir = std::env::temp_dir().join(format!("dmpd-copy-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (src_path, dst_path) = (dir.join("src"), dir.join("dst"));
        let bb = 8192u64;
        let size = 2 * bb + bb / 2;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&src_path, &bytes).unwrap();
        let src = File::open(&src_path).unwrap();
        let dst = File::create(&dst_path).unwrap();
        dst.set_len(size).unwrap();
        // Two blocks a piece: the partial block is a piece's first.
        let job = |skip_zeros, src_bytes| CopyJob {
            src: End {
                file: &src,
                path: &src_path,
                unit_name: "block",
            },
            dst: End {
                file: &dst,
                path: &dst_path,
                unit_name: "block",
            },
            block_bytes: bb,
            buffer_bytes: 2 * bb,
            skip_zeros,
            src_bytes,
            dst_bytes: size,
        };
        let three = [Extent {
            from: 0,
            to: 0,
            len: 3,
        }];
        for skip_zeros in [false, true] {
            let report = copy_extents(&job(skip_zeros, size), &three, &Progress::none());
            assert_eq!(
                report,
                CopyReport {
                    copied: 3,
                    ..CopyReport::default()
                }
            );
            assert_eq!(std::fs::read(&dst_path).unwrap(), bytes);
        }
        // Without the limit the short block is a read error, named.
        let report = copy_extents(&job(false, u64::MAX), &three, &Progress::none());
        assert_eq!((report.copied, report.read_errors), (2, 1));
        assert!(
            report.errors[0].contains("block 2 of"),
            "{:?}",
            report.errors
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zeros_are_found_at_any_alignment() {
        let mut v = [0u8; 100];
        assert!(all_zero(&v[3..97]));
        v[96] = 1;
        assert!(!all_zero(&v[3..97]));
        assert!(all_zero(&v[3..96]));
    }
}
