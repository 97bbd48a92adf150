//! The virtio-blk configuration space (`struct virtio_blk_config`, little-endian), and the
//! feature bits plexd offers.

use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// Largest data segment a request may carry (bytes), advertised as `size_max`.
pub const SIZE_MAX: u32 = 1 << 20;
/// Most data segments per request, advertised as `seg_max` (queue size minus header/status).
pub const SEG_MAX: u32 = 126;
/// Most sectors one discard or write-zeroes segment may cover.
pub const MAX_DISCARD_SECTORS: u32 = (1 << 30) / 512;
/// Most segments in one discard or write-zeroes request.
pub const MAX_DISCARD_SEG: u32 = 1;

/// The virtio feature bits offered for a device.
pub fn device_features(readonly: bool, multiqueue: bool, discard: bool, write_zeroes: bool) -> u64 {
    let mut f: u64 = (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << VIRTIO_BLK_F_SEG_MAX)
        | (1 << VIRTIO_BLK_F_SIZE_MAX)
        | (1 << VIRTIO_BLK_F_BLK_SIZE)
        | (1 << VIRTIO_BLK_F_TOPOLOGY)
        | (1 << VIRTIO_BLK_F_FLUSH);
    if multiqueue {
        f |= 1 << VIRTIO_BLK_F_MQ;
    }
    if readonly {
        f |= 1 << VIRTIO_BLK_F_RO;
    } else {
        if discard {
            f |= 1 << VIRTIO_BLK_F_DISCARD;
        }
        if write_zeroes {
            f |= 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
    }
    f
}

/// Geometry the config space describes.
#[derive(Debug, Clone, Copy)]
pub struct BlkGeometry {
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Device size in bytes.
    pub size_bytes: u64,
    /// Number of request queues.
    pub num_queues: u16,
}

/// Serialises `struct virtio_blk_config` (60 bytes).
pub fn config_space(g: &BlkGeometry) -> Vec<u8> {
    let mut c = Vec::with_capacity(60);
    c.extend_from_slice(&(g.size_bytes / 512).to_le_bytes()); // capacity, 512-byte sectors
    c.extend_from_slice(&SIZE_MAX.to_le_bytes()); // size_max
    c.extend_from_slice(&SEG_MAX.to_le_bytes()); // seg_max
    c.extend_from_slice(&[0, 0, 0, 0]); // geometry: cylinders u16, heads u8, sectors u8
    c.extend_from_slice(&g.block_size.to_le_bytes()); // blk_size
    let exp = 0u8; // physical_block_exp: physical == logical
    c.push(exp);
    c.push(0); // alignment_offset
    let min_io: u16 = 1;
    c.extend_from_slice(&min_io.to_le_bytes()); // min_io_size, in logical blocks
    c.extend_from_slice(&0u32.to_le_bytes()); // opt_io_size
    c.push(0); // writeback
    c.push(0); // unused0
    c.extend_from_slice(&g.num_queues.to_le_bytes()); // num_queues
    c.extend_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes()); // max_discard_sectors
    c.extend_from_slice(&MAX_DISCARD_SEG.to_le_bytes()); // max_discard_seg
    c.extend_from_slice(&(g.block_size / 512).max(1).to_le_bytes()); // discard_sector_alignment
    c.extend_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
    c.extend_from_slice(&MAX_DISCARD_SEG.to_le_bytes()); // max_write_zeroes_seg
    c.push(0); // write_zeroes_may_unmap
    c.extend_from_slice(&[0, 0, 0]); // unused1
    c
}

/// Returns exactly `size` bytes at `offset` of the config space, or None if out of range.
pub fn config_slice(space: &[u8], offset: u32, size: u32) -> Option<Vec<u8>> {
    let start = offset as usize;
    let end = start.checked_add(size as usize)?;
    space.get(start..end).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_spec() {
        let c = config_space(&BlkGeometry {
            block_size: 4096,
            size_bytes: 64 << 20,
            num_queues: 3,
        });
        assert_eq!(c.len(), 60);
        assert_eq!(
            u64::from_le_bytes(c[0..8].try_into().unwrap()),
            (64 << 20) / 512
        );
        assert_eq!(u32::from_le_bytes(c[20..24].try_into().unwrap()), 4096);
        assert_eq!(u16::from_le_bytes(c[34..36].try_into().unwrap()), 3);
        assert_eq!(config_slice(&c, 34, 2).unwrap(), vec![3, 0]);
        assert!(config_slice(&c, 59, 2).is_none());
        assert!(config_slice(&c, u32::MAX, 2).is_none());
    }

    #[test]
    fn readonly_hides_discard() {
        let f = device_features(true, true, true, true);
        assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
        assert_eq!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
    }
}
