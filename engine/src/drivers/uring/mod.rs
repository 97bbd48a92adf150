//! `uring`: a bdev on a file or block device, driven through io_uring (SPDK's `bdev_uring`).
//!
//! The file is opened once, on the RPC thread, and its descriptors are shared by every
//! channel (see `drivers::file` for `O_DIRECT`, alignment and the buffered fallback).
//! Each channel (one per reactor) owns a ring of [`RING_ENTRIES`] entries and a table of as
//! many request slots, so the ring can never hold more requests than the table:
//!
//! - `submit` turns a request into one SQE (readv/writev on the request's own iovec array,
//!   fdatasync for flush, fallocate for unmap and write-zeroes) and only queues it;
//! - `poll` hands every queued SQE to the kernel with one `io_uring_enter`, then reaps the
//!   completion ring (shared memory, no system call), resubmitting short transfers;
//! - an eventfd registered with the ring wakes a sleeping reactor when completions arrive.
//!
//! Unmap is `fallocate(PUNCH_HOLE | KEEP_SIZE)` and write-zeroes `fallocate(ZERO_RANGE |
//! KEEP_SIZE)`, asynchronously through the ring, on regular files and block devices alike
//! (Linux implements both modes for block devices as discard/zero-out); if one mode is not
//! supported the other, which gives the same guarantee, is tried. On a file system with
//! neither, write-zeroes become writes of zeroes through the ring and unmaps do nothing (see
//! `drivers::file`, "Without fallocate"). Resets complete once the channel has nothing in
//! flight.

pub mod rpc;

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types, IoUring};
use serde_json::{json, Value};

use super::file::{Admit, FileBacking, Op, Outcome, ResetGate, Slots};
use crate::bdev::{Bdev, BdevDriver, BdevError, BdevIo, DriverChannel, IoStatus};
use crate::reactor::wake::{new_eventfd, EventFd};

/// Submission-queue entries per ring (and requests in flight per channel).
pub const RING_ENTRIES: u32 = 512;

/// SPDK's product name for uring bdevs.
pub const PRODUCT_NAME: &str = "URING bdev";

/// The uring driver's bdev state: the open file.
pub struct UringBdev {
    file: Arc<FileBacking>,
}

impl UringBdev {
    pub(crate) fn new(file: FileBacking) -> Self {
        UringBdev {
            file: Arc::new(file),
        }
    }
}

impl BdevDriver for UringBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
        Ok(Box::new(UringChannel::new(
            self.file.clone(),
            bdev.block_size(),
        )?))
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some((
            "uring",
            json!({
                "filename": self.file.path(),
                "write_zeroes": self.file.write_zeroes_mode(),
                "unmap": self.file.unmap_mode(),
            }),
        ))
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        Some(json!({
            "method": "bdev_uring_create",
            "params": {
                "name": bdev.name(),
                "filename": self.file.path(),
                "block_size": bdev.block_size(),
                "uuid": bdev.uuid().to_string(),
            }
        }))
    }

    fn shutdown(&self) {
        if let Err(e) = self.file.sync() {
            tracing::error!(file = %self.file.path(), "cannot flush '{}': {e}", self.file.path());
        }
    }
}

/// One reactor's ring for one uring bdev.
struct UringChannel {
    // Declared first so it is dropped (and unregisters the eventfd) first.
    ring: IoUring,
    file: Arc<FileBacking>,
    block_size: u64,
    slots: Slots,
    /// Slots whose resubmission did not fit in the submission queue.
    retry: Vec<u32>,
    /// SQEs queued and not yet handed to the kernel.
    unsubmitted: usize,
    gate: ResetGate,
    eventfd: EventFd,
    submit_error_logged: bool,
}

impl UringChannel {
    fn new(file: Arc<FileBacking>, block_size: u32) -> Result<Self, BdevError> {
        let err = |what, source| BdevError::Io {
            what,
            path: file.path().to_string(),
            source,
        };
        let ring =
            IoUring::new(RING_ENTRIES).map_err(|e| err("cannot create an io_uring for", e))?;
        let eventfd = new_eventfd().map_err(|e| err("cannot create an eventfd for", e))?;
        ring.submitter()
            .register_eventfd(eventfd.as_raw_fd())
            .map_err(|e| err("cannot register an eventfd with the io_uring of", e))?;
        let n = ring.params().sq_entries() as usize;
        Ok(UringChannel {
            ring,
            file,
            block_size: block_size as u64,
            slots: Slots::new(n),
            retry: Vec::with_capacity(n),
            unsubmitted: 0,
            gate: ResetGate::new(),
            eventfd,
            submit_error_logged: false,
        })
    }

