//! Asking device-mapper about a device: its table and flags, through the
//! DM_TABLE_STATUS ioctl on /dev/mapper/control (the layout of
//! `struct dm_ioctl` and `struct dm_target_spec` in the kernel's
//! include/uapi/linux/dm-ioctl.h, interface version 4).

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Size of `struct dm_ioctl`.
const HEADER: usize = 312;
/// Size of `struct dm_target_spec`, before its parameter string.
const SPEC: usize = 40;

const OFF_VERSION: usize = 0;
const OFF_DATA_SIZE: usize = 12;
const OFF_DATA_START: usize = 16;
const OFF_TARGET_COUNT: usize = 20;
const OFF_FLAGS: usize = 28;
const OFF_DEV: usize = 40;
const OFF_NAME: usize = 48;
const NAME_LEN: usize = 128;

pub const DM_READONLY_FLAG: u32 = 1 << 0;
pub const DM_SUSPEND_FLAG: u32 = 1 << 1;
/// Ask for the table rather than the targets' status lines.
pub const DM_STATUS_TABLE_FLAG: u32 = 1 << 4;
pub const DM_ACTIVE_PRESENT_FLAG: u32 = 1 << 5;
pub const DM_BUFFER_FULL_FLAG: u32 = 1 << 8;

/// _IOWR(0xfd, 12, struct dm_ioctl).
pub const DM_TABLE_STATUS: libc::c_ulong =
    (3 << 30) | ((HEADER as libc::c_ulong) << 16) | (0xfd << 8) | 12;

/// The kernel's encoding of a device number in `dm_ioctl.dev`
/// (huge_encode_dev).
pub fn encode_dev(major: u32, minor: u32) -> u64 {
    let (major, minor) = (major as u64, minor as u64);
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// The inverse of `encode_dev`.
pub fn decode_dev(dev: u64) -> (u32, u32) {
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    (major, minor)
}

/// A DM_TABLE_STATUS request for device (major, minor), in a buffer of
/// `size` bytes.
pub fn table_request(major: u32, minor: u32, size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size.max(HEADER)];
    for (i, v) in [4u32, 0, 0].iter().enumerate() {
        put_u32(&mut buf, OFF_VERSION + 4 * i, *v);
    }
    let len = buf.len() as u32;
    put_u32(&mut buf, OFF_DATA_SIZE, len);
    put_u32(&mut buf, OFF_DATA_START, HEADER as u32);
    put_u32(&mut buf, OFF_FLAGS, DM_STATUS_TABLE_FLAG);
    buf[OFF_DEV..OFF_DEV + 8].copy_from_slice(&encode_dev(major, minor).to_le_bytes());
    buf
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap())
}

fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(buf[at..at + 8].try_into().unwrap())
}

/// One line of a device's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub length: u64,
    pub target_type: String,
    pub params: String,
}

/// What DM_TABLE_STATUS says of a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub flags: u32,
    pub targets: Vec<Target>,
}

