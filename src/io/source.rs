//! A read-only, memory-mapped view of a metadata device or image. A block
//! is a borrowed 4096-byte slice of the mapping: nothing is copied on the
//! read path.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use memmap2::{Mmap, MmapMut, MmapOptions};

use super::checksum::{self, BlockKind};
use super::error::BlockError;
use super::{le_u64, BLOCK_SIZE};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Forgets the clean pages the page cache holds for a block device, so
/// what is read next comes from the disk. The kernel's targets write
/// their metadata through dm-bufio, straight to the device and past its
/// page cache: a page some earlier reader left cached (while a pool held
/// the device, say) can predate the kernel's last commit, and a -m
/// reader would then miss the metadata snapshot just reserved. Best
/// effort: pages another process has mapped stay.
pub fn drop_cached_pages(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: plain advice on an open descriptor; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// BLKGETSIZE64: the size of a block device in bytes.
const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;

enum Backing {
    File(Mmap),
    /// Decompressed input lives in an anonymous mapping.
    Anon(MmapMut),
    /// A zero-length input cannot be mapped.
    Empty,
}

pub struct BlockSource {
    backing: Backing,
    /// The file behind a `Backing::File`, for asking where its data is.
    file: Option<File>,
    /// A background read of ranges about to be walked (see `prefetch`).
    prefetch: std::sync::Mutex<Option<Prefetch>>,
    len: usize,
    nr_blocks: u64,
    path: PathBuf,
}

/// How to open a source.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    /// Open block devices with O_EXCL, so a device held by the kernel (a
    /// live pool) is refused.
    pub exclusive: bool,
}

impl BlockSource {
    /// Opens a file or block device read-only; gzip input is detected by
    /// its magic and decompressed into memory.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<BlockSource> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot open '{}'", path.display()))?;
        let is_block_device = meta.file_type().is_block_device();
        let mut open = std::fs::OpenOptions::new();
        open.read(true);
        if opts.exclusive && is_block_device {
            open.custom_flags(libc::O_EXCL);
        }
        let file = open
            .open(path)
            .with_context(|| format!("cannot open '{}'", path.display()))?;
        if is_block_device {
            drop_cached_pages(&file);
        }
        let size = if is_block_device {
            block_device_size(&file).with_context(|| format!("cannot size '{}'", path.display()))?
        } else {
            meta.len()
        };

