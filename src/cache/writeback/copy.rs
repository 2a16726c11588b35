//! The copy engine of cache_writeback: cache blocks from the fast device
//! to their origin blocks.
//!
//! The blocks are sorted by origin block and cut into chunks of the copy
//! buffer. A reader thread fills a chunk (one `pread` per run of
//! consecutive cache blocks) while the writer thread writes the chunk
//! before it (one `pwrite` per run of consecutive origin blocks), so the
//! origin is written front to back in large sequential writes and reads
//! and writes overlap. A failed multi-block read or write is done again
//! block by block; a block that still fails is tried `retry_count` more
//! times and then given up, costing only itself: the blocks around it are
//! copied, the failure is recorded with its cache and origin block.
//! Finally the origin is flushed (`fdatasync`): only then do the copied
//! blocks count as written back.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::report::Progress;

/// Offsets, lengths and buffers of direct I/O are multiples of this.
pub const IO_ALIGN: usize = 4096;

/// A device the engine reads or writes, byte-addressed.
pub trait DataDevice: Sync {
    /// Fills `buf` from byte `offset` (an end of device is an error).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the writes durable.
    fn sync(&self) -> io::Result<()>;
    /// Bytes the device holds.
    fn size(&self) -> u64;
    fn path(&self) -> &Path;
}

/// A file or block device opened for the copy, with O_DIRECT where the
/// file system allows it (reads then see what the kernel wrote to the
/// device, not pages cached before, and a write error belongs to the
/// write that met it).
pub struct FileDevice {
    file: File,
    path: PathBuf,
    size: u64,
    direct: bool,
}

impl FileDevice {
    /// Opens `path` for reading (`write` false) or writing, exclusively
    /// where it is a block device.
    pub fn open(path: &Path, write: bool) -> anyhow::Result<FileDevice> {
        use anyhow::Context;
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot open '{}'", path.display()))?;
        let is_block = meta.file_type().is_block_device();
        let open = |direct: bool| {
            let mut o = std::fs::OpenOptions::new();
            if write {
                o.write(true);
            } else {
                o.read(true);
            }
            let mut flags = 0;
            if is_block {
                flags |= libc::O_EXCL;
            }
            if direct {
                flags |= libc::O_DIRECT;
            }
            o.custom_flags(flags);
            o.open(path)
        };
        // Some file systems (tmpfs) refuse O_DIRECT: buffered I/O there.
        let (file, direct) = match open(true) {
            Ok(f) => (f, true),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (
                open(false).with_context(|| format!("cannot open '{}'", path.display()))?,
                false,
            ),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot open '{}'", path.display()));
            }
        };
        let size = if is_block {
            crate::io::source::block_device_size(&file)
                .with_context(|| format!("cannot get the size of '{}'", path.display()))?
        } else {
            meta.len()
        };
        Ok(FileDevice {
            file,
            path: path.to_path_buf(),
            size,
            direct,
        })
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }
}

impl DataDevice for FileDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

/// One cache block to write back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Job {
    pub cblock: u64,
    pub oblock: u64,
}

/// Where the blocks are: the cache block size and the data offsets.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub block_bytes: u64,
    pub fast_offset: u64,
    pub origin_offset: u64,
}

impl Geometry {
    fn fast_at(&self, cblock: u64) -> Option<u64> {
        cblock
            .checked_mul(self.block_bytes)?
            .checked_add(self.fast_offset)
    }
    fn origin_at(&self, oblock: u64) -> Option<u64> {
        oblock
            .checked_mul(self.block_bytes)?
            .checked_add(self.origin_offset)
    }
}

#[derive(Clone, Copy, Debug)]
pub struct CopyOptions {
    /// Bytes of copy buffer in all (at least one cache block is used).
    pub buffer_bytes: u64,
    /// Extra tries for a block that failed on its own.
    pub retry_count: u32,
}

/// Why a block was not written back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    Read(String),
    Write(String),
    BeyondFast { size: u64 },
    BeyondOrigin { size: u64 },
}

/// A block not written back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub job: Job,
    pub cause: Cause,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cache block {} (origin block {}): ",
            self.job.cblock, self.job.oblock
        )?;
        match &self.cause {
            Cause::Read(e) => write!(f, "reading the fast device failed: {e}"),
            Cause::Write(e) => write!(f, "writing the origin device failed: {e}"),
            Cause::BeyondFast { size } => {
                write!(f, "beyond the end of the fast device ({size} bytes)")
            }
            Cause::BeyondOrigin { size } => {
                write!(f, "beyond the end of the origin device ({size} bytes)")
            }
        }
    }
}

