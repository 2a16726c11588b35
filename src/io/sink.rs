//! Writing metadata blocks. Writers build a new transaction in blocks the
//! old one does not use, flush, and only then write the superblock: the
//! `BlockSink` trait is what they write through, so tests can substitute
//! sinks that lose power part way.

use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, Result};

use super::BLOCK_SIZE;

pub trait BlockSink {
    /// Writes one 4096-byte block at block number `b`.
    fn write_block(&mut self, b: u64, data: &[u8]) -> std::io::Result<()>;
    /// Makes every write so far durable.
    fn flush(&mut self) -> std::io::Result<()>;
}

/// A metadata file or block device opened for writing. Runs of
/// consecutive blocks are gathered and handed to a writer thread, which
/// writes them and starts their writeback at once: building the next
/// blocks overlaps the copy into the page cache and the disk's work, and
/// the flush before the superblock finds little left to do.
pub struct FileSink {
    file: File,
    pending: Vec<u8>,
    pending_start: u64,
    writer: Option<Writer>,
}

/// Bytes gathered before a write goes out.
const GATHER: usize = 1 << 20;
/// Gathered writes queued for the writer thread before the builder waits.
const QUEUED: usize = 4;

enum Job {
    Write(u64, Vec<u8>),
    /// Make everything written so far durable and say how that went.
    Sync(std::sync::mpsc::SyncSender<std::io::Result<()>>),
}

struct Writer {
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Buffers the writer is done with, for reuse: fresh 4 MiB buffers
    /// would each cost hundreds of page faults.
    spent: std::sync::mpsc::Receiver<Vec<u8>>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn spawn(file: File) -> Writer {
        let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(QUEUED);
        let (spent_tx, spent) = std::sync::mpsc::channel::<Vec<u8>>();
        let thread = std::thread::spawn(move || {
            // The first failure is kept and reported at the next sync;
            // later writes are skipped.
            let mut failed: Option<std::io::Error> = None;
            for job in job_rx {
                match job {
                    Job::Write(offset, mut buf) => {
                        if failed.is_none() {
                            match file.write_all_at(&buf, offset) {
                                Ok(()) => start_writeback(&file, offset, buf.len()),
                                Err(e) => failed = Some(e),
                            }
                        }
                        buf.clear();
                        let _ = spent_tx.send(buf);
                    }
                    Job::Sync(reply) => {
                        let r = match failed.take() {
                            Some(e) => Err(e),
                            None => file.sync_data(),
                        };
                        let _ = reply.send(r);
                    }
                }
            }
        });
        Writer {
            jobs,
            spent,
            thread,
        }
    }
}

fn writer_gone() -> std::io::Error {
    std::io::Error::other("the writer thread stopped")
}

impl FileSink {
    /// Opens `path` read-write; block devices exclusively, so a device an
    /// active pool holds is refused.
    pub fn open(path: &Path) -> Result<FileSink> {
        FileSink::open_with(path, true)
    }

    /// Opens `path` read-write without O_EXCL, for a device this process
    /// already holds exclusively through another descriptor (the checker's
    /// read-only view of the metadata it is repairing): a second O_EXCL
    /// open of the same block device fails with EBUSY, while the claim
    /// held still keeps a pool from activating on it meanwhile.
    pub fn open_held(path: &Path) -> Result<FileSink> {
        FileSink::open_with(path, false)
    }

    fn open_with(path: &Path, exclusive: bool) -> Result<FileSink> {
        let is_block_device = std::fs::metadata(path)
            .with_context(|| format!("cannot open '{}'", path.display()))?
            .file_type()
            .is_block_device();
        let mut open = std::fs::OpenOptions::new();
        open.read(true).write(true);
        if is_block_device && exclusive {
            open.custom_flags(libc::O_EXCL);
        }
        let file = open
            .open(path)
            .with_context(|| format!("cannot open '{}' for writing", path.display()))?;
        let writer = Writer::spawn(
            file.try_clone()
                .with_context(|| format!("cannot open '{}' for writing", path.display()))?,
        );
        Ok(FileSink {
            file,
            pending: Vec::with_capacity(GATHER),
            pending_start: 0,
            writer: Some(writer),
        })
    }