        if size == 0 {
            return Ok(Self::from_backing(Backing::Empty, 0, path));
        }
        // SAFETY: the mapping is read-only; the tools document that the
        // metadata must not change underneath them (offline use, or -m on
        // the kernel's immutable metadata snapshot).
        let map = unsafe { MmapOptions::new().len(size as usize).map(&file) }
            .with_context(|| format!("cannot map '{}'", path.display()))?;
        if map.len() >= 2 && map[..2] == GZIP_MAGIC {
            return Self::gunzip(&map, path);
        }
        if super::pack::is_pack(&map) {
            return Self::unpack(&map, path);
        }
        // Where the page cache holds the file in huge pages, map them
        // whole: a walk in tree order touches the mapping all over, and a
        // TLB miss per 4 KiB block (a two-level walk under a hypervisor)
        // costs as much as checksumming the block. Only advice.
        // SAFETY: advice on our own mapping; it changes no contents.
        unsafe {
            libc::madvise(
                map.as_ptr() as *mut libc::c_void,
                map.len(),
                libc::MADV_HUGEPAGE,
            );
        }
        let len = map.len();
        let mut src = Self::from_backing(Backing::File(map), len, path);
        src.file = Some(file);
        Ok(src)
    }

    fn from_backing(backing: Backing, len: usize, path: &Path) -> BlockSource {
        BlockSource {
            backing,
            file: None,
            prefetch: std::sync::Mutex::new(None),
            len,
            nr_blocks: (len / BLOCK_SIZE) as u64,
            path: path.to_path_buf(),
        }
    }

    fn gunzip(compressed: &[u8], path: &Path) -> Result<BlockSource> {
        // The gzip trailer holds the uncompressed size modulo 2^32: a good
        // first guess, grown if the stream turns out longer.
        let n = compressed.len();
        let hint = if n >= 4 {
            u32::from_le_bytes(compressed[n - 4..].try_into().unwrap()) as usize
        } else {
            0
        };
        let mut capacity = hint.max(BLOCK_SIZE).next_multiple_of(BLOCK_SIZE);
        let mut out = MmapMut::map_anon(capacity)?;
        let mut len = 0;
        let mut decoder = flate2::read::MultiGzDecoder::new(compressed);
        loop {
            if len == capacity {
                capacity *= 2;
                let mut bigger = MmapMut::map_anon(capacity)?;
                bigger[..len].copy_from_slice(&out[..len]);
                out = bigger;
            }
            let got = decoder
                .read(&mut out[len..capacity])
                .with_context(|| format!("'{}': corrupt gzip stream", path.display()))?;
            if got == 0 {
                break;
            }
            len += got;
        }
        Ok(Self::from_backing(Backing::Anon(out), len, path))
    }

    /// A pack file, expanded into an anonymous mapping (untouched pages
    /// cost nothing, so the declared size may be large).
    fn unpack(packed: &[u8], path: &Path) -> Result<BlockSource> {
        let fail = |e: &dyn std::fmt::Display| anyhow::anyhow!("'{}': {e}", path.display());
        let nr_blocks = super::pack::read_header(packed).map_err(|e| fail(&e))?;
        let len = nr_blocks as usize * BLOCK_SIZE;
        if len == 0 {
            return Ok(Self::from_backing(Backing::Empty, 0, path));
        }
        let mut out = MmapMut::map_anon(len)?;
        super::pack::unpack_into(packed, &mut out).map_err(|e| fail(&e))?;
        Ok(Self::from_backing(Backing::Anon(out), len, path))
    }

    /// Wraps bytes already in memory (tests, unpacked images).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<BlockSource> {
        if bytes.is_empty() {
            return Ok(Self::from_backing(Backing::Empty, 0, path));
        }
        let mut out = MmapMut::map_anon(bytes.len())?;
        out.copy_from_slice(bytes);
        Ok(Self::from_backing(Backing::Anon(out), bytes.len(), path))
    }

    /// True when the blocks are a decompressed copy, not the file itself
    /// (so writing back to the file is impossible).
    pub fn is_decompressed(&self) -> bool {
        matches!(self.backing, Backing::Anon(_))
    }

    /// Block ranges that may hold data, in order. A sparse file's holes
    /// read as zeros and so cannot hold metadata: scanning every block
    /// (repair) skips them instead of faulting gigabytes of zeros into
    /// memory. Sources that cannot tell (block devices, decompressed
    /// input) give one range covering everything.
    pub fn data_extents(&self) -> Vec<std::ops::Range<u64>> {
        use std::os::fd::AsRawFd;
        let everything = std::iter::once(0..self.nr_blocks).collect::<Vec<_>>();
        let Some(file) = &self.file else {
            return everything;
        };
        if !file.metadata().is_ok_and(|m| m.is_file()) {
            return everything;
        }
        let fd = file.as_raw_fd();
        let end = self.len as i64;
        let bs = BLOCK_SIZE as u64;
        let mut out = Vec::new();
        let mut pos = 0i64;
        while pos < end {
            // SAFETY: lseek on a descriptor we own; nothing else reads
            // through its offset.
            let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
            if data < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                    break; // only a hole is left
                }
                return everything;
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole < 0 || hole <= data {
                return everything;
            }
            let first = data as u64 / bs;
            let last = (hole.min(end) as u64).div_ceil(bs).min(self.nr_blocks);
            if first < last {
                out.push(first..last);
            }
            pos = hole;
        }
        out
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn nr_blocks(&self) -> u64 {
        self.nr_blocks
    }

    /// Size of the input in bytes (after decompression).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first bytes of the input (all of it when shorter than `n`),
    /// for telling what a file that is not metadata holds.
    pub fn head(&self, n: usize) -> &[u8] {
        let bytes = self.bytes();
        &bytes[..n.min(bytes.len())]
    }

    fn bytes(&self) -> &[u8] {
        match &self.backing {
            Backing::File(m) => &m[..],
            Backing::Anon(m) => &m[..self.len],
            Backing::Empty => &[],
        }
    }

    /// Asks the CPU to start loading the first cache lines of block `b`
    /// (its header, where a node's kind and entry count live), so a walk
    /// that will soon read it does not stall on memory. Only a hint:
    /// out-of-range blocks are ignored and nothing is read here.
    #[inline]
    pub fn prefetch_header(&self, b: u64) {
        if b >= self.nr_blocks {
            return;
        }
        let bytes = self.bytes();
        let at = b as usize * BLOCK_SIZE;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `at` lies inside the mapping; a prefetch never faults
        // and has no effect on memory.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let p = bytes.as_ptr().add(at) as *const i8;
            _mm_prefetch(p, _MM_HINT_T0);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (bytes, at);
    }

    /// Blocks [first, first + count) as one slice.
    pub fn block_range(&self, first: u64, count: u64) -> Result<&[u8], BlockError> {
        let end = first.checked_add(count).filter(|&e| e <= self.nr_blocks);
        let Some(end) = end else {
            return Err(BlockError::OutOfBounds {
                block: first.saturating_add(count).saturating_sub(1),
                nr_blocks: self.nr_blocks,
            });
        };
        Ok(&self.bytes()[first as usize * BLOCK_SIZE..end as usize * BLOCK_SIZE])
    }

    /// The raw bytes of block `b`, unchecked.
    #[inline]
    pub fn block(&self, b: u64) -> Result<&[u8], BlockError> {
        if b >= self.nr_blocks {
            return Err(BlockError::OutOfBounds {
                block: b,
                nr_blocks: self.nr_blocks,
            });
        }
        let start = b as usize * BLOCK_SIZE;
        Ok(&self.bytes()[start..start + BLOCK_SIZE])
    }

    /// Block `b`, verified to carry the checksum of `kind` and to record
    /// its own location.
    #[inline]
    pub fn checked(&self, b: u64, kind: BlockKind) -> Result<&[u8], BlockError> {
        let data = self.block(b)?;
        if !checksum::matches(data, kind) {
            return Err(match checksum::kind_of(data) {
                Some(found) => BlockError::WrongKind {
                    block: b,
                    wanted: kind,
                    found,
                },
                None => BlockError::Checksum {
                    block: b,
                    wanted: kind,
                },
            });
        }
        let recorded = le_u64(data, kind.blocknr_offset());
        if recorded != b {
            return Err(BlockError::BlockNr {
                block: b,
                kind,
                recorded,
            });
        }
        Ok(data)
    }

    /// Reads `ranges` of blocks into memory on a background thread, in
    /// order, and maps them, so that a walk over them on a cold cache
    /// finds them resident instead of faulting them in one at a time in
    /// tree order (which costs far more than reading the same bytes in
    /// sequence). Best effort; a later call replaces an earlier one.
    /// `read` is told each time more blocks are in (for a progress bar);
    /// a source held in memory has them all in at once.
    pub fn prefetch(
        &self,
        ranges: Vec<std::ops::Range<u64>>,
        mut read: impl FnMut(u64) + Send + 'static,
    ) {
        let Backing::File(m) = &self.backing else {
            let nr_blocks = self.nr_blocks;
            read(
                ranges
                    .iter()
                    .map(|r| r.end.min(nr_blocks).saturating_sub(r.start))
                    .sum(),
            );
            return;
        };
        let base = m.as_ptr() as usize;
        let nr_blocks = self.nr_blocks;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            /// Blocks populated per call: small enough to stop promptly.
            const CHUNK: u64 = 1024;
            for r in ranges {
                let mut b = r.start.min(nr_blocks);
                let end = r.end.min(nr_blocks);
                while b < end {
                    if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let n = (end - b).min(CHUNK);
                    let addr = (base + b as usize * BLOCK_SIZE) as *mut libc::c_void;
                    let len = n as usize * BLOCK_SIZE;
                    // SAFETY: the range lies inside the mapping, which
                    // stays mapped until `drop` has joined this thread;
                    // both advices only read the file in.
                    unsafe {
                        if libc::madvise(addr, len, libc::MADV_POPULATE_READ) != 0 {
                            // Kernels before 5.14: start the reads at least.
                            libc::madvise(addr, len, libc::MADV_WILLNEED);
                        }
                    }
                    b += n;
                    read(n);
                }
            }
        });
        let old = self
            .prefetch
            .lock()
            .unwrap()
            .replace(Prefetch { stop, thread });
        if let Some(old) = old {
            old.finish();
        }
    }
}

