//! Opening outputs. Every tool that writes comes through here, so the rule
//! that protects a user's only copy of their metadata is kept in one
//! place: an output is never one of the tool's own inputs, under any
//! spelling (symlinks, hard links, `/proc/self/fd/N`, `./`), nor a block
//! device that overlaps one (the same device, a partition of it, a
//! device-mapper or loop device stacked on it, the device an input file's
//! file system lives on).
//!
//! The checks run before anything is opened for writing; text outputs are
//! truncated only after the opened file itself has been compared again,
//! so a path swapped in between cannot slip through.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::sink::FileSink;
use super::write_behind::WriteBehind;
use super::BLOCK_SIZE;

/// Smallest binary-metadata output accepted: ten metadata blocks.
pub const MIN_OUTPUT_BYTES: u64 = 10 * BLOCK_SIZE as u64;

/// What a path names, for comparing outputs with inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Identity {
    /// A block device, by its device number.
    Block { rdev: u64 },
    /// Anything else (regular file, character device, FIFO): by inode. A
    /// regular file also remembers the device its file system is on.
    Inode { dev: u64, ino: u64, regular: bool },
}

impl Identity {
    fn of(meta: &std::fs::Metadata) -> Identity {
        if meta.file_type().is_block_device() {
            Identity::Block { rdev: meta.rdev() }
        } else {
            Identity::Inode {
                dev: meta.dev(),
                ino: meta.ino(),
                regular: meta.file_type().is_file(),
            }
        }
    }

    /// None when the path does not exist (nothing to protect).
    fn of_path(path: &Path) -> Option<Identity> {
        std::fs::metadata(path).ok().map(|m| Identity::of(&m))
    }
}

/// Refuses an `output` that is, or overlaps, any of `inputs`. Inputs
/// that do not exist are skipped: their own checks report them.
pub fn check_distinct(output: &Path, inputs: &[&Path]) -> Result<()> {
    let Some(out) = Identity::of_path(output) else {
        return Ok(());
    };
    compare(output, out, inputs)
}