impl Table {
    pub fn read_only(&self) -> bool {
        self.flags & DM_READONLY_FLAG != 0
    }
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Decodes the answer to a DM_TABLE_STATUS request. Err(true) when the
/// buffer was too small, Err(false) when the answer is malformed.
pub fn decode_table(buf: &[u8]) -> std::result::Result<Table, bool> {
    if buf.len() < HEADER {
        return Err(false);
    }
    let flags = get_u32(buf, OFF_FLAGS);
    if flags & DM_BUFFER_FULL_FLAG != 0 {
        return Err(true);
    }
    let data_start = get_u32(buf, OFF_DATA_START) as usize;
    let data_size = (get_u32(buf, OFF_DATA_SIZE) as usize).min(buf.len());
    let count = get_u32(buf, OFF_TARGET_COUNT);
    let mut targets = Vec::new();
    // Each spec's `next` counts from the first spec (on retrieval).
    let mut at = data_start;
    for _ in 0..count {
        if at + SPEC > data_size {
            return Err(false);
        }
        let next = get_u32(buf, at + 20) as usize;
        let end = if next == 0 {
            data_size
        } else {
            (data_start + next).min(data_size)
        };
        if end < at + SPEC {
            return Err(false);
        }
        targets.push(Target {
            start: get_u64(buf, at),
            length: get_u64(buf, at + 8),
            target_type: c_string(&buf[at + 24..at + SPEC]),
            params: c_string(&buf[at + SPEC..end]),
        });
        at = end;
    }
    Ok(Table {
        name: c_string(&buf[OFF_NAME..OFF_NAME + NAME_LEN]),
        flags,
        targets,
    })
}

/// The table of device-mapper device (major, minor). Err names why:
/// the control node cannot be opened, or the device is not a
/// device-mapper device.
pub fn table(major: u32, minor: u32) -> Result<Table> {
    let control = File::options()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .context("cannot open /dev/mapper/control (device-mapper is needed, as root)")?;
    let mut size = 16 << 10;
    loop {
        let mut buf = table_request(major, minor, size);
        // SAFETY: the buffer holds a dm_ioctl header and data_size bytes,
        // as the kernel reads and writes them.
        let r = unsafe { libc::ioctl(control.as_raw_fd(), DM_TABLE_STATUS as _, buf.as_mut_ptr()) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                bail!("device {major}:{minor} is not a device-mapper device");
            }
            return Err(e).context(format!("DM_TABLE_STATUS on device {major}:{minor}"));
        }
        match decode_table(&buf) {
            Ok(t) => return Ok(t),
            Err(true) if size < 16 << 20 => size *= 4,
            Err(_) => bail!("device-mapper's table of device {major}:{minor} cannot be read"),
        }
    }
}

/// Parses "MAJOR:MINOR".
pub fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// A path that opens block device (major, minor): /dev/block/M:m where
/// udev made it, else /dev/NAME as sysfs names the device.
pub fn device_path(major: u32, minor: u32) -> Result<PathBuf> {
    let by_number = PathBuf::from(format!("/dev/block/{major}:{minor}"));
    if by_number.exists() {
        return Ok(by_number);
    }
    let uevent = format!("/sys/dev/block/{major}:{minor}/uevent");
    let text = std::fs::read_to_string(&uevent)
        .with_context(|| format!("cannot find block device {major}:{minor} ({uevent})"))?;
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .with_context(|| format!("{uevent} names no device"))?;
    let path = Path::new("/dev").join(name);
    if !path.exists() {
        bail!(
            "block device {major}:{minor} has no node {}",
            path.display()
        );
    }
    Ok(path)
}

/// The fields of a `thin` target's parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThinParams {
    pub pool: (u32, u32),
    pub dev_id: u64,
    pub external_origin: Option<String>,
}

pub fn parse_thin(params: &str) -> Option<ThinParams> {
    let w: Vec<&str> = params.split_whitespace().collect();
    if w.len() < 2 {
        return None;
    }
    Some(ThinParams {
        pool: parse_dev(w[0])?,
        dev_id: w[1].parse().ok()?,
        external_origin: w.get(2).map(|s| s.to_string()),
    })
}

/// The fields of a `thin-pool` target's parameters that matter here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolParams {
    pub metadata: (u32, u32),
    pub data: (u32, u32),
    /// Data block size in sectors.
    pub block_sectors: u64,
}

