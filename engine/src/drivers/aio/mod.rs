//! `aio`: a bdev on a file or block device, driven through Linux native AIO (SPDK's
//! `bdev_aio`), for kernels or sandboxes without io_uring.
//!
//! The file is opened once, on the RPC thread, and shared by every channel (see
//! `drivers::file` for `O_DIRECT`, alignment and the buffered fallback). Each channel
//! (one per reactor) owns an AIO context (`vmm_sys_util::aio`, as cloud-hypervisor's
//! `raw_async_aio`) and a preallocated queue of [`AIO_DEPTH`] control blocks (`iocb`):
//!
//! - `submit` fills an iocb for the request's slot (preadv/pwritev on the request's iovec
//!   array, fdatasync for flush) and only queues it;
//! - `poll` hands every queued iocb to the kernel with one `io_submit`, then, if anything is
//!   in flight, reaps with a non-blocking `io_getevents`, resubmitting short transfers;
//! - every iocb carries `IOCB_FLAG_RESFD`, so completions wake a sleeping reactor through an
//!   eventfd.
//!
//! AIO has no fallocate command: with `fallocate: true`, unmap (`PUNCH_HOLE | KEEP_SIZE`) and
//! write-zeroes (`ZERO_RANGE | KEEP_SIZE`) run synchronously inside `submit` (as SPDK does),
//! which blocks the reactor for the call. Without it they are not supported, as in SPDK. On a
//! file system that has neither fallocate mode, write-zeroes become (asynchronous) writes of
//! zeroes and unmaps do nothing (see `drivers::file`, "Without fallocate").
//! Native AIO is only asynchronous with `O_DIRECT`; on the buffered descriptor (file systems
//! without `O_DIRECT`, unaligned buffers) `io_submit` completes the transfer before it returns.

pub mod rpc;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use serde_json::{json, Value};
use vmm_sys_util::aio::{
    IoContext, IoControlBlock, IoEvent, IOCB_CMD_FDSYNC, IOCB_CMD_PREADV, IOCB_CMD_PWRITEV,
    IOCB_FLAG_RESFD,
};

use super::file::{Admit, FileBacking, Op, Outcome, ResetGate, Slots};
use crate::bdev::{Bdev, BdevDriver, BdevError, BdevIo, DriverChannel, IoStatus};
use crate::reactor::wake::{new_eventfd, EventFd};

/// Requests in flight per channel (and the AIO context's size).
pub const AIO_DEPTH: usize = 256;

/// SPDK's product name for aio bdevs.
pub const PRODUCT_NAME: &str = "AIO disk";

/// Checks that the kernel offers native AIO (control path).
pub(crate) fn probe() -> io::Result<()> {
    IoContext::new(AIO_DEPTH as u32).map(drop)
}

/// The aio driver's bdev state: the open file and its options.
pub struct AioBdev {
    file: Arc<FileBacking>,
    readonly: bool,
    fallocate: bool,
    block_size_override: bool,
}

impl AioBdev {
    pub(crate) fn new(
        file: FileBacking,
        readonly: bool,
        fallocate: bool,
        block_size_override: bool,
    ) -> Self {
        AioBdev {
            file: Arc::new(file),
            readonly,
            fallocate,
            block_size_override,
        }
    }

    /// How write-zeroes and unmaps reach the file, for the driver info.
    fn zero_modes(&self) -> (&'static str, &'static str) {
        if self.fallocate && !self.readonly {
            (self.file.write_zeroes_mode(), self.file.unmap_mode())
        } else {
            ("unsupported", "unsupported")
        }
    }
}