fn compare(output: &Path, out: Identity, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        let Some(inp) = Identity::of_path(input) else {
            continue;
        };
        if let Some(why) = clash(out, inp) {
            bail!(
                "refusing to write '{}': {why} '{}'; nothing was written \
                 (give an output that is not one of the inputs)",
                output.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Why writing `out` would change `inp`, if it would.
fn clash(out: Identity, inp: Identity) -> Option<String> {
    use Identity::*;
    match (out, inp) {
        (Inode { dev, ino, .. }, Inode { dev: d, ino: i, .. }) if dev == d && ino == i => {
            Some("it is the same file as the input".into())
        }
        (Block { rdev }, Block { rdev: r }) if rdev == r => {
            Some("it is the same device as the input".into())
        }
        (Block { rdev }, Block { rdev: r }) => block_overlap(rdev, r),
        (
            Block { rdev },
            Inode {
                dev,
                ino,
                regular: true,
            },
        ) => {
            if backs_loop(rdev, dev, ino) {
                return Some("it is a loop device backed by the input".into());
            }
            if rdev == dev || block_overlap(rdev, dev).is_some() {
                return Some("it holds the file system of the input".into());
            }
            None
        }
        (
            Inode {
                dev,
                ino,
                regular: true,
            },
            Block { rdev },
        ) => {
            if backs_loop(rdev, dev, ino) {
                return Some("it is the file behind the loop device of the input".into());
            }
            if rdev == dev || block_overlap(dev, rdev).is_some() {
                return Some("it lives in a file system on the input".into());
            }
            None
        }
        _ => None,
    }
}

/// A block device as sysfs describes it.
struct BlockNode {
    rdev: u64,
    dir: PathBuf,
}

impl BlockNode {
    fn new(rdev: u64) -> Option<BlockNode> {
        let link = PathBuf::from(format!(
            "/sys/dev/block/{}:{}",
            libc::major(rdev),
            libc::minor(rdev)
        ));
        let dir = std::fs::canonicalize(link).ok()?;
        Some(BlockNode { rdev, dir })
    }

    fn read_u64(&self, name: &str) -> Option<u64> {
        std::fs::read_to_string(self.dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// (whole disk, first sector, sectors) this device occupies when it
    /// is a disk or a partition.
    fn region(&self) -> Option<(u64, u64, u64)> {
        let size = self.read_u64("size")?;
        if self.dir.join("partition").exists() {
            let parent = self.dir.parent()?;
            let disk = read_dev(&parent.join("dev"))?;
            Some((disk, self.read_u64("start")?, size))
        } else {
            Some((self.rdev, 0, size))
        }
    }

    /// The devices this one is stacked on (device-mapper, md).
    fn slaves(&self) -> Vec<BlockNode> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("slaves")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                let dir = std::fs::canonicalize(e.ok()?.path()).ok()?;
                let rdev = read_dev(&dir.join("dev"))?;
                Some(BlockNode { rdev, dir })
            })
            .collect()
    }
}

/// Parses a sysfs `dev` file ("MAJ:MIN").
fn read_dev(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let (maj, min) = text.trim().split_once(':')?;
    Some(libc::makedev(maj.parse().ok()?, min.parse().ok()?))
}

/// Every device `rdev` is built from, itself included, and the regions
/// of the bottom ones. Bounded, so a sysfs loop cannot hang the tool.
fn stack(rdev: u64) -> (Vec<u64>, Vec<(u64, u64, u64)>) {
    let mut members = Vec::new();
    let mut regions = Vec::new();
    let mut todo: Vec<BlockNode> = BlockNode::new(rdev).into_iter().collect();
    while let Some(node) = todo.pop() {
        if members.len() > 256 || members.contains(&node.rdev) {
            continue;
        }
        members.push(node.rdev);
        let below = node.slaves();
        if below.is_empty() {
            regions.extend(node.region());
        }
        todo.extend(below);
    }
    if members.is_empty() {
        members.push(rdev);
    }
    (members, regions)
}

/// Whether two different block devices share sectors, as far as sysfs
/// can say: one is stacked on the other, or their bottom regions overlap
/// where at most one of them is stacked. Two logical volumes on one
/// physical volume share a disk but not sectors, and sysfs cannot tell
/// their offsets: they are not refused.
fn block_overlap(a: u64, b: u64) -> Option<String> {
    let (a_members, a_regions) = stack(a);
    let (b_members, b_regions) = stack(b);
    if a_members.contains(&b) {
        return Some("it is stacked on the input".into());
    }
    if b_members.contains(&a) {
        return Some("it lies beneath the input".into());
    }
    let a_stacked = a_members.len() > 1;
    let b_stacked = b_members.len() > 1;
    if a_stacked && b_stacked {
        return None;
    }
    let overlaps = a_regions.iter().any(|&(disk, start, len)| {
        b_regions
            .iter()
            .any(|&(d, s, l)| d == disk && start < s + l && s < start + len)
    });
    overlaps.then(|| "it overlaps the input".into())
}

/// Whether `rdev`, or a device it is stacked on, is a loop device whose
/// backing file is (dev, ino).
fn backs_loop(rdev: u64, dev: u64, ino: u64) -> bool {
    stack(rdev).0.into_iter().any(|member| {
        let Some(node) = BlockNode::new(member) else {
            return false;
        };
        let Ok(backing) = std::fs::read_to_string(node.dir.join("loop/backing_file")) else {
            return false;
        };
        std::fs::metadata(backing.trim()).is_ok_and(|m| m.dev() == dev && m.ino() == ino)
    })
}

/// An output for binary metadata must exist (it is never created) and be
/// a regular file or block device.
fn existing_output(output: &Path) -> Result<std::fs::Metadata> {
    let meta = match std::fs::metadata(output) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("Couldn't find output file '{}'", output.display())
        }
        Err(e) => bail!("{}: {e}", output.display()),
    };
    if !meta.file_type().is_file() && !meta.file_type().is_block_device() {
        bail!("Not a block device or regular file '{}'", output.display());
    }
    Ok(meta)
}

/// The size in bytes of an existing binary-metadata output that is not
/// one of `inputs`, found without opening it for writing: what a writer
/// checks its needs against before it touches the output.
pub fn metadata_output_size(output: &Path, inputs: &[&Path]) -> Result<u64> {
    let meta = existing_output(output)?;
    compare(output, Identity::of(&meta), inputs)?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    let file = File::open(output).with_context(|| format!("cannot open '{}'", output.display()))?;
    super::source::block_device_size(&file)
}

