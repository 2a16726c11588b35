//! Telling storage that byte ranges hold nothing worth keeping: a discard
//! on a block device, a punched hole in a regular file.

use std::fs::File;
use std::os::unix::io::AsRawFd;

/// BLKDISCARD: discard a [start, length) byte range of a block device.
const BLKDISCARD: libc::c_ulong = 0x1277;

pub fn discard(file: &File, is_block_device: bool, offset: u64, len: u64) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    let r = if is_block_device {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKDISCARD reads two u64s through the pointer.
        unsafe { libc::ioctl(fd, BLKDISCARD as _, range.as_ptr()) }
    } else {
        // SAFETY: plain syscall on an open descriptor.
        unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        }
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// BLKZEROOUT: write zeros over a [start, length) byte range of a block
/// device (the device may do it without data crossing the bus).
const BLKZEROOUT: libc::c_ulong = 0x127f;

/// Makes a byte range read as zeros: BLKZEROOUT on a block device, a
/// punched hole in a regular file; where neither is supported, zeros are
/// written. Offsets and lengths are multiples of 512 bytes.
pub fn zero(file: &File, is_block_device: bool, offset: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    let r = if is_block_device {
        let range: [u64; 2] = [offset, len];
        // SAFETY: BLKZEROOUT reads two u64s through the pointer.
        unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) }
    } else {
        // SAFETY: plain syscall on an open descriptor.
        unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        }
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOTTY) | Some(libc::EINVAL) => {
            write_zeros(file, offset, len)
        }
        _ => Err(e),
    }
}

/// Writes zeros over a range, a megabyte at a time (the buffer is
/// aligned, so a file opened for direct I/O takes it).
fn write_zeros(file: &File, offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 1 << 20;
    let buf = super::copy::AlignedBuf::zeroed(CHUNK as usize);
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        file.write_all_at(&buf.as_slice()[..n as usize], offset + done)?;
        done += n;
    }
    Ok(())
}
