//! Values of the device-details tree (key: device id).

use crate::io::{le_u32, le_u64};

pub const DEVICE_DETAILS_SIZE: u32 = 24;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceDetails {
    pub mapped_blocks: u64,
    pub transaction_id: u64,
    pub creation_time: u32,
    pub snapshotted_time: u32,
}

impl DeviceDetails {
    pub fn parse(v: &[u8]) -> DeviceDetails {
        DeviceDetails {
            mapped_blocks: le_u64(v, 0),
            transaction_id: le_u64(v, 8),
            creation_time: le_u32(v, 16),
            snapshotted_time: le_u32(v, 20),
        }
    }

    pub fn write(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.mapped_blocks.to_le_bytes());
        out[8..16].copy_from_slice(&self.transaction_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.creation_time.to_le_bytes());
        out[20..24].copy_from_slice(&self.snapshotted_time.to_le_bytes());
    }
}