/// Opens an existing file or block device for binary metadata: it must
/// exist (it is never created), be a regular file or block device, hold
/// at least ten blocks, and not be one of `inputs`. Returns the sink and
/// the whole blocks it holds (writers cap that at what their space map
/// can describe).
pub fn metadata_output(output: &Path, inputs: &[&Path]) -> Result<(FileSink, u64)> {
    let meta = existing_output(output)?;
    compare(output, Identity::of(&meta), inputs)?;
    let sink = FileSink::open(output)?;
    let bytes = sink.len()?;
    if bytes < MIN_OUTPUT_BYTES {
        bail!(
            "Output file too small: '{}' holds {bytes} bytes, at least {MIN_OUTPUT_BYTES} are needed",
            output.display()
        );
    }
    Ok((sink, bytes / BLOCK_SIZE as u64))
}

/// Creates (or truncates) an output in place, after checking it is not
/// one of `inputs`: for outputs written block by block (unpack onto a
/// device) where a scratch copy is not wanted. The file is opened
/// without truncation, compared again by what was opened, and only then
/// emptied.
pub fn text_output(output: &Path, inputs: &[&Path]) -> Result<File> {
    check_distinct(output, inputs)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(output)
        .with_context(|| format!("cannot create '{}'", output.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot create '{}'", output.display()))?;
    compare(output, Identity::of(&meta), inputs)?;
    if meta.file_type().is_file() {
        file.set_len(0)
            .with_context(|| format!("cannot truncate '{}'", output.display()))?;
    }
    Ok(file)
}

/// A text or pack output that replaces a regular file only when the
/// run succeeds: it is written to a scratch file beside the target and
/// renamed over it by `commit`, so a run that fails part way (damage
/// found half-way through a dump) leaves the earlier file as it was.
/// Devices, pipes and `/dev/null` are written in place.
pub struct ReplacingOutput {
    file: File,
    /// (scratch, target) while the scratch file is not yet renamed.
    pending: Option<(PathBuf, PathBuf)>,
}

impl ReplacingOutput {
    /// Checks `output` against `inputs` and opens what will replace it.
    pub fn create(output: &Path, inputs: &[&Path]) -> Result<ReplacingOutput> {
        check_distinct(output, inputs)?;
        let existing = std::fs::metadata(output).ok();
        let regular_or_new = existing.as_ref().is_none_or(|m| m.file_type().is_file());
        if !regular_or_new {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(output)
                .with_context(|| format!("cannot open '{}'", output.display()))?;
            compare(output, Identity::of(&file.metadata()?), inputs)?;
            return Ok(ReplacingOutput {
                file,
                pending: None,
            });
        }
        // Through a symlink, the file it names is what gets replaced.
        let target = match &existing {
            Some(_) => std::fs::canonicalize(output)
                .with_context(|| format!("cannot resolve '{}'", output.display()))?,
            None => output.to_path_buf(),
        };
        if existing.is_some() {
            // Permission to replace the file is asked of the file itself,
            // as writing it in place would.
            if !writable(&target) {
                let e = std::io::Error::from_raw_os_error(libc::EACCES);
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("cannot write '{}'", output.display()));
            }
        }
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = target.file_name().unwrap_or_default().to_string_lossy();
        let scratch = dir.join(format!(".{name}.dmpd-{}", std::process::id()));
        let file = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&scratch)
        {
            Ok(f) => f,
            // A writable file in a folder we may not add to: in place.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && existing.is_some() => {
                return Ok(ReplacingOutput {
                    file: text_output(output, inputs)?,
                    pending: None,
                });
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create '{}'", output.display()))
            }
        };
        if let Some(m) = &existing {
            // The replacement keeps the old file's mode and, where we
            // may set it, its owner.
            let _ = std::fs::set_permissions(&scratch, m.permissions());
            let _ = std::os::unix::fs::chown(&scratch, Some(m.uid()), Some(m.gid()));
        }
        Ok(ReplacingOutput {
            file,
            pending: Some((scratch, target)),
        })
    }

    /// The scratch file's descriptor, when the output is one that
    /// `commit` will make durable: its writeback may start early.
    pub fn writeback_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.pending.as_ref().map(|_| self.file.as_raw_fd())
    }

    /// Makes the output durable and puts it in place.
    pub fn commit(mut self) -> Result<()> {
        if let Some((scratch, target)) = self.pending.take() {
            let done = self
                .file
                .sync_all()
                .and_then(|()| std::fs::rename(&scratch, &target));
            if let Err(e) = done {
                let _ = std::fs::remove_file(&scratch);
                return Err(e).with_context(|| format!("cannot write '{}'", target.display()));
            }
        }
        Ok(())
    }
}