impl BdevDriver for AioBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn create_channel(&self, bdev: &Arc<Bdev>) -> Result<Box<dyn DriverChannel>, BdevError> {
        Ok(Box::new(AioChannel::new(
            self.file.clone(),
            bdev.block_size(),
        )?))
    }

    fn driver_specific(&self) -> Option<(&'static str, Value)> {
        Some((
            "aio",
            json!({
                "filename": self.file.path(),
                "block_size_override": self.block_size_override,
                "readonly": self.readonly,
                "fallocate": self.fallocate,
                "nowait": false,
                "write_zeroes": self.zero_modes().0,
                "unmap": self.zero_modes().1,
            }),
        ))
    }

    fn config(&self, bdev: &Bdev) -> Option<Value> {
        let mut params = json!({
            "name": bdev.name(),
            "filename": self.file.path(),
            "readonly": self.readonly,
            "fallocate": self.fallocate,
            "uuid": bdev.uuid().to_string(),
        });
        // As SPDK: a detected block size is detected again on load.
        if self.block_size_override {
            params["block_size"] = json!(bdev.block_size());
        }
        Some(json!({ "method": "bdev_aio_create", "params": params }))
    }

    fn shutdown(&self) {
        if let Err(e) = self.file.sync() {
            tracing::error!(file = %self.file.path(), "cannot flush '{}': {e}", self.file.path());
        }
    }
}

/// One reactor's AIO context for one aio bdev.
struct AioChannel {
    /// Declared first so that it drops first: destroying the context waits for whatever the
    /// kernel still holds, after which the slots (and the buffers they keep alive) can go.
    ctx: IoContext,
    file: Arc<FileBacking>,
    block_size: u64,
    slots: Slots,
    /// Control blocks ready for `io_submit`, oldest first (`aio_data` is the slot). The
    /// kernel copies an iocb when it takes it, so each entry is free again once submitted.
    queue: Box<[IoControlBlock; AIO_DEPTH]>,
    /// How many entries of `queue` are in use.
    queued: usize,
    events: Box<[IoEvent]>,
    /// iocbs the kernel holds.
    in_kernel: usize,
    gate: ResetGate,
    eventfd: EventFd,
    error_logged: bool,
}

impl AioChannel {
    fn new(file: Arc<FileBacking>, block_size: u32) -> Result<Self, BdevError> {
        let err = |what, source| BdevError::Io {
            what,
            path: file.path().to_string(),
            source,
        };
        let eventfd = new_eventfd().map_err(|e| err("cannot create an eventfd for", e))?;
        let ctx = IoContext::new(AIO_DEPTH as u32)
            .map_err(|e| err("cannot create an AIO context (see fs.aio-max-nr) for", e))?;
        Ok(AioChannel {
            ctx,
            file,
            block_size: block_size as u64,
            slots: Slots::new(AIO_DEPTH),
            queue: Box::new([IoControlBlock::default(); AIO_DEPTH]),
            queued: 0,
            events: vec![IoEvent::default(); AIO_DEPTH].into_boxed_slice(),
            in_kernel: 0,
            gate: ResetGate::new(),
            eventfd,
            error_logged: false,
        })
    }

