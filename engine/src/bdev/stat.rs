//! Per-channel I/O statistics. Each channel (one bdev on one reactor) has exactly one writer,
//! its reactor, which updates plain relaxed atomics (no read-modify-write, no lock); readers
//! (`bdev_get_iostat`) sum the channels of a bdev from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

use super::io::IoType;

/// Counters for one channel.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Bytes read.
    pub bytes_read: AtomicU64,
    /// Read requests completed successfully.
    pub num_read_ops: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Write requests completed successfully.
    pub num_write_ops: AtomicU64,
    /// Bytes unmapped.
    pub bytes_unmapped: AtomicU64,
    /// Unmap requests completed successfully.
    pub num_unmap_ops: AtomicU64,
    /// Bytes zeroed by write_zeroes.
    pub bytes_write_zeroes: AtomicU64,
    /// Write-zeroes requests completed successfully.
    pub num_write_zeroes_ops: AtomicU64,
    /// Flush requests completed successfully.
    pub num_flush_ops: AtomicU64,
    /// Requests that failed.
    pub num_io_errors: AtomicU64,
    /// Sum of read latencies in ticks.
    pub read_latency_ticks: AtomicU64,
    /// Sum of write latencies in ticks.
    pub write_latency_ticks: AtomicU64,
    /// Sum of unmap latencies in ticks.
    pub unmap_latency_ticks: AtomicU64,
    /// Largest read latency.
    pub max_read_latency_ticks: AtomicU64,
    /// Smallest read latency (0 = none yet).
    pub min_read_latency_ticks: AtomicU64,
    /// Largest write latency.
    pub max_write_latency_ticks: AtomicU64,
    /// Smallest write latency (0 = none yet).
    pub min_write_latency_ticks: AtomicU64,
}

#[inline]
fn add(a: &AtomicU64, v: u64) {
    a.store(a.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
}

#[inline]
fn max(a: &AtomicU64, v: u64) {
    if v > a.load(Ordering::Relaxed) {
        a.store(v, Ordering::Relaxed);
    }
}

#[inline]
fn min(a: &AtomicU64, v: u64) {
    let cur = a.load(Ordering::Relaxed);
    if cur == 0 || v < cur {
        a.store(v, Ordering::Relaxed);
    }
}

impl ChannelStats {
    /// Records one completed request (single writer: the channel's reactor).
    #[inline]
    pub fn record(&self, t: IoType, bytes: u64, latency: u64, ok: bool) {
        if !ok {
            add(&self.num_io_errors, 1);
            return;
        }
        match t {
            IoType::Read => {
                add(&self.bytes_read, bytes);
                add(&self.num_read_ops, 1);
                add(&self.read_latency_ticks, latency);
                max(&self.max_read_latency_ticks, latency);
                min(&self.min_read_latency_ticks, latency);
            }
            IoType::Write => {
                add(&self.bytes_written, bytes);
                add(&self.num_write_ops, 1);
                add(&self.write_latency_ticks, latency);
                max(&self.max_write_latency_ticks, latency);
                min(&self.min_write_latency_ticks, latency);
            }
            IoType::Unmap => {
                add(&self.bytes_unmapped, bytes);
                add(&self.num_unmap_ops, 1);
                add(&self.unmap_latency_ticks, latency);
            }
            IoType::WriteZeroes => {
                add(&self.bytes_write_zeroes, bytes);
                add(&self.num_write_zeroes_ops, 1);
            }
            IoType::Flush => add(&self.num_flush_ops, 1),
            IoType::Reset => {}
        }
    }
}

/// A snapshot summed over channels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IoStatSnapshot {
    /// Bytes read.
    pub bytes_read: u64,
    /// Read requests.
    pub num_read_ops: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Write requests.
    pub num_write_ops: u64,
    /// Bytes unmapped.
    pub bytes_unmapped: u64,
    /// Unmap requests.
    pub num_unmap_ops: u64,
    /// Bytes zeroed.
    pub bytes_write_zeroes: u64,
    /// Write-zeroes requests.
    pub num_write_zeroes_ops: u64,
    /// Flush requests.
    pub num_flush_ops: u64,
    /// Failed requests.
    pub num_io_errors: u64,
    /// Sum of read latencies, ticks.
    pub read_latency_ticks: u64,
    /// Sum of write latencies, ticks.
    pub write_latency_ticks: u64,
    /// Sum of unmap latencies, ticks.
    pub unmap_latency_ticks: u64,
    /// Largest read latency, ticks.
    pub max_read_latency_ticks: u64,
    /// Smallest read latency, ticks.
    pub min_read_latency_ticks: u64,
    /// Largest write latency, ticks.
    pub max_write_latency_ticks: u64,
    /// Smallest write latency, ticks.
    pub min_write_latency_ticks: u64,
}

impl IoStatSnapshot {
    /// Adds one channel's counters.
    pub fn add(&mut self, s: &ChannelStats) {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.bytes_read += l(&s.bytes_read);
        self.num_read_ops += l(&s.num_read_ops);
        self.bytes_written += l(&s.bytes_written);
        self.num_write_ops += l(&s.num_write_ops);
        self.bytes_unmapped += l(&s.bytes_unmapped);
        self.num_unmap_ops += l(&s.num_unmap_ops);
        self.bytes_write_zeroes += l(&s.bytes_write_zeroes);
        self.num_write_zeroes_ops += l(&s.num_write_zeroes_ops);
        self.num_flush_ops += l(&s.num_flush_ops);
        self.num_io_errors += l(&s.num_io_errors);
        self.read_latency_ticks += l(&s.read_latency_ticks);
        self.write_latency_ticks += l(&s.write_latency_ticks);
        self.unmap_latency_ticks += l(&s.unmap_latency_ticks);
        self.max_read_latency_ticks = self
            .max_read_latency_ticks
            .max(l(&s.max_read_latency_ticks));
        self.max_write_latency_ticks = self
            .max_write_latency_ticks
            .max(l(&s.max_write_latency_ticks));
        let mn = |a: u64, b: u64| match (a, b) {
            (0, x) | (x, 0) => x,
            (x, y) => x.min(y),
        };
        self.min_read_latency_ticks = mn(self.min_read_latency_ticks, l(&s.min_read_latency_ticks));
        self.min_write_latency_ticks =
            mn(self.min_write_latency_ticks, l(&s.min_write_latency_ticks));
    }
}