pub fn parse_pool(params: &str) -> Option<PoolParams> {
    let w: Vec<&str> = params.split_whitespace().collect();
    if w.len() < 3 {
        return None;
    }
    Some(PoolParams {
        metadata: parse_dev(w[0])?,
        data: parse_dev(w[1])?,
        block_sectors: w[2].parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_number_is_the_kernels() {
        assert_eq!(DM_TABLE_STATUS, 0xc138_fd0c);
    }

    #[test]
    fn device_numbers_round_trip() {
        assert_eq!(encode_dev(253, 3), 0xfd03);
        assert_eq!(encode_dev(8, 0x12345), 0x1230_0845);
        for (ma, mi) in [(253, 0), (7, 255), (8, 0x12345), (4095, 0xfffff)] {
            assert_eq!(decode_dev(encode_dev(ma, mi)), (ma, mi));
        }
    }

    #[test]
    fn a_request_carries_version_size_flags_and_device() {
        let b = table_request(253, 7, 4096);
        assert_eq!(b.len(), 4096);
        assert_eq!(get_u32(&b, 0), 4);
        assert_eq!(get_u32(&b, 4), 0);
        assert_eq!(get_u32(&b, OFF_DATA_SIZE), 4096);
        assert_eq!(get_u32(&b, OFF_DATA_START), 312);
        assert_eq!(get_u32(&b, OFF_FLAGS), DM_STATUS_TABLE_FLAG);
        assert_eq!(get_u64(&b, OFF_DEV), 0xfd07);
        assert!(b[OFF_NAME..HEADER].iter().all(|&x| x == 0));
    }

    /// An answer laid out as the kernel's retrieve_status writes it.
    fn answer(flags: u32, name: &str, targets: &[(u64, u64, &str, &str)]) -> Vec<u8> {
        let mut b = table_request(0, 0, 4096);
        put_u32(&mut b, OFF_FLAGS, flags);
        put_u32(&mut b, OFF_TARGET_COUNT, targets.len() as u32);
        b[OFF_NAME..OFF_NAME + name.len()].copy_from_slice(name.as_bytes());
        let mut at = HEADER;
        for (start, len, ty, params) in targets {
            b[at..at + 8].copy_from_slice(&start.to_ne_bytes());
            b[at + 8..at + 16].copy_from_slice(&len.to_ne_bytes());
            b[at + 24..at + 24 + ty.len()].copy_from_slice(ty.as_bytes());
            let p = at + SPEC;
            b[p..p + params.len()].copy_from_slice(params.as_bytes());
            let next = (p + params.len() + 1).next_multiple_of(8);
            put_u32(&mut b, at + 20, (next - HEADER) as u32);
            at = next;
        }
        b
    }

    #[test]
    fn tables_decode() {
        let b = answer(
            DM_READONLY_FLAG | DM_ACTIVE_PRESENT_FLAG,
            "vg-thin",
            &[(0, 32768, "thin", "253:2 7")],
        );
        let t = decode_table(&b).unwrap();
        assert_eq!(t.name, "vg-thin");
        assert!(t.read_only());
        assert_eq!(
            t.targets,
            vec![Target {
                start: 0,
                length: 32768,
                target_type: "thin".into(),
                params: "253:2 7".into()
            }]
        );
        let thin = parse_thin(&t.targets[0].params).unwrap();
        assert_eq!(thin.pool, (253, 2));
        assert_eq!(thin.dev_id, 7);
        assert_eq!(thin.external_origin, None);

        let b = answer(
            0,
            "two",
            &[
                (0, 100, "linear", "8:1 0"),
                (
                    100,
                    50,
                    "thin-pool",
                    "253:0 253:1 128 64 1 skip_block_zeroing",
                ),
            ],
        );
        let t = decode_table(&b).unwrap();
        assert!(!t.read_only());
        assert_eq!(t.targets.len(), 2);
        assert_eq!(t.targets[0].params, "8:1 0");
        assert_eq!(t.targets[1].start, 100);
        let pool = parse_pool(&t.targets[1].params).unwrap();
        assert_eq!(
            pool,
            PoolParams {
                metadata: (253, 0),
                data: (253, 1),
                block_sectors: 128
            }
        );
    }

    #[test]
    fn a_full_buffer_or_a_bad_answer_is_told_apart() {
        assert_eq!(
            decode_table(&answer(DM_BUFFER_FULL_FLAG, "x", &[])),
            Err(true)
        );
        let mut b = answer(0, "x", &[(0, 1, "thin", "1:2 3")]);
        put_u32(&mut b, OFF_TARGET_COUNT, 200);
        assert_eq!(decode_table(&b), Err(false));
        assert_eq!(decode_table(&b[..100]), Err(false));
    }

    #[test]
    fn params_that_are_not_a_thin_or_pool_table() {
        assert_eq!(parse_thin("253:2"), None);
        assert_eq!(parse_thin("x:2 1"), None);
        assert_eq!(
            parse_thin("253:2 1 8:16")
                .unwrap()
                .external_origin
                .as_deref(),
            Some("8:16")
        );
        assert_eq!(parse_pool("253:0 253:1"), None);
    }
}
