//! Injected I/O errors, for testing how a writeback meets a failing
//! device without one.
//!
//! When the environment variable `DMPD_TEST_FAIL_IO` is set, cache_writeback
//! wraps the named devices so that every read or write overlapping a
//! given byte range fails with EIO. The value is a comma-separated list
//! of rules `DEVICE:OP:START+LEN[*TIMES]`: DEVICE `fast` or `origin`, OP
//! `read` or `write`, START and LEN in bytes of the device (data offsets
//! included), TIMES how many I/Os the rule fails before it lets them
//! pass (always, without it). Example: `fast:read:65536+1,origin:write:0+4096*2`.
//! Unset (the normal case), nothing is wrapped: the copy pays nothing.

use std::io;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context, Result};

use super::copy::DataDevice;

pub const FAULT_ENV: &str = "DMPD_TEST_FAIL_IO";

#[derive(Debug)]
pub struct Rule {
    write: bool,
    bytes: Range<u64>,
    /// Failures left (u64::MAX: always).
    left: AtomicU64,
}

impl Rule {
    fn fires(&self, write: bool, at: u64, len: usize) -> bool {
        if self.write != write || !(self.bytes.start < at + len as u64 && at < self.bytes.end) {
            return false;
        }
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| match n {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            })
            .is_ok()
    }
}

/// The rules of `spec` for `device` ("fast" or "origin").
pub fn parse(spec: &str, device: &str) -> Result<Vec<Rule>> {
    let mut out = Vec::new();
    for rule in spec.split(',').filter(|r| !r.trim().is_empty()) {
        let bad = || format!("{FAULT_ENV}: bad rule '{rule}' (DEVICE:OP:START+LEN[*TIMES])");
        let parts: Vec<&str> = rule.trim().split(':').collect();
        let [dev, op, range] = parts[..] else {
            bail!(bad());
        };
        if dev != "fast" && dev != "origin" {
            bail!(bad());
        }
        let write = match op {
            "read" => false,
            "write" => true,
            _ => bail!(bad()),
        };
        let (range, times) = match range.split_once('*') {
            Some((r, t)) => (r, t.parse::<u64>().with_context(bad)?),
            None => (range, u64::MAX),
        };
        let (start, len) = range.split_once('+').with_context(bad)?;
        let start: u64 = start.parse().with_context(bad)?;
        let len: u64 = len.parse().with_context(bad)?;
        if dev == device {
            out.push(Rule {
                write,
                bytes: start..start.saturating_add(len),
                left: AtomicU64::new(times),
            });
        }
    }
    Ok(out)
}

/// A device whose I/O fails where its rules say.
pub struct Faulty<D> {
    pub inner: D,
    pub rules: Vec<Rule>,
}

impl<D: DataDevice> Faulty<D> {
    fn check(&self, write: bool, at: u64, len: usize) -> io::Result<()> {
        if self.rules.iter().any(|r| r.fires(write, at, len)) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

impl<D: DataDevice> DataDevice for Faulty<D> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check(false, offset, buf.len())?;
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.check(true, offset, buf.len())?;
        self.inner.write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.inner.sync()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

/// `dev` as the copy sees it: wrapped when the environment injects
/// errors into `name`'s I/O.
pub fn wrap<D: DataDevice + 'static>(dev: D, name: &str) -> Result<Box<dyn DataDevice>> {
    let Some(spec) = std::env::var_os(FAULT_ENV) else {
        return Ok(Box::new(dev));
    };
    let rules = parse(&spec.to_string_lossy(), name)?;
    if rules.is_empty() {
        return Ok(Box::new(dev));
    }
    Ok(Box::new(Faulty { inner: dev, rules }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_fire_as_told() {
        let r = parse(
            "fast:read:100+10*2, origin:write:0+4096,fast:write:5+1",
            "fast",
        )
        .unwrap();
        assert_eq!(r.len(), 2);
        assert!(!r[0].fires(false, 0, 100));
        assert!(!r[0].fires(true, 100, 1));
        assert!(r[0].fires(false, 109, 1));
        assert!(r[0].fires(false, 0, 101));
        assert!(!r[0].fires(false, 100, 1), "only twice");
        assert!(r[1].fires(true, 0, 6));
        let o = parse("fast:read:100+10*2, origin:write:0+4096", "origin").unwrap();
        assert!(o[0].fires(true, 4095, 1) && o[0].fires(true, 4095, 1));
        for bad in [
            "fast:read:1",
            "slow:read:1+1",
            "fast:peek:1+1",
            "fast:read:x+1",
            "a",
        ] {
            assert!(parse(bad, "fast").is_err(), "{bad}");
        }
    }
}
