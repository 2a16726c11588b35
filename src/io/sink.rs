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
/// consecutive blocks are gathered and written together.
pub struct FileSink {
    file: File,
    pending: Vec<u8>,
    pending_start: u64,
}

/// Bytes gathered before a write goes out.
const GATHER: usize = 4 << 20;

impl FileSink {
    /// Opens `path` read-write; block devices exclusively, so a device an
    /// active pool holds is refused.
    pub fn open(path: &Path) -> Result<FileSink> {
        let is_block_device = std::fs::metadata(path)
            .with_context(|| format!("cannot open '{}'", path.display()))?
            .file_type()
            .is_block_device();
        let mut open = std::fs::OpenOptions::new();
        open.read(true).write(true);
        if is_block_device {
            open.custom_flags(libc::O_EXCL);
        }
        let file = open
            .open(path)
            .with_context(|| format!("cannot open '{}' for writing", path.display()))?;
        Ok(FileSink {
            file,
            pending: Vec::new(),
            pending_start: 0,
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

    fn write_pending(&mut self) -> std::io::Result<()> {
        if !self.pending.is_empty() {
            self.file
                .write_all_at(&self.pending, self.pending_start * BLOCK_SIZE as u64)?;
            self.pending.clear();
        }
        Ok(())
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
        self.file.sync_data()
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