/// What the copy did.
#[derive(Debug, Default)]
pub struct CopyOutcome {
    /// Cache blocks written back and flushed, ascending.
    pub copied: Vec<u64>,
    /// Blocks not written back, in origin order.
    pub failed: Vec<Failure>,
    /// Set when the final flush of the origin failed: then nothing is
    /// known to be written back and `copied` is empty.
    pub flush_error: Option<String>,
}

/// A buffer whose start is aligned for direct I/O (safe code: a slice of
/// a larger vector).
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + IO_ALIGN];
        let start = raw.as_ptr().align_offset(IO_ALIGN);
        AlignedBuf { raw, start, len }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
    fn as_ref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

/// A chunk in flight: the jobs, their data in job order, and which were
/// read.
struct Chunk {
    jobs: Vec<Job>,
    buf: AlignedBuf,
    read_ok: Vec<bool>,
    failed: Vec<Failure>,
}

/// Runs of consecutive positions in `0..n` where `linked(i)` says item
/// i continues the run of item i - 1.
fn runs(n: usize, linked: impl Fn(usize) -> bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        if i == n || !linked(i) {
            if start < i {
                out.push(start..i);
            }
            start = i;
        }
    }
    out
}

/// Does `io` for a run of blocks at once; where that fails and the run
/// has more than one block, block by block; a block failing alone gets
/// `retries` more tries. Returns, per block of the run, the error that
/// stopped it.
fn with_retries(
    run: std::ops::Range<usize>,
    retries: u32,
    mut io: impl FnMut(std::ops::Range<usize>) -> io::Result<()>,
) -> Vec<(usize, io::Error)> {
    let mut failed = Vec::new();
    if io(run.clone()).is_ok() {
        return failed;
    }
    for i in run {
        let mut last = match io(i..i + 1) {
            Ok(()) => continue,
            Err(e) => e,
        };
        let mut done = false;
        for _ in 0..retries {
            match io(i..i + 1) {
                Ok(()) => {
                    done = true;
                    break;
                }
                Err(e) => last = e,
            }
        }
        if !done {
            failed.push((i, last));
        }
    }
    failed
}

/// Copies every job's cache block to its origin block, then flushes the
/// origin. Never fails as a whole: what could not be done is in the
/// outcome.
pub fn copy_blocks(
    fast: &dyn DataDevice,
    origin: &dyn DataDevice,
    mut jobs: Vec<Job>,
    geo: Geometry,
    opts: CopyOptions,
    progress: &Progress,
) -> CopyOutcome {
    let mut outcome = CopyOutcome::default();
    jobs.sort_by_key(|j| (j.oblock, j.cblock));
    let bs = geo.block_bytes;
    // Blocks outside either device fail up front, without I/O.
    jobs.retain(|j| {
        let fast_end = geo.fast_at(j.cblock).and_then(|o| o.checked_add(bs));
        if fast_end.is_none_or(|e| e > fast.size()) {
            outcome.failed.push(Failure {
                job: *j,
                cause: Cause::BeyondFast { size: fast.size() },
            });
            progress.inc(1);
            return false;
        }
        let origin_end = geo.origin_at(j.oblock).and_then(|o| o.checked_add(bs));
        if origin_end.is_none_or(|e| e > origin.size()) {
            outcome.failed.push(Failure {
                job: *j,
                cause: Cause::BeyondOrigin {
                    size: origin.size(),
                },
            });
            progress.inc(1);
            return false;
        }
        true
    });
    if jobs.is_empty() {
        return finish(origin, outcome, Vec::new());
    }

    // Four chunks share the buffer (two would do for the overlap; more
    // keep the reader going while the writer meets a slow patch).
    const CHUNKS: u64 = 4;
    let per_chunk = (opts.buffer_bytes / CHUNKS / bs).max(1) as usize;
    let nr_chunks = (jobs.len().div_ceil(per_chunk) as u64).min(CHUNKS) as usize;
    let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(nr_chunks);
    let (empty_tx, empty_rx) = mpsc::channel::<Chunk>();
    for _ in 0..nr_chunks {
        let _ = empty_tx.send(Chunk {
            jobs: Vec::with_capacity(per_chunk),
            buf: AlignedBuf::new(per_chunk * bs as usize),
            read_ok: Vec::with_capacity(per_chunk),
            failed: Vec::new(),
        });
    }
    let retries = opts.retry_count;
    let mut copied = Vec::with_capacity(jobs.len());
    let mut failed = Vec::new();
    std::thread::scope(|s| {
        let jobs = &jobs;
        s.spawn(move || {
            for group in jobs.chunks(per_chunk) {
                let Ok(mut chunk) = empty_rx.recv() else {
                    return;
                };
                chunk.jobs.clear();
                chunk.jobs.extend_from_slice(group);
                chunk.read_ok.clear();
                chunk.read_ok.resize(group.len(), true);
                chunk.failed.clear();
                read_chunk(fast, &geo, retries, &mut chunk);
                if full_tx.send(chunk).is_err() {
                    return;
                }
            }
        });
        while let Ok(mut chunk) = full_rx.recv() {
            write_chunk(origin, &geo, retries, &mut chunk, &mut copied);
            progress.inc(chunk.jobs.len() as u64);
            failed.append(&mut chunk.failed);
            // The reader may have finished: a closed channel is fine.
            let _ = empty_tx.send(chunk);
        }
    });
    outcome.failed.extend(failed);
    outcome.failed.sort_by_key(|f| (f.job.oblock, f.job.cblock));
    finish(origin, outcome, copied)
}