    /// Fills slot `id`'s iocb for its next submission and queues it.
    fn queue(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as u64) else {
            return;
        };
        let Some(io) = slot.io.as_ref() else {
            return;
        };
        let x = &mut slot.xfer;
        let mut cb = IoControlBlock {
            aio_data: id as u64,
            aio_flags: IOCB_FLAG_RESFD,
            aio_resfd: self.eventfd.as_raw_fd() as u32,
            ..IoControlBlock::default()
        };
        match x.op {
            Op::Read | Op::Write | Op::ZeroFill => {
                let (ptr, n, off) = x.segments(io.iovs(), self.file.direct_align());
                cb.aio_lio_opcode = if x.op == Op::Read {
                    IOCB_CMD_PREADV as u16
                } else {
                    IOCB_CMD_PWRITEV as u16
                };
                cb.aio_fildes = self.file.fd(x.direct) as u32;
                cb.aio_buf = ptr as u64;
                cb.aio_nbytes = n as u64;
                cb.aio_offset = off as i64;
            }
            Op::Flush => {
                cb.aio_lio_opcode = IOCB_CMD_FDSYNC as u16;
                cb.aio_fildes = self.file.fd(false) as u32;
            }
            // Run synchronously in `submit`, never queued.
            Op::Fallocate { .. } => return,
        }
        // Never full: it has room for every slot and a slot is queued at most once.
        if let Some(entry) = self.queue.get_mut(self.queued) {
            *entry = cb;
            self.queued += 1;
        }
    }

    /// Drops the first `n` queued iocbs (submitted or refused); the rest move to the front.
    fn dequeue(&mut self, n: usize) {
        let n = n.min(self.queued);
        self.queue.copy_within(n..self.queued, 0);
        self.queued -= n;
    }

    /// Hands queued iocbs to the kernel; returns how many it took.
    fn submit_queued(&mut self) -> usize {
        let mut total = 0;
        while self.queued > 0 {
            let iocbs = self.queue.each_mut();
            // Each iocb names the iovec array in its slot's BdevIo or the slot's scratch
            // array, neither changed until its completion is reaped, and data buffers that are
            // valid until the request completes (`BdevIo::push_iov`) or are the shared zero
            // buffer (`file::zeroes`, static, never written). The context is destroyed (which
            // waits for the kernel) before the slots are dropped.
            match self.ctx.submit(&iocbs[..self.queued]) {
                Ok(0) => break,
                Ok(n) => {
                    self.dequeue(n);
                    self.in_kernel += n;
                    total += n;
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) => {
                    break
                }
                Err(e) => {
                    // The first iocb was refused: fail that request and go on with the rest.
                    let id = self.queue[0].aio_data as u32;
                    self.dequeue(1);
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    self.refused(id, errno);
                }
            }
        }
        total
    }

    fn refused(&mut self, id: u32, errno: i32) {
        let Some(slot) = self.slots.get_mut(id as u64) else {
            return;
        };
        let status = if slot.xfer.op == Op::Flush && errno == libc::EINVAL {
            // File systems without asynchronous fsync: do it here.
            match self.file.sync() {
                Ok(()) => IoStatus::Success,
                Err(e) => IoStatus::Failed(e.raw_os_error().unwrap_or(libc::EIO)),
            }
        } else {
            match slot.xfer.on_result(-(errno as i64)) {
                Outcome::Resubmit => {
                    self.queue(id);
                    return;
                }
                Outcome::Done(s) => s,
            }
        };
        if !self.error_logged && !status.is_success() {
            self.error_logged = true;
            tracing::warn!(file = %self.file.path(), "io_submit refused a request: {}", io::Error::from_raw_os_error(errno));
        }
        if let Some(io) = self.slots.remove(id as u64) {
            io.complete(status);
        }
    }

    /// Takes available completions; returns how many.
    fn reap(&mut self) -> usize {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let n = match self.ctx.get_events(0, &mut self.events, Some(&mut now)) {
            Ok(n) => n.min(self.events.len()),
            Err(_) => return 0,
        };
        for i in 0..n {
            let ev = self.events[i];
            self.in_kernel = self.in_kernel.saturating_sub(1);
            self.complete_one(ev.data, ev.res);
        }
        n
    }

    fn complete_one(&mut self, id: u64, res: i64) {
        let Some(slot) = self.slots.get_mut(id) else {
            tracing::warn!(file = %self.file.path(), "AIO completion for unknown request {id}");
            return;
        };
        match slot.xfer.on_result(res) {
            Outcome::Resubmit => self.queue(id as u32),
            Outcome::Done(status) => {
                if let Some(io) = self.slots.remove(id) {
                    io.complete(status);
                }
            }
        }
    }

    /// Runs an unmap or write-zeroes now, with `fallocate(2)`; if the file system has no
    /// fallocate, queues the write-zeroes as writes of zeroes instead.
    fn fallocate_now(&mut self, id: u32) {
        let Some(slot) = self.slots.get_mut(id as u64) else {
            return;
        };
        let status = loop {
            let Op::Fallocate { mode, .. } = slot.xfer.op else {
                break IoStatus::Failed(libc::EINVAL);
            };
            let res = self.file.fallocate(mode, slot.xfer.offset, slot.xfer.len);
            let outcome = slot.xfer.on_result(res);
            if let Some(errno) = slot.xfer.take_refused() {
                self.file.note_no_fallocate(errno);
            }
            match outcome {
                Outcome::Resubmit if slot.xfer.op == Op::ZeroFill => {
                    self.queue(id);
                    return;
                }
                Outcome::Resubmit => continue,
                Outcome::Done(s) => break s,
            }
        };
        if let Some(io) = self.slots.remove(id as u64) {
            io.complete(status);
        }
    }
}

