//! A writer that hands full buffers to a thread of its own.
//!
//! Writing a large dump into a file costs the kernel as much as formatting
//! it costs us (page-cache copies and block allocation, ~1.5 ms per MiB on
//! ext4), and in one thread the two add up. Here the formatting thread
//! fills a buffer while the writer thread writes the previous one, so the
//! tool takes about the longer of the two, not their sum.
//!
//! For a file that will be made durable, the writer also starts the
//! disk's writeback of each few MiB once they are written
//! (`sync_file_range`), so the final fsync waits for the tail only.

use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes handed over at a time.
const CHUNK: usize = 128 << 10;
/// Buffers in flight: one being filled, the others queued or being written.
const BUFFERS: usize = 3;
/// Writeback is started once this many bytes have gathered since the last.
const WRITEBACK_EVERY: u64 = 8 << 20;

pub struct WriteBehind<W: Write + Send + 'static> {
    buf: Vec<u8>,
    allocated: usize,
    full: Option<SyncSender<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<(W, io::Result<()>)>>,
}

impl<W: Write + Send + 'static> WriteBehind<W> {
    /// Writes to `inner` on a thread of its own. `writeback` is the file
    /// descriptor of `inner` when it is a regular file whose writeback
    /// should start early.
    pub fn new(inner: W, writeback: Option<RawFd>) -> WriteBehind<W> {
        let (full, work) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
        let (give_back, empty) = mpsc::sync_channel::<Vec<u8>>(BUFFERS);
        let worker = std::thread::spawn(move || {
            let mut inner = inner;
            let mut result = Ok(());
            let mut written = 0u64;
            let mut synced = 0u64;
            for mut buf in work {
                if result.is_ok() {
                    result = inner.write_all(&buf);
                    written += buf.len() as u64;
                    if let (Some(fd), true) = (writeback, written - synced >= WRITEBACK_EVERY) {
                        start_writeback(fd, synced, written - synced);
                        synced = written;
                    }
                }
                buf.clear();
                // The filling side may have finished and gone.
                let _ = give_back.try_send(buf);
                if result.is_err() {
                    // Stop taking work: the next send fails and the
                    // filling side collects the error.
                    break;
                }
            }
            if result.is_ok() {
                result = inner.flush();
            }
            (inner, result)
        });
        WriteBehind {
            buf: Vec::with_capacity(CHUNK),
            allocated: 1,
            full: Some(full),
            empty,
            worker: Some(worker),
        }
    }

    /// Writes what is buffered, waits for the writer and returns the
    /// inner writer, or the first error writing met.
    pub fn finish(mut self) -> io::Result<W> {
        let last = std::mem::take(&mut self.buf);
        if !last.is_empty() {
            // A failed send means the writer stopped on an error, which
            // join reports.
            let _ = self.full.as_ref().map(|f| f.send(last));
        }
        let (inner, result) = self.join()?;
        result.map(|()| inner)
    }

    fn join(&mut self) -> io::Result<(W, io::Result<()>)> {
        self.full = None;
        let worker = self.worker.take().expect("joined once");
        worker
            .join()
            .map_err(|_| io::Error::other("the output writer thread panicked"))
    }

    /// Hands the full buffer over and takes an empty one.
    fn hand_over(&mut self) -> io::Result<()> {
        let next = match self.empty.try_recv() {
            Ok(b) => b,
            Err(_) if self.allocated < BUFFERS => {
                self.allocated += 1;
                Vec::with_capacity(CHUNK)
            }
            Err(_) => self
                .empty
                .recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK)),
        };
        let full = std::mem::replace(&mut self.buf, next);
        let sent = self.full.as_ref().map(|f| f.send(full));
        if let Some(Ok(())) = sent {
            return Ok(());
        }
        // The writer stopped: its error is the one to report.
        match self.join()? {
            (_, Err(e)) => Err(e),
            (_, Ok(())) => Err(io::Error::other("the output writer stopped")),
        }
    }
}

impl<W: Write + Send + 'static> Write for WriteBehind<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.worker.is_none() {
            return Err(io::Error::other("the output writer stopped"));
        }
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.hand_over()?;
        }
        Ok(n)
    }

    /// Buffers are written as they fill; the last one by `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write + Send + 'static> Drop for WriteBehind<W> {
    fn drop(&mut self) {
        // Abandoned (an error elsewhere): stop the writer, and let the
        // inner writer's own drop run, e.g. removing a scratch file.
        if self.worker.is_some() {
            let _ = self.join();
        }
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` to disk,
/// without waiting. Only a hint: failure changes nothing.
fn start_writeback(fd: RawFd, offset: u64, len: u64) {
    // SAFETY: sync_file_range only reads its integer arguments; a stale
    // or wrong descriptor makes it fail, which is ignored.
    unsafe {
        libc::sync_file_range(
            fd,
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Collects what it is given, failing once `fail_after` bytes are in.
    #[derive(Clone, Debug)]
    struct Sink {
        got: Arc<Mutex<Vec<u8>>>,
        fail_after: usize,
    }

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let mut got = self.got.lock().unwrap();
            if got.len() + data.len() > self.fail_after {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            got.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn sink(fail_after: usize) -> Sink {
        Sink {
            got: Arc::new(Mutex::new(Vec::new())),
            fail_after,
        }
    }

    #[test]
    fn every_byte_arrives_in_order() {
        let s = sink(usize::MAX);
        let mut w = WriteBehind::new(s.clone(), None);
        let mut expected = Vec::new();
        for i in 0..300_000u32 {
            let line = format!("<line n=\"{i}\"/>\n");
            w.write_all(line.as_bytes()).unwrap();
            expected.extend_from_slice(line.as_bytes());
        }
        assert!(expected.len() > 3 * CHUNK);
        w.finish().unwrap();
        assert!(*s.got.lock().unwrap() == expected);
    }

    #[test]
    fn a_write_error_is_reported_with_its_kind() {
        let s = sink(2 * CHUNK + 10);
        let mut w = WriteBehind::new(s.clone(), None);
        let block = vec![b'x'; 4096];
        let mut failed = None;
        for _ in 0..(16 * CHUNK / 4096) {
            if let Err(e) = w.write_all(&block) {
                failed = Some(e);
                break;
            }
        }
        let e = match failed {
            Some(e) => e,
            None => w.finish().unwrap_err(),
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(s.got.lock().unwrap().len(), 2 * CHUNK);
    }

    #[test]
    fn a_short_output_is_written_by_finish() {
        let s = sink(usize::MAX);
        let mut w = WriteBehind::new(s.clone(), None);
        w.write_all(b"<superblock/>\n").unwrap();
        assert!(s.got.lock().unwrap().is_empty());
        w.finish().unwrap();
        assert_eq!(&*s.got.lock().unwrap(), b"<superblock/>\n");
    }
}