struct Prefetch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Prefetch {
    fn finish(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

impl Drop for BlockSource {
    /// The prefetch thread must be done with the mapping before it goes.
    fn drop(&mut self) {
        if let Some(p) = self.prefetch.get_mut().ok().and_then(Option::take) {
            p.finish();
        }
    }
}

/// The size in bytes of an open block device.
pub fn block_device_size(file: &File) -> Result<u64> {
    use std::os::unix::io::AsRawFd;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if r != 0 {
        bail!(std::io::Error::last_os_error());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed_node(b: u64) -> Vec<u8> {
        let mut block = vec![0u8; BLOCK_SIZE];
        block[8..16].copy_from_slice(&b.to_le_bytes());
        checksum::seal(&mut block, BlockKind::BtreeNode);
        block
    }

    #[test]
    fn data_extents_skip_a_sparse_files_holes() {
        use std::os::unix::fs::FileExt;
        let dir = std::env::temp_dir().join(format!("dmpd-extents-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sparse.bin");
        let nr_blocks = 4096u64; // 16 MiB, mostly hole
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(nr_blocks * BLOCK_SIZE as u64).unwrap();
        for b in [0u64, 2000, 4095] {
            f.write_all_at(&sealed_node(b), b * BLOCK_SIZE as u64)
                .unwrap();
        }
        f.sync_all().unwrap();
        let src = BlockSource::open(&path, OpenOptions::default()).unwrap();
        let extents = src.data_extents();
        std::fs::remove_dir_all(&dir).unwrap();
        for b in [0u64, 2000, 4095] {
            assert!(extents.iter().any(|r| r.contains(&b)), "{b} in {extents:?}");
        }
        assert!(extents.windows(2).all(|w| w[0].end <= w[1].start));
        let covered: u64 = extents.iter().map(|r| r.end - r.start).sum();
        assert!(covered < nr_blocks / 2, "holes not skipped: {extents:?}");

        // Memory-backed sources cannot tell: everything.
        let mem = BlockSource::from_bytes(&vec![0u8; BLOCK_SIZE * 4], Path::new("mem")).unwrap();
        assert_eq!(mem.data_extents(), vec![0..4]);
    }

    #[test]
    fn prefetching_leaves_blocks_as_they_are_and_stops_with_the_source() {
        use std::os::unix::fs::FileExt;
        let dir = std::env::temp_dir().join(format!("dmpd-prefetch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("meta.bin");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(64 * BLOCK_SIZE as u64).unwrap();
        for b in [3u64, 40] {
            f.write_all_at(&sealed_node(b), b * BLOCK_SIZE as u64)
                .unwrap();
        }
        let src = BlockSource::open(&path, OpenOptions::default()).unwrap();
        // Ranges past the end are clipped; a second call replaces the first.
        let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = read.clone();
        src.prefetch(vec![0..10, 30..1000], |_| {});
        src.prefetch(std::iter::once(0..64).collect(), move |n| {
            counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(src.checked(3, BlockKind::BtreeNode).is_ok());
        assert!(src.checked(40, BlockKind::BtreeNode).is_ok());
        // Every block is reported read, once.
        let start = std::time::Instant::now();
        while read.load(std::sync::atomic::Ordering::Relaxed) < 64 && start.elapsed().as_secs() < 10
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(src); // joins the prefetch thread
        assert_eq!(read.load(std::sync::atomic::Ordering::Relaxed), 64);
        std::fs::remove_dir_all(&dir).unwrap();

        let mem = BlockSource::from_bytes(&sealed_node(0), Path::new("mem")).unwrap();
        // All in memory: told at once, clipped to the source.
        let (tx, rx) = std::sync::mpsc::channel();
        mem.prefetch(vec![0..1, 0..5], move |n| tx.send(n).unwrap());
        assert_eq!(rx.try_iter().collect::<Vec<u64>>(), vec![2]);
        assert!(mem.checked(0, BlockKind::BtreeNode).is_ok());
    }

    #[test]
    fn checked_reads_name_the_block() {
        let mut image = vec![0u8; BLOCK_SIZE * 3];
        image[BLOCK_SIZE..2 * BLOCK_SIZE].copy_from_slice(&sealed_node(1));
        image[2 * BLOCK_SIZE..].copy_from_slice(&sealed_node(7));
        let src = BlockSource::from_bytes(&image, Path::new("mem")).unwrap();
        assert!(src.checked(1, BlockKind::BtreeNode).is_ok());
        assert_eq!(
            src.checked(1, BlockKind::Bitmap).unwrap_err(),
            BlockError::WrongKind {
                block: 1,
                wanted: BlockKind::Bitmap,
                found: BlockKind::BtreeNode
            }
        );
        assert_eq!(
            src.checked(0, BlockKind::BtreeNode).unwrap_err(),
            BlockError::Checksum {
                block: 0,
                wanted: BlockKind::BtreeNode
            }
        );
        assert_eq!(
            src.checked(2, BlockKind::BtreeNode).unwrap_err(),
            BlockError::BlockNr {
                block: 2,
                kind: BlockKind::BtreeNode,
                recorded: 7
            }
        );
        assert_eq!(
            src.checked(3, BlockKind::BtreeNode).unwrap_err(),
            BlockError::OutOfBounds {
                block: 3,
                nr_blocks: 3
            }
        );
    }

    #[test]
    fn gzip_input_is_decompressed() {
        use std::io::Write;
        let mut image = vec![0u8; BLOCK_SIZE * 2];
        image[BLOCK_SIZE..].copy_from_slice(&sealed_node(1));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&image).unwrap();
        let gz = enc.finish().unwrap();
        let dir = std::env::temp_dir().join(format!("dmpd-src-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("img.gz");
        std::fs::write(&path, gz).unwrap();
        let src = BlockSource::open(&path, OpenOptions::default()).unwrap();
        assert_eq!(src.nr_blocks(), 2);
        assert!(src.checked(1, BlockKind::BtreeNode).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