    /// Builds slot `id`'s next SQE and queues it; false if the submission queue is full.
    fn push(&mut self, id: u32) -> bool {
        let Some(slot) = self.slots.get_mut(id as u64) else {
            return true;
        };
        let Some(io) = slot.io.as_ref() else {
            return true;
        };
        let x = &mut slot.xfer;
        // Tests stand in for a file system without fallocate (see `file::inject`).
        #[cfg(test)]
        let fake = matches!(x.op, Op::Fallocate { .. })
            && super::file::inject::refused(self.file.path(), false, true);
        #[cfg(not(test))]
        let fake = false;
        let entry = match x.op {
            Op::Fallocate { .. } if fake => opcode::Nop::new().build(),
            Op::Read | Op::Write | Op::ZeroFill => {
                let (ptr, n, off) = x.segments(io.iovs(), self.file.direct_align());
                let fd = types::Fd(self.file.fd(x.direct));
                if x.op == Op::Read {
                    opcode::Readv::new(fd, ptr, n as u32).offset(off).build()
                } else {
                    opcode::Writev::new(fd, ptr, n as u32).offset(off).build()
                }
            }
            Op::Flush => opcode::Fsync::new(types::Fd(self.file.fd(false)))
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            Op::Fallocate { mode, .. } => {
                opcode::Fallocate::new(types::Fd(self.file.fd(false)), x.len)
                    .offset(x.offset)
                    .mode(mode)
                    .build()
            }
        }
        .user_data(id as u64);
        let mut sq = self.ring.submission();
        // SAFETY: every pointer in the entry stays valid until its completion is reaped:
        // - the iovec array is either the request's own (owned by the BdevIo held in slot `id`,
        //   not modified while in flight) or the slot's scratch array (not touched until the
        //   slot's next `segments` call, which only happens after this entry completes);
        // - the data buffers are valid until the request completes (`BdevIo::push_iov`), or
        //   are the shared zero buffer (`file::zeroes`, static, never written);
        // - the descriptors belong to `self.file`, which this channel keeps alive, and the
        //   channel does not drop the ring before reaping everything (see `Drop`).
        let pushed = unsafe { sq.push(&entry) }.is_ok();
        if pushed {
            self.unsubmitted += 1;
        }
        pushed
    }

    /// Hands queued SQEs to the kernel with one system call; returns how many it took.
    fn flush_sq(&mut self) -> usize {
        while let Some(&id) = self.retry.last() {
            if !self.push(id) {
                break;
            }
            self.retry.pop();
        }
        if self.unsubmitted == 0 {
            return 0;
        }
        let n = match self.ring.submit() {
            Ok(n) => n,
            Err(e) => {
                // EAGAIN/EBUSY/EINTR: the kernel is short of resources or its completion
                // queue is backed up; the SQEs stay queued and go out on the next poll.
                let transient = matches!(
                    e.raw_os_error(),
                    Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR)
                );
                if !transient && !self.submit_error_logged {
                    self.submit_error_logged = true;
                    tracing::error!(file = %self.file.path(), "io_uring submit failed: {e}; retrying");
                }
                0
            }
        };
        self.unsubmitted = self.ring.submission().len();
        n
    }

    /// Reaps available completions; returns how many.
    fn reap(&mut self) -> usize {
        let mut n = 0;
        // Bounded: resubmitted requests complete on a later poll.
        while n < self.slots.capacity() {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            n += 1;
            self.complete_one(cqe.user_data(), cqe.result() as i64);
        }
        n
    }

    fn complete_one(&mut self, id: u64, res: i64) {
        let Some(slot) = self.slots.get_mut(id) else {
            tracing::warn!(file = %self.file.path(), "io_uring completion for unknown request {id}");
            return;
        };
        #[cfg(test)]
        let res = if matches!(slot.xfer.op, Op::Fallocate { .. })
            && super::file::inject::refused(self.file.path(), false, false)
        {
            -(libc::EOPNOTSUPP as i64)
        } else {
            res
        };
        let was_direct = slot.xfer.direct;
        let outcome = slot.xfer.on_result(res);
        if let Some(errno) = slot.xfer.take_refused() {
            self.file.note_no_fallocate(errno);
        }
        match outcome {
            Outcome::Resubmit => {
                if was_direct && !slot.xfer.direct && res == -(libc::EINVAL as i64) {
                    tracing::debug!(file = %self.file.path(), "direct I/O refused; retried buffered");
                }
                let id = id as u32;
                if !self.push(id) {
                    self.retry.push(id);
                }
            }
            Outcome::Done(status) => {
                if let Some(io) = self.slots.remove(id) {
                    io.complete(status);
                }
            }
        }
    }
}

impl DriverChannel for UringChannel {
    fn submit(&mut self, io: BdevIo) -> Result<(), BdevIo> {
        let io = match self.gate.admit(io, self.slots.in_use()) {
            Admit::Go(io) => io,
            Admit::Taken => return Ok(()),
            Admit::Later(io) => return Err(io),
        };
        let Some(op) = self.file.op(io.io_type()) else {
            io.complete(IoStatus::Success);
            return Ok(());
        };
        let offset = io.offset_blocks().saturating_mul(self.block_size);
        let len = io.num_blocks().saturating_mul(self.block_size);
        if matches!(op, Op::Fallocate { .. } | Op::ZeroFill) && len == 0 {
            io.complete(IoStatus::Success);
            return Ok(());
        }
        if self.ring.submission().is_full() {
            return Err(io);
        }
        let direct = match (op, self.file.direct_align()) {
            (Op::Read | Op::Write, Some(a)) => a.fits(offset, io.iovs()),
            (Op::ZeroFill, Some(_)) => true,
            _ => false,
        };
        let id = self.slots.insert(io)?;
        if let Some(slot) = self.slots.get_mut(id as u64) {
            slot.xfer.begin(op, offset, len, direct);
        }
        if !self.push(id) {
            self.retry.push(id);
        }
        Ok(())
    }