impl DriverChannel for AioChannel {
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
        let direct = match (op, self.file.direct_align()) {
            (Op::Read | Op::Write, Some(a)) => a.fits(offset, io.iovs()),
            (Op::ZeroFill, Some(_)) => true,
            _ => false,
        };
        let id = self.slots.insert(io)?;
        if let Some(slot) = self.slots.get_mut(id as u64) {
            slot.xfer.begin(op, offset, len, direct);
        }
        if matches!(op, Op::Fallocate { .. }) {
            self.fallocate_now(id);
        } else {
            self.queue(id);
        }
        Ok(())
    }

    fn poll(&mut self) -> usize {
        let mut work = self.submit_queued();
        if self.in_kernel > 0 {
            work += self.reap();
        }
        if self.queued > 0 {
            work += self.submit_queued();
        }
        work + self.gate.settle(self.slots.in_use())
    }

    fn wake_fd(&self) -> Option<i32> {
        Some(self.eventfd.as_raw_fd())
    }

    fn must_poll(&self) -> bool {
        self.queued > 0 || self.gate.ready(self.slots.in_use())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bdev::{blocking, IoType};
    use crate::drivers::file::inject::Scope;
    use crate::drivers::file::test_support::{self as t, Driver};
    use crate::reactor::PollMode;
    use crate::Engine;

    const AIO: Driver = Driver {
        create: rpc::create,
        delete: rpc::delete,
        method: "bdev_aio_create",
        product: PRODUCT_NAME,
        key: "aio",
        extra: || json!({"fallocate": true}),
    };

    #[test]
    fn aio_round_trip_survives_restart_and_lands_in_the_file() {
        t::round_trip_and_restart(&AIO);
    }

    #[test]
    fn aio_multi_iovec_aligned_unaligned_and_longer_than_iov_max() {
        t::multi_iovec(&AIO);
    }

    #[test]
    fn aio_queue_deeper_than_the_channel_completes_in_full() {
        t::deep_queue(&AIO);
    }

    #[test]
    fn aio_unmap_and_write_zeroes_zero_their_range() {
        t::unmap_and_write_zeroes(&AIO);
    }

    #[test]
    fn aio_write_zeroes_on_a_file_system_without_fallocate_are_emulated() {
        let dir = tempfile::tempdir().unwrap();
        t::write_zeroes_without_fallocate(&AIO, dir.path(), Some(Scope::Always));
    }

    #[test]
    fn aio_write_zeroes_refused_at_run_time_fall_back_to_writing_zeroes() {
        let dir = tempfile::tempdir().unwrap();
        t::write_zeroes_without_fallocate(&AIO, dir.path(), Some(Scope::RunTime));
    }

    #[test]
    fn aio_mirror_plex_on_a_file_system_without_fallocate_survives_discard() {
        t::mirror_on_a_bdev_without_fallocate_keeps_both_plexes(&AIO);
    }

    #[test]
    fn aio_write_zeroes_on_ramfs_are_emulated() {
        t::write_zeroes_on_ramfs(&AIO);
    }

    #[test]
    fn aio_completes_in_interrupt_mode() {
        t::interrupt_mode(&AIO);
    }

    #[test]
    fn aio_completion_signals_the_wake_fd() {
        t::wake_fd_fires(&AIO);
    }

    #[test]
    fn aio_reads_past_a_shrunk_file_fail_with_eio() {
        t::shrunk_file_reads_fail(&AIO);
    }

    #[test]
    #[ignore = "needs PLEXD_TEST_BLOCK_DEVICE, a scratch block device whose data is destroyed"]
    fn aio_on_a_block_device() {
        t::block_device(&AIO);
    }

    #[test]
    fn aio_create_errors_leave_nothing() {
        t::create_errors(&AIO);
    }

    #[test]
    fn aio_readonly_refuses_writes_and_keeps_the_file() {
        let (_dir, path) = t::scratch_file(1 << 20);
        std::fs::write(&path, t::pattern(9, 1 << 20)).unwrap();
        let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
        rpc::create(&engine, AIO.params("A0", &path, json!({"readonly": true}))).unwrap();
        let b = engine.bdevs().get("A0").unwrap();
        assert!(!b.io_types().contains(IoType::Write));
        assert!(!b.io_types().contains(IoType::Unmap));
        assert!(!b.io_types().contains(IoType::WriteZeroes));
        let e = blocking::write(&engine, &b, 0, &[0u8; 512]).unwrap_err();
        assert!(
            matches!(
                e,
                blocking::BlockingIoError::Failed {
                    errno: libc::ENOTSUP,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            blocking::read(&engine, &b, 4096, 8192).unwrap(),
            t::pattern(9, 1 << 20)[4096..12288]
        );
        let (_, ds) = b.driver().driver_specific().unwrap();
        assert_eq!(ds["readonly"], json!(true));
        assert_eq!(
            b.driver().config(&b).unwrap()["params"]["readonly"],
            json!(true)
        );
        drop(b);
        rpc::delete(&engine, json!({"name": "A0"})).unwrap();
        engine.shutdown();
        t::same(
            &std::fs::read(&path).unwrap(),
            &t::pattern(9, 1 << 20),
            "file after readonly use",
        );
    }

    #[test]
    fn aio_without_fallocate_does_not_offer_unmap() {
        let (_dir, path) = t::scratch_file(1 << 20);
        let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
        rpc::create(
            &engine,
            json!({"name": "A1", "filename": path.to_str().unwrap()}),
        )
        .unwrap();
        let b = engine.bdevs().get("A1").unwrap();
        assert!(b.io_types().contains(IoType::Write));
        assert!(!b.io_types().contains(IoType::Unmap));
        let e = blocking::run_io(
            &engine,
            0,
            &b,
            IoType::Unmap,
            0,
            4096,
            None,
            std::time::Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                blocking::BlockingIoError::Failed {
                    errno: libc::ENOTSUP,
                    ..
                }
            ),
            "{e}"
        );
        drop(b);
        engine.shutdown();
    }

    #[test]
    fn aio_driver_specific_and_config_match_spdk() {
        let (_dir, path) = t::scratch_file(1 << 20);
        let p = path.to_str().unwrap();
        let engine = Engine::start(&[0], PollMode::Adaptive).unwrap();
        // SPDK's client sends nowait: false; it must be accepted.
        rpc::create(&engine, json!({"name": "A2", "filename": p, "readonly": false, "fallocate": false, "nowait": false})).unwrap();
        rpc::create(
            &engine,
            json!({"name": "A3", "filename": p, "block_size": 4096, "fallocate": true}),
        )
        .unwrap();
        let a2 = engine.bdevs().get("A2").unwrap();
        let a3 = engine.bdevs().get("A3").unwrap();
        assert_eq!(a2.driver().product_name(), "AIO disk");
        assert_eq!(
            a2.driver().driver_specific().unwrap(),
            (
                "aio",
                json!({"filename": p, "block_size_override": false, "readonly": false, "fallocate": false, "nowait": false, "write_zeroes": "unsupported", "unmap": "unsupported"})
            )
        );
        assert_eq!(
            a3.driver().driver_specific().unwrap().1["block_size_override"],
            json!(true)
        );
        // A detected block size is not saved (detected again on load); a chosen one is.
        let c2 = a2.driver().config(&a2).unwrap();
        let c3 = a3.driver().config(&a3).unwrap();
        assert!(c2["params"].get("block_size").is_none());
        assert_eq!(c3["params"]["block_size"], json!(4096));
        assert_eq!(c3["params"]["fallocate"], json!(true));
        assert_eq!(c3["params"]["uuid"], json!(a3.uuid().to_string()));
        drop((a2, a3));
        engine.shutdown();
    }
}
