//! Values produced on a second thread, in order, a batch at a time, so
//! that producing them (parsing a document) overlaps what the caller does
//! with them (validating, recording).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// The producing side: queues values for the consumer.
pub struct Emitter<T> {
    tx: SyncSender<Vec<T>>,
    batch: Vec<T>,
    size: usize,
}

impl<T> Emitter<T> {
    /// Queues `value`; false once the consumer has gone, when the
    /// producer should stop.
    pub fn push(&mut self, value: T) -> bool {
        self.batch.push(value);
        if self.batch.len() < self.size {
            return true;
        }
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(self.size));
        self.tx.send(full).is_ok()
    }
}

impl<T> Drop for Emitter<T> {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.tx.send(std::mem::take(&mut self.batch));
        }
    }
}

/// The consuming side. Create it inside `std::thread::scope`; dropping it
/// stops the producer at its next full batch.
pub struct Ahead<T> {
    rx: Receiver<Vec<T>>,
    batch: std::vec::IntoIter<T>,
}

impl<T: Send> Ahead<T> {
    /// Runs `produce` on a thread of `scope`, `batches` batches of `size`
    /// values ahead of the consumer at most.
    pub fn spawn<'scope, 'env, F>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        size: usize,
        batches: usize,
        produce: F,
    ) -> Ahead<T>
    where
        T: 'scope,
        F: FnOnce(&mut Emitter<T>) + Send + 'scope,
    {
        let (tx, rx) = sync_channel(batches);
        scope.spawn(move || {
            let mut out = Emitter {
                tx,
                batch: Vec::with_capacity(size),
                size,
            };
            produce(&mut out);
        });
        Ahead {
            rx,
            batch: Vec::new().into_iter(),
        }
    }
}

impl<T> Iterator for Ahead<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(v) = self.batch.next() {
                return Some(v);
            }
            self.batch = self.rx.recv().ok()?.into_iter();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_arrive_in_order_and_the_producer_stops_when_dropped() {
        let got: Vec<u32> = std::thread::scope(|s| {
            Ahead::spawn(s, 7, 2, |out| {
                for i in 0..1000 {
                    if !out.push(i) {
                        return;
                    }
                }
            })
            .collect()
        });
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
        let stopped = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            let mut a = Ahead::spawn(s, 4, 1, |out| {
                let mut i = 0u32;
                while out.push(i) {
                    i += 1;
                }
                stopped.store(i, std::sync::atomic::Ordering::Relaxed);
            });
            assert_eq!(a.next(), Some(0));
            drop(a);
        });
        // The producer ran a few batches ahead at most, then stopped.
        let n = stopped.load(std::sync::atomic::Ordering::Relaxed);
        assert!((4..=16).contains(&n), "{n}");
    }
}
