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