fn finish(origin: &dyn DataDevice, mut outcome: CopyOutcome, mut copied: Vec<u64>) -> CopyOutcome {
    match origin.sync() {
        Ok(()) => {
            copied.sort_unstable();
            outcome.copied = copied;
        }
        Err(e) => {
            outcome.flush_error = Some(format!(
                "flushing the origin device '{}' failed: {e}",
                origin.path().display()
            ))
        }
    }
    outcome
}

fn read_chunk(fast: &dyn DataDevice, geo: &Geometry, retries: u32, chunk: &mut Chunk) {
    let bs = geo.block_bytes as usize;
    let Chunk {
        jobs,
        buf,
        read_ok,
        failed,
    } = chunk;
    let data = buf.as_mut();
    for run in runs(jobs.len(), |i| jobs[i].cblock == jobs[i - 1].cblock + 1) {
        let bad = with_retries(run, retries, |r| {
            let at = geo.fast_at(jobs[r.start].cblock).unwrap_or(u64::MAX);
            fast.read_at(&mut data[r.start * bs..r.end * bs], at)
        });
        for (i, e) in bad {
            read_ok[i] = false;
            failed.push(Failure {
                job: jobs[i],
                cause: Cause::Read(io_error(fast, geo.fast_at(jobs[i].cblock), &e)),
            });
        }
    }
}

fn write_chunk(
    origin: &dyn DataDevice,
    geo: &Geometry,
    retries: u32,
    chunk: &mut Chunk,
    copied: &mut Vec<u64>,
) {
    let bs = geo.block_bytes as usize;
    let Chunk {
        jobs,
        buf,
        read_ok,
        failed,
    } = chunk;
    let data = buf.as_ref();
    // A block that was not read breaks the run: it is left as it is.
    for run in runs(jobs.len(), |i| {
        jobs[i].oblock == jobs[i - 1].oblock + 1 && read_ok[i] && read_ok[i - 1]
    }) {
        if !read_ok[run.start] {
            continue;
        }
        let bad = with_retries(run.clone(), retries, |r| {
            let at = geo.origin_at(jobs[r.start].oblock).unwrap_or(u64::MAX);
            origin.write_at(&data[r.start * bs..r.end * bs], at)
        });
        let mut bad_at = bad.iter().map(|(i, _)| *i).peekable();
        for i in run {
            if bad_at.peek() == Some(&i) {
                bad_at.next();
            } else {
                copied.push(jobs[i].cblock);
            }
        }
        for (i, e) in bad {
            failed.push(Failure {
                job: jobs[i],
                cause: Cause::Write(io_error(origin, geo.origin_at(jobs[i].oblock), &e)),
            });
        }
    }
}

