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
