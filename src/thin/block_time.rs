//! A mapping's value: the data block and the time (snapshot counter) at
//! which it was written, packed as (block << 24) | time.

pub const TIME_BITS: u32 = 24;
pub const TIME_MASK: u64 = (1 << TIME_BITS) - 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockTime {
    pub block: u64,
    pub time: u32,
}

impl BlockTime {
    #[inline]
    pub fn unpack(v: u64) -> BlockTime {
        BlockTime {
            block: v >> TIME_BITS,
            time: (v & TIME_MASK) as u32,
        }
    }

    #[inline]
    pub fn pack(&self) -> u64 {
        (self.block << TIME_BITS) | (self.time as u64 & TIME_MASK)
    }
}

/// Runs of consecutive data blocks in mappings taken in order: a leaf's
/// mappings mostly come in such runs, and counters take a run a 32-block
/// word at a time.
pub struct DataRuns<I> {
    mappings: I,
    run: std::ops::Range<u64>,
}

/// The runs of consecutive data blocks in `mappings`, in order.
pub fn data_runs<I: IntoIterator<Item = BlockTime>>(mappings: I) -> DataRuns<I::IntoIter> {
    DataRuns {
        mappings: mappings.into_iter(),
        run: 0..0,
    }
}

impl<I: Iterator<Item = BlockTime>> Iterator for DataRuns<I> {
    type Item = std::ops::Range<u64>;

    fn next(&mut self) -> Option<Self::Item> {
        for bt in self.mappings.by_ref() {
            if bt.block == self.run.end && !self.run.is_empty() {
                self.run.end += 1;
            } else {
                let done = std::mem::replace(&mut self.run, bt.block..bt.block + 1);
                if !done.is_empty() {
                    return Some(done);
                }
            }
        }
        let done = std::mem::replace(&mut self.run, 0..0);
        (!done.is_empty()).then_some(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_break_wherever_the_data_blocks_do() {
        let bt = |block| BlockTime { block, time: 0 };
        let got: Vec<_> = data_runs([5, 6, 7, 9, 3, 4, 4, 100].map(bt)).collect();
        assert_eq!(got, vec![5..8, 9..10, 3..5, 4..5, 100..101]);
        assert_eq!(data_runs(std::iter::empty()).count(), 0);
        assert_eq!(data_runs([bt(0)]).collect::<Vec<_>>(), vec![0..1]);
    }
}