    fn poll(&mut self) -> usize {
        let mut work = self.flush_sq();
        work += self.reap();
        if self.unsubmitted > 0 || !self.retry.is_empty() {
            work += self.flush_sq();
        }
        work + self.gate.settle(self.slots.in_use())
    }

    fn wake_fd(&self) -> Option<i32> {
        Some(self.eventfd.as_raw_fd())
    }

    fn must_poll(&self) -> bool {
        self.unsubmitted > 0 || !self.retry.is_empty() || self.gate.ready(self.slots.in_use())
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        // Requests still in flight hold their channel alive, so this normally finds none. If
        // some remain, the kernel may still write into their buffers: wait for them (bounded),
        // and leak whatever is left rather than free memory the kernel could still touch.
        for id in std::mem::take(&mut self.retry) {
            // Not in the kernel: nothing can touch these.
            drop(self.slots.remove(id as u64));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.slots.in_use() > 0 && Instant::now() < deadline {
            let _ = self.ring.submit();
            while let Some(cqe) = self.ring.completion().next() {
                drop(self.slots.remove(cqe.user_data()));
            }
            if self.slots.in_use() > 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for io in self.slots.drain() {
            tracing::error!(file = %self.file.path(), "io_uring request outlived its channel; leaking it");
            std::mem::forget(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::drivers::file::inject::Scope;
    use crate::drivers::file::test_support::{self as t, Driver};

    const URING: Driver = Driver {
        create: rpc::create,
        delete: rpc::delete,
        method: "bdev_uring_create",
        product: PRODUCT_NAME,
        key: "uring",
        extra: || json!({}),
    };

    #[test]
    fn uring_round_trip_survives_restart_and_lands_in_the_file() {
        t::round_trip_and_restart(&URING);
    }

    #[test]
    fn uring_multi_iovec_aligned_unaligned_and_longer_than_iov_max() {
        t::multi_iovec(&URING);
    }

    #[test]
    fn uring_queue_deeper_than_the_channel_completes_in_full() {
        t::deep_queue(&URING);
    }

    #[test]
    fn uring_unmap_and_write_zeroes_zero_their_range() {
        t::unmap_and_write_zeroes(&URING);
    }

    #[test]
    fn uring_write_zeroes_on_a_file_system_without_fallocate_are_emulated() {
        let dir = tempfile::tempdir().unwrap();
        t::write_zeroes_without_fallocate(&URING, dir.path(), Some(Scope::Always));
    }

    #[test]
    fn uring_write_zeroes_refused_at_run_time_fall_back_to_writing_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        t::write_zeroes_without_fallocate(&URING, dir.path(), Some(Scope::RunTime));
    }

    #[test]
    fn uring_mirror_plex_on_a_file_system_without_fallocate_survives_discard() {
        t::mirror_on_a_bdev_without_fallocate_keeps_both_plexes(&URING);
    }

    #[test]
    fn uring_write_zeroes_on_ramfs_are_emulated() {
        t::write_zeroes_on_ramfs(&URING);
    }

    #[test]
    fn uring_completes_in_interrupt_mode() {
        t::interrupt_mode(&URING);
    }

    #[test]
    fn uring_completion_signals_the_wake_fd() {
        t::wake_fd_fires(&URING);
    }

    #[test]
    fn uring_reads_past_a_shrunk_file_fail_with_eio() {
        t::shrunk_file_reads_fail(&URING);
    }

    #[test]
    #[ignore = "needs PLEXD_TEST_BLOCK_DEVICE, a scratch block device whose data is destroyed"]
    fn uring_on_a_block_device() {
        t::block_device(&URING);
    }

    #[test]
    fn uring_create_errors_leave_nothing() {
        t::create_errors(&URING);
    }

    #[test]
    fn uring_config_always_carries_block_size() {
        let (_dir, path) = t::scratch_file(1 << 20);
        let engine = crate::Engine::start(&[0], crate::reactor::PollMode::Adaptive).unwrap();
        rpc::create(
            &engine,
            URING.params("U0", &path, json!({"block_size": 4096})),
        )
        .unwrap();
        let b = engine.bdevs().get("U0").unwrap();
        assert_eq!((b.block_size(), b.num_blocks()), (4096, 256));
        let cfg = b.driver().config(&b).unwrap();
        assert_eq!(cfg["params"]["block_size"], json!(4096));
        assert_eq!(
            b.driver().driver_specific().unwrap().1,
            json!({"filename": path.to_str().unwrap(), "write_zeroes": "fallocate", "unmap": "fallocate"})
        );
        assert!(b.io_types().contains(crate::bdev::IoType::Unmap));
        drop(b);
        engine.shutdown();
    }
}