/// Runs `write` on a text output: the file `path`, replaced only when
/// `write` succeeds (see `ReplacingOutput`), or stdout without one. The
/// bytes are written by a thread of their own while `write` formats more.
pub fn write_text<T>(
    path: Option<&Path>,
    inputs: &[&Path],
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    match path {
        Some(path) => {
            let file = ReplacingOutput::create(path, inputs).context("output error")?;
            let fd = file.writeback_fd();
            let mut out = WriteBehind::new(file, fd);
            let done = write(&mut out)?;
            let file = out.finish().context("output error")?;
            file.commit().context("output error")?;
            Ok(done)
        }
        None => {
            let mut out = WriteBehind::new(std::io::stdout(), None);
            let done = write(&mut out)?;
            out.finish().context("output error")?;
            Ok(done)
        }
    }
}

/// Whether this process may write `path` (access(2), which honours the
/// real user, as the open in place would).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path for the call's duration.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

impl std::io::Write for ReplacingOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for ReplacingOutput {
    fn drop(&mut self) {
        if let Some((scratch, _)) = self.pending.take() {
            let _ = std::fs::remove_file(scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn scratch(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("dmpd-output-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn every_spelling_of_the_input_is_refused() {
        let d = scratch("spellings");
        let input = d.0.join("pool.bin");
        std::fs::write(&input, b"metadata").unwrap();
        std::os::unix::fs::symlink(&input, d.0.join("link")).unwrap();
        std::fs::hard_link(&input, d.0.join("hard")).unwrap();
        let f = File::open(&input).unwrap();
        let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
        let dotted = d.0.join(".").join("pool.bin");
        for out in [
            input.clone(),
            d.0.join("link"),
            d.0.join("hard"),
            PathBuf::from(fd),
            dotted,
        ] {
            let e = text_output(&out, &[&input]).unwrap_err().to_string();
            assert!(e.contains("same file as the input"), "{out:?}: {e}");
            assert!(e.contains(&*input.to_string_lossy()), "{e}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), b"metadata");
    }

    #[test]
    fn a_distinct_output_is_created_and_truncated() {
        let d = scratch("distinct");
        let input = d.0.join("in");
        let out = d.0.join("out");
        std::fs::write(&input, b"x").unwrap();
        std::fs::write(&out, b"old contents").unwrap();
        text_output(&out, &[&input]).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), 0);
        text_output(&d.0.join("new"), &[&input, &d.0.join("missing")]).unwrap();
        assert!(d.0.join("new").exists());
    }

    #[test]
    fn metadata_outputs_are_guarded_before_sizing() {
        let d = scratch("meta");
        let input = d.0.join("in");
        std::fs::write(&input, vec![7u8; 4096]).unwrap();
        let e = metadata_output(&input, &[&input])
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("same file"), "{e}");
        assert_eq!(std::fs::read(&input).unwrap(), vec![7u8; 4096]);
    }

    #[test]
    fn a_failed_run_leaves_the_earlier_output() {
        use std::io::Write;
        let d = scratch("replacing");
        let input = d.0.join("in");
        let out = d.0.join("out");
        std::fs::write(&input, b"x").unwrap();
        std::fs::write(&out, b"earlier").unwrap();
        let mut o = ReplacingOutput::create(&out, &[&input]).unwrap();
        o.write_all(b"half a dump").unwrap();
        drop(o);
        assert_eq!(std::fs::read(&out).unwrap(), b"earlier");
        assert_eq!(
            std::fs::read_dir(&d.0).unwrap().count(),
            2,
            "scratch file left"
        );
        // Through a symlink: the target is replaced, the link stays.
        let link = d.0.join("link");
        std::os::unix::fs::symlink(&out, &link).unwrap();
        let mut o = ReplacingOutput::create(&link, &[&input]).unwrap();
        o.write_all(b"new").unwrap();
        o.commit().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        // The same guard as every writer.
        let e = ReplacingOutput::create(&input, &[&input]).err().unwrap();
        assert!(e.to_string().contains("same file"), "{e}");
    }

    #[test]
    fn character_devices_are_not_inputs() {
        let d = scratch("null");
        let input = d.0.join("in");
        std::fs::write(&input, b"x").unwrap();
        assert!(text_output(Path::new("/dev/null"), &[&input]).is_ok());
    }
}