    /// Size of the file or device in bytes.
    pub fn len(&self) -> Result<u64> {
        let meta = self.file.metadata()?;
        if meta.file_type().is_block_device() {
            super::source::block_device_size(&self.file)
        } else {
            Ok(meta.len())
        }
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    fn writer(&self) -> std::io::Result<&Writer> {
        self.writer.as_ref().ok_or_else(writer_gone)
    }

    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let writer = self.writer.as_ref().ok_or_else(writer_gone)?;
        let next = writer
            .spent
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(GATHER));
        let full = std::mem::replace(&mut self.pending, next);
        let offset = self.pending_start * BLOCK_SIZE as u64;
        writer
            .jobs
            .send(Job::Write(offset, full))
            .map_err(|_| writer_gone())
    }
}

/// Asks the kernel to start writing a range out now, without waiting for
/// it to finish. Only a hint: errors surface at the flush.
fn start_writeback(file: &File, offset: u64, len: usize) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor we own; it reads no
    // memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// A borrowed sink is a sink (writers that take one by value can be
/// handed `&mut` of a test's).
impl<T: BlockSink + ?Sized> BlockSink for &mut T {
    fn write_block(&mut self, b: u64, data: &[u8]) -> std::io::Result<()> {
        (**self).write_block(b, data)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        (**self).flush()
    }
}

impl BlockSink for FileSink {
    fn write_block(&mut self, b: u64, data: &[u8]) -> std::io::Result<()> {
        debug_assert_eq!(data.len(), BLOCK_SIZE);
        let next = self.pending_start + (self.pending.len() / BLOCK_SIZE) as u64;
        if self.pending.is_empty() || b != next || self.pending.len() >= GATHER {
            self.write_pending()?;
            self.pending_start = b;
        }
        self.pending.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.write_pending()?;
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.writer()?
            .jobs
            .send(Job::Sync(reply))
            .map_err(|_| writer_gone())?;
        answer.recv().map_err(|_| writer_gone())?
    }
}

impl Drop for FileSink {
    /// Unflushed writes still go out (as a file's would); only a flush
    /// makes them durable.
    fn drop(&mut self) {
        let _ = self.write_pending();
        if let Some(w) = self.writer.take() {
            drop(w.jobs);
            let _ = w.thread.join();
        }
    }
}

/// An in-memory image, for tests: writes land in `image`; after `limit`
/// writes every further write and flush fails, as if power were lost.
pub struct MemorySink<'a> {
    pub image: &'a mut Vec<u8>,
    pub limit: Option<usize>,
    pub writes: usize,
}

impl BlockSink for MemorySink<'_> {
    fn write_block(&mut self, b: u64, data: &[u8]) -> std::io::Result<()> {
        if self.limit.is_some_and(|l| self.writes >= l) {
            return Err(std::io::Error::other("simulated power loss"));
        }
        self.writes += 1;
        let off = b as usize * BLOCK_SIZE;
        self.image[off..off + BLOCK_SIZE].copy_from_slice(data);
        Ok(())
    }

    /// Writes land at once; only refused writes are lost.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An in-memory image whose writes stay volatile until flushed, for
/// tests: after `limit` writes, power is lost and every write since the
/// last flush is dropped.
pub struct VolatileSink<'a> {
    pub image: &'a mut Vec<u8>,
    pub limit: Option<usize>,
    pub writes: usize,
    pending: Vec<(u64, Vec<u8>)>,
}

impl<'a> VolatileSink<'a> {
    pub fn new(image: &'a mut Vec<u8>, limit: Option<usize>) -> VolatileSink<'a> {
        VolatileSink {
            image,
            limit,
            writes: 0,
            pending: Vec::new(),
        }
    }
}

impl BlockSink for VolatileSink<'_> {
    fn write_block(&mut self, b: u64, data: &[u8]) -> std::io::Result<()> {
        if self.limit.is_some_and(|l| self.writes >= l) {
            self.pending.clear();
            return Err(std::io::Error::other("simulated power loss"));
        }
        self.writes += 1;
        self.pending.push((b, data.to_vec()));
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for (b, data) in self.pending.drain(..) {
            let off = b as usize * BLOCK_SIZE;
            self.image[off..off + BLOCK_SIZE].copy_from_slice(&data);
        }
        Ok(())
    }
}