fn io_error(dev: &dyn DataDevice, at: Option<u64>, e: &io::Error) -> String {
    match at {
        Some(at) => format!("'{}' at byte {at}: {e}", dev.path().display()),
        None => format!("'{}': {e}", dev.path().display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An in-memory device recording its I/O, failing where told.
    struct Mem {
        data: Mutex<Vec<u8>>,
        /// Byte ranges whose I/O fails, and how many more times (None:
        /// always).
        bad: Mutex<Vec<(std::ops::Range<u64>, Option<u32>)>>,
        ios: Mutex<Vec<(u64, usize)>>,
        path: PathBuf,
    }

    impl Mem {
        fn new(data: Vec<u8>) -> Mem {
            Mem {
                data: Mutex::new(data),
                bad: Mutex::new(Vec::new()),
                ios: Mutex::new(Vec::new()),
                path: PathBuf::from("mem"),
            }
        }
        fn fails(&self, at: u64, len: usize) -> bool {
            let mut bad = self.bad.lock().unwrap();
            for (r, times) in bad.iter_mut() {
                if r.start < at + len as u64 && at < r.end {
                    match times {
                        None => return true,
                        Some(0) => {}
                        Some(n) => {
                            *n -= 1;
                            return true;
                        }
                    }
                }
            }
            false
        }
    }

    impl DataDevice for Mem {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.ios.lock().unwrap().push((offset, buf.len()));
            if self.fails(offset, buf.len()) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let d = self.data.lock().unwrap();
            buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
            Ok(())
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            self.ios.lock().unwrap().push((offset, buf.len()));
            if self.fails(offset, buf.len()) {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let mut d = self.data.lock().unwrap();
            d[offset as usize..offset as usize + buf.len()].copy_from_slice(buf);
            Ok(())
        }
        fn sync(&self) -> io::Result<()> {
            Ok(())
        }
        fn size(&self) -> u64 {
            self.data.lock().unwrap().len() as u64
        }
        fn path(&self) -> &Path {
            &self.path
        }
    }

    const BS: u64 = 512;

    /// Block i of a device filled with `tag`: every byte `tag ^ i`.
    fn filled(nr: u64, tag: u8) -> Vec<u8> {
        (0..nr * BS).map(|b| tag ^ (b / BS) as u8).collect()
    }

    fn geo() -> Geometry {
        Geometry {
            block_bytes: BS,
            fast_offset: 0,
            origin_offset: 0,
        }
    }

    fn block(d: &Mem, i: u64) -> Vec<u8> {
        d.data.lock().unwrap()[(i * BS) as usize..((i + 1) * BS) as usize].to_vec()
    }

    #[test]
    fn runs_split_where_the_link_breaks() {
        let v = [1, 2, 3, 7, 8, 10];
        assert_eq!(
            runs(v.len(), |i| v[i] == v[i - 1] + 1),
            vec![0..3, 3..5, 5..6]
        );
        assert_eq!(runs(0, |_| true), vec![]);
    }

    #[test]
    fn copies_each_block_to_its_origin_block_in_merged_runs() {
        let fast = Mem::new(filled(16, 0xa0));
        let origin = Mem::new(filled(64, 0x50));
        // Cache blocks 0..4 hold origin 10..14 (one read, one write);
        // 8 and 5 hold 20 and 21 (two reads, one write).
        let jobs = vec![
            Job {
                cblock: 8,
                oblock: 20,
            },
            Job {
                cblock: 0,
                oblock: 10,
            },
            Job {
                cblock: 1,
                oblock: 11,
            },
            Job {
                cblock: 2,
                oblock: 12,
            },
            Job {
                cblock: 3,
                oblock: 13,
            },
            Job {
                cblock: 5,
                oblock: 21,
            },
        ];
        let opts = CopyOptions {
            buffer_bytes: 64 * BS,
            retry_count: 0,
        };
        let out = copy_blocks(&fast, &origin, jobs.clone(), geo(), opts, &Progress::none());
        assert!(out.failed.is_empty() && out.flush_error.is_none());
        assert_eq!(out.copied, vec![0, 1, 2, 3, 5, 8]);
        for j in &jobs {
            assert_eq!(block(&origin, j.oblock), block(&fast, j.cblock));
        }
        for o in (0..64).filter(|o| !jobs.iter().any(|j| j.oblock == *o)) {
            assert_eq!(block(&origin, o), vec![0x50 ^ o as u8; BS as usize], "{o}");
        }
        let reads = fast.ios.lock().unwrap().clone();
        assert_eq!(
            reads,
            vec![(0, 4 * BS as usize), (8 * BS, 512), (5 * BS, 512)]
        );
        let writes = origin.ios.lock().unwrap().clone();
        assert_eq!(
            writes,
            vec![(10 * BS, 4 * BS as usize), (20 * BS, 2 * BS as usize)]
        );
    }

    #[test]
    fn a_small_buffer_cuts_runs_into_chunks() {
        let fast = Mem::new(filled(16, 1));
        let origin = Mem::new(filled(16, 2));
        let jobs: Vec<Job> = (0..10)
            .map(|c| Job {
                cblock: c,
                oblock: c,
            })
            .collect();
        // Four chunks of 3 blocks in 12 blocks of buffer.
        let opts = CopyOptions {
            buffer_bytes: 12 * BS,
            retry_count: 0,
        };
        let out = copy_blocks(&fast, &origin, jobs, geo(), opts, &Progress::none());
        assert_eq!(out.copied, (0..10).collect::<Vec<_>>());
        let sizes: Vec<usize> = origin.ios.lock().unwrap().iter().map(|w| w.1).collect();
        assert_eq!(sizes, vec![1536, 1536, 1536, 512]);
        assert_eq!(block(&origin, 9), block(&fast, 9));
    }

    #[test]
    fn a_failing_block_costs_only_itself() {
        let fast = Mem::new(filled(16, 1));
        let origin = Mem::new(filled(16, 2));
        // Reading cache block 3 and writing origin block 7 always fail.
        fast.bad.lock().unwrap().push((3 * BS..3 * BS + 1, None));
        origin
            .bad
            .lock()
            .unwrap()
            .push((7 * BS + 100..7 * BS + 101, None));
        let jobs: Vec<Job> = (0..10)
            .map(|c| Job {
                cblock: c,
                oblock: c,
            })
            .collect();
        let opts = CopyOptions {
            buffer_bytes: 64 * BS,
            retry_count: 2,
        };
        let out = copy_blocks(&fast, &origin, jobs, geo(), opts, &Progress::none());
        assert_eq!(out.copied, vec![0, 1, 2, 4, 5, 6, 8, 9]);
        assert_eq!(out.failed.len(), 2);
        assert_eq!(
            out.failed[0].job,
            Job {
                cblock: 3,
                oblock: 3
            }
        );
        assert!(matches!(out.failed[0].cause, Cause::Read(_)));
        assert_eq!(
            out.failed[1].job,
            Job {
                cblock: 7,
                oblock: 7
            }
        );
        assert!(matches!(out.failed[1].cause, Cause::Write(_)));
        assert_eq!(
            out.failed[0].to_string(),
            "cache block 3 (origin block 3): reading the fast device failed: \
             'mem' at byte 1536: Input/output error (os error 5)"
        );
        for b in [0, 1, 2, 4, 5, 6, 8, 9] {
            assert_eq!(block(&origin, b), block(&fast, b), "{b}");
        }
        // The failed blocks' origin blocks are untouched.
        assert_eq!(block(&origin, 3), vec![2 ^ 3; BS as usize]);
        assert_eq!(block(&origin, 7), vec![2 ^ 7; BS as usize]);
        // One read of the run, then block by block, then two retries of 3.
        let reads_of_3 = fast
            .ios
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, len)| *at <= 3 * BS && 3 * BS < at + *len as u64)
            .count();
        assert_eq!(reads_of_3, 1 + 1 + 2);
    }

    #[test]
    fn retries_overcome_a_transient_error() {
        for (retries, copied) in [(0, false), (1, false), (2, true)] {
            let fast = Mem::new(filled(4, 1));
            let origin = Mem::new(filled(4, 2));
            // The run read, the single read and one retry fail.
            fast.bad.lock().unwrap().push((BS..BS + 1, Some(3)));
            let jobs: Vec<Job> = (0..4)
                .map(|c| Job {
                    cblock: c,
                    oblock: c,
                })
                .collect();
            let opts = CopyOptions {
                buffer_bytes: 64 * BS,
                retry_count: retries,
            };
            let out = copy_blocks(&fast, &origin, jobs, geo(), opts, &Progress::none());
            assert_eq!(out.copied.contains(&1), copied, "{retries}");
            assert_eq!(out.failed.len(), (!copied) as usize);
        }
    }

    #[test]
    fn offsets_and_device_ends() {
        let fast = Mem::new(filled(8, 1));
        let origin = Mem::new(filled(8, 2));
        let g = Geometry {
            block_bytes: BS,
            fast_offset: 2 * BS,
            origin_offset: BS,
        };
        let jobs = vec![
            Job {
                cblock: 0,
                oblock: 0,
            },
            Job {
                cblock: 6,
                oblock: 1,
            }, // fast bytes past the end
            Job {
                cblock: 1,
                oblock: 7,
            }, // origin bytes past the end
        ];
        let opts = CopyOptions {
            buffer_bytes: 64 * BS,
            retry_count: 0,
        };
        let out = copy_blocks(&fast, &origin, jobs, g, opts, &Progress::none());
        assert_eq!(out.copied, vec![0]);
        assert_eq!(block(&origin, 1), block(&fast, 2));
        assert_eq!(
            out.failed
                .iter()
                .map(|f| f.cause.clone())
                .collect::<Vec<_>>(),
            vec![
                Cause::BeyondFast { size: 8 * BS },
                Cause::BeyondOrigin { size: 8 * BS }
            ]
        );
    }
}
