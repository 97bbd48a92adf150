//! The vhost-user protocol for one connection, on the connection's control thread: feature
//! negotiation, the memory table, ring set-up, and handing each started, enabled ring to a
//! reactor (and taking it back on GET_VRING_BASE, disable or disconnect).

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use plexd_engine::bdev::Bdev;
use plexd_engine::Engine;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags, VhostUserInflight,
    VhostUserLog, VhostUserMemoryRegion, VhostUserProtocolFeatures, VhostUserShMemConfig,
    VhostUserSharedMsg, VhostUserSingleMemoryRegion, VhostUserVirtioFeatures,
    VhostUserVringAddrFlags, VhostUserVringState,
};
use vhost::vhost_user::{
    Backend, Error as VuError, GpuBackend, Result as VuResult, VhostUserBackendReqHandlerMut,
};
use vhost::VhostUserMemoryRegionBase;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::blk_config::{config_slice, config_space, device_features, BlkGeometry};
use super::inflight::{queue_region_size, InflightMap};
use super::memory::MemoryTable;
use super::vring::{start_on_this_reactor, Cmd, VringSpec};

/// Largest ring plexd accepts.
pub const MAX_QUEUE_SIZE: u32 = 1024;
/// Memory slots offered (CONFIGURE_MEM_SLOTS).
pub const MAX_MEM_SLOTS: u64 = 32;

/// What a controller exports, shared by its connections.
#[derive(Clone)]
pub struct Export {
    /// Controller name.
    pub ctrlr: String,
    /// The bdev.
    pub bdev: Arc<Bdev>,
    /// Read-only export.
    pub readonly: bool,
    /// Reactor indices serving this controller's queues, in order.
    pub reactors: Vec<usize>,
    /// Number of request queues offered.
    pub num_queues: u16,
    /// The engine.
    pub engine: Arc<Engine>,
    /// How long a ring stop waits for the worker's requests in flight before it logs that
    /// the ring is still draining (and counts it in `stop_overruns`).
    pub stop_wait: Duration,
    /// Set when the controller shuts down.
    pub shutting_down: Arc<AtomicBool>,
    /// Ring stops that waited longer than `stop_wait` (one count per period waited).
    pub stop_overruns: Arc<AtomicU64>,
}

#[derive(Default)]
struct VringSetup {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    base: u16,
    kick: Option<File>,
    call: Option<File>,
    err: Option<File>,
    enabled: bool,
    running: Option<Running>,
}

struct Running {
    reactor: usize,
    cmds: crossbeam::channel::Sender<Cmd>,
    /// Where the worker answers `Stop`, once it was sent: a stop that gave up (shutdown)
    /// leaves the ring with its worker, and it is never restarted.
    stopped: Option<crossbeam::channel::Receiver<u16>>,
}

/// One connection's protocol state.
pub struct BlkBackend {
    export: Export,
    acked_features: u64,
    acked_protocol: u64,
    owner: bool,
    memory: MemoryTable,
    mem: Option<Arc<GuestMemoryMmap>>,
    vrings: Vec<VringSetup>,
    inflight: Option<Arc<InflightMap>>,
}

fn op(msg: &'static str) -> VuError {
    VuError::InvalidOperation(msg)
}

impl BlkBackend {
    /// A fresh connection.
    pub fn new(export: Export) -> Self {
        let n = export.num_queues as usize;
        BlkBackend {
            export,
            acked_features: 0,
            acked_protocol: 0,
            owner: false,
            memory: MemoryTable::default(),
            mem: None,
            vrings: (0..n).map(|_| VringSetup::default()).collect(),
            inflight: None,
        }
    }

    fn features(&self) -> u64 {
        let b = &self.export.bdev;
        use plexd_engine::bdev::IoType;
        device_features(
            self.export.readonly,
            self.export.num_queues > 1,
            b.io_types().contains(IoType::Unmap),
            b.io_types().contains(IoType::WriteZeroes),
        ) | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features() -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::INFLIGHT_SHMFD
    }

    fn vring(&mut self, index: u32) -> VuResult<&mut VringSetup> {
        self.vrings
            .get_mut(index as usize)
            .ok_or(VuError::InvalidParam)
    }

    fn protocol_negotiated(&self) -> bool {
        self.acked_features & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits() != 0
    }

    /// Stops the ring if a reactor serves it; returns its next available index.
    ///
    /// The worker answers only once every request it took from the ring has completed, and
    /// until then it owns the ring (it still writes the used ring and the inflight area).
    /// So this waits as long as that takes: handing back a base earlier would let the
    /// front-end restart the ring while the old worker runs, and two workers would run heads
    /// twice and corrupt the used ring. Every `stop_wait` without an answer is logged and
    /// counted. Only when the controller shuts down does the wait give up: the ring then
    /// stays with its worker, is reported as not stopped (None) and is never restarted.
    fn stop_vring(&mut self, index: usize) -> Option<u16> {
        let export = &self.export;
        let v = self.vrings.get_mut(index)?;
        let running = v.running.as_mut()?;
        let rx = match &running.stopped {
            Some(rx) => rx.clone(),
            None => {
                let (tx, rx) = crossbeam::channel::bounded(1);
                let _ = running.cmds.send(Cmd::Stop(tx));
                // Wake the reactor in case it sleeps.
                export.engine.reactors().send_msg(running.reactor, || {});
                running.stopped = Some(rx.clone());
                rx
            }
        };
        let mut waited = Duration::ZERO;
        loop {
            match rx.recv_timeout(export.stop_wait) {
                Ok(next) => {
                    v.running = None;
                    v.base = next;
                    if !waited.is_zero() {
                        tracing::warn!(ctrlr = %export.ctrlr, queue = index, "virtqueue drained after {waited:?}");
                    }
                    return Some(next);
                }
                Err(crossbeam::channel::RecvTimeoutError::Disconnected) => {
                    // The worker went away without answering (its reactor stopped): nothing
                    // owns the ring any more, but where it stopped is unknown.
                    v.running = None;
                    tracing::error!(ctrlr = %export.ctrlr, queue = index, "virtqueue worker vanished while stopping");
                    return None;
                }
                Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                    waited += export.stop_wait;
                    export.stop_overruns.fetch_add(1, Ordering::Relaxed);
                    if export.shutting_down.load(Ordering::SeqCst) {
                        tracing::error!(ctrlr = %export.ctrlr, queue = index, "virtqueue still has requests in flight after {waited:?} and the controller is shutting down: the ring stays with its worker and is not restarted");
                        return None;
                    }
                    tracing::warn!(ctrlr = %export.ctrlr, queue = index, "virtqueue still has requests in flight after {waited:?} (a slow or stuck bdev); the stop keeps waiting, as the ring cannot be handed back while they run");
                }
            }
        }
    }

    /// Stops every ring (disconnect, reset).
    pub fn stop_all(&mut self) {
        for i in 0..self.vrings.len() {
            self.stop_vring(i);
        }
    }

    /// Starts ring `index` if it is fully set up, enabled and not yet running.
    fn maybe_start(&mut self, index: usize) -> VuResult<()> {
        let event_idx = self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        let Some(mem) = self.mem.clone() else {
            return Ok(());
        };
        let reactors = self.export.reactors.clone();
        let v = self.vrings.get_mut(index).ok_or(VuError::InvalidParam)?;
        if v.running.as_ref().is_some_and(|r| r.stopped.is_some()) {
            return Err(op(
                "the virtqueue's previous worker still has requests in flight; not restarted",
            ));
        }
        if v.running.is_some() || !v.enabled || v.kick.is_none() || v.size == 0 || v.desc == 0 {
            return Ok(());
        }
        let tr = |vva: u64| self.memory.vva_to_gpa(vva).ok_or(VuError::InvalidParam);
        let (desc, avail, used) = (tr(v.desc)?, tr(v.avail)?, tr(v.used)?);
        let mut q = Queue::new(v.size).map_err(|_| VuError::InvalidParam)?;
        q.set_size(v.size);
        q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        q.set_event_idx(event_idx);
        q.set_next_avail(v.base);
        q.set_next_used(v.base);
        q.set_ready(true);
        if !q.is_valid(&*mem) {
            return Err(op("virtqueue addresses are not inside guest memory"));
        }
        // With an inflight area, resume from the guest's used index and resubmit what the
        // previous plexd left in flight, in the order it fetched them.
        let mut resubmit = Vec::new();
        let mut counter_start = 0;
        let tracker = self
            .inflight
            .as_ref()
            .filter(|m| m.queue_size() == v.size)
            .and_then(|m| m.queue(index as u16));
        if let Some(t) = &tracker {
            let used = q
                .used_idx(&*mem, std::sync::atomic::Ordering::Acquire)
                .map_err(|_| op("cannot read the used ring"))?
                .0;
            let (pending, max) = t.recover(used);
            counter_start = max;
            q.set_next_used(used);
            q.set_next_avail(used.wrapping_add(pending.len() as u16));
            resubmit = pending;
        }
        let kick = v
            .kick
            .as_ref()
            .and_then(|k| k.try_clone().ok())
            .ok_or(op("cannot duplicate the kick fd"))?;
        let call = v.call.as_ref().and_then(|c| c.try_clone().ok());
        let err = v.err.as_ref().and_then(|e| e.try_clone().ok());
        let reactor = reactors[index % reactors.len()];
        let (tx, rx) = crossbeam::channel::unbounded();
        let spec = VringSpec {
            ctrlr: self.export.ctrlr.clone(),
            index: index as u16,
            queue: q,
            mem,
            faults: self.memory.faults().clone(),
            kick,
            call,
            err,
            bdev: self.export.bdev.clone(),
            readonly: self.export.readonly,
            cmds: rx,
            inflight: tracker,
            resubmit,
            counter_start,
        };
        let started = self
            .export
            .engine
            .reactors()
            .call(reactor, move || start_on_this_reactor(spec));
        match started {
            Some(Ok(())) => {
                v.running = Some(Running {
                    reactor,
                    cmds: tx,
                    stopped: None,
                });
                tracing::info!(ctrlr = %self.export.ctrlr, queue = index, reactor, "virtqueue served by reactor");
                Ok(())
            }
            Some(Err(e)) => {
                tracing::error!(ctrlr = %self.export.ctrlr, queue = index, "cannot start virtqueue: {e}");
                Err(op("cannot start the virtqueue on its reactor"))
            }
            None => Err(op("reactor unavailable")),
        }
    }

    /// Hands a snapshot of the memory table to every running ring and waits until each has
    /// applied it: the front-end is acknowledged only afterwards, so every request it submits
    /// after the acknowledgement is translated with the new table (a request parsed with the
    /// old one would miss a region just added).
    fn publish_memory(&mut self) -> VuResult<()> {
        let snap = self.memory.snapshot().map_err(|e| {
            tracing::error!(ctrlr = %self.export.ctrlr, "{e}");
            VuError::InvalidParam
        })?;
        let export = &self.export;
        let mut pending = Vec::new();
        for (i, v) in self.vrings.iter().enumerate() {
            if let Some(r) = &v.running {
                let (tx, rx) = crossbeam::channel::bounded(1);
                if r.cmds
                    .send(Cmd::SetMem(snap.clone(), self.memory.faults().clone(), tx))
                    .is_ok()
                {
                    export.engine.reactors().send_msg(r.reactor, || {});
                    pending.push((i, rx));
                }
            }
        }
        for (i, rx) in pending {
            let mut waited = Duration::ZERO;
            loop {
                match rx.recv_timeout(export.stop_wait) {
                    // Applied, or the worker is gone (it fetches nothing any more).
                    Ok(()) | Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
                    Err(crossbeam::channel::RecvTimeoutError::Timeout) => {
                        waited += export.stop_wait;
                        if export.shutting_down.load(Ordering::SeqCst) {
                            tracing::error!(ctrlr = %export.ctrlr, queue = i, "the memory table change was not applied within {waited:?} and the controller is shutting down");
                            return Err(VuError::BackendInternalError);
                        }
                        tracing::warn!(ctrlr = %export.ctrlr, queue = i, "the virtqueue's reactor has not applied the new memory table after {waited:?}; still waiting");
                    }
                }
            }
        }
        self.mem = Some(snap);
        // Rings set up and enabled before the front-end sent any memory start now.
        for i in 0..self.vrings.len() {
            if self.vrings[i].running.is_none() {
                if let Err(e) = self.maybe_start(i) {
                    tracing::warn!(ctrlr = %self.export.ctrlr, queue = i, "virtqueue not started with the new memory table: {e}");
                }
            }
        }
        Ok(())
    }
}

impl VhostUserBackendReqHandlerMut for BlkBackend {
    fn set_owner(&mut self) -> VuResult<()> {
        if self.owner {
            return Err(op("owner already set"));
        }
        self.owner = true;
        Ok(())
    }

    fn reset_owner(&mut self) -> VuResult<()> {
        self.stop_all();
        self.owner = false;
        Ok(())
    }

    fn reset_device(&mut self) -> VuResult<()> {
        self.stop_all();
        for v in self.vrings.iter_mut() {
            // A ring whose stop gave up stays with its worker (see `stop_vring`).
            *v = VringSetup {
                running: v.running.take(),
                ..VringSetup::default()
            };
        }
        Ok(())
    }

    fn get_features(&mut self) -> VuResult<u64> {
        Ok(self.features())
    }

    fn set_features(&mut self, features: u64) -> VuResult<()> {
        if features & !self.features() != 0 {
            return Err(VuError::InvalidParam);
        }
        self.acked_features = features;
        // Without protocol features, rings start enabled.
        if !self.protocol_negotiated() {
            for v in self.vrings.iter_mut() {
                v.enabled = true;
            }
        }
        Ok(())
    }

    fn set_mem_table(
        &mut self,
        ctx: &[VhostUserMemoryRegion],
        files: Vec<File>,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<Vec<VhostUserMemoryRegionBase>>> {
        if ctx.len() != files.len() {
            return Err(VuError::InvalidParam);
        }
        // The vhost crate already refuses more than 32 regions in one message; check against
        // the slots offered anyway (each region takes an entry in the process-wide SIGBUS
        // guard table). The files are closed on return.
        if ctx.len() as u64 > MAX_MEM_SLOTS {
            tracing::error!(ctrlr = %self.export.ctrlr, regions = ctx.len(), "memory table refused: more than the {MAX_MEM_SLOTS} memory slots offered");
            return Err(VuError::InvalidParam);
        }
        let mut regions = Vec::with_capacity(ctx.len());
        // A new table starts unpoisoned: faults in the old one do not count against it.
        let faults = Arc::new(std::sync::atomic::AtomicU64::new(0));
        for (r, f) in ctx.iter().zip(files) {
            let region = MemoryTable::map_region(
                r.guest_phys_addr,
                r.memory_size,
                r.user_addr,
                r.mmap_offset,
                f,
                &faults,
            )
            .map_err(|e| {
                tracing::error!(ctrlr = %self.export.ctrlr, "{e}");
                VuError::InvalidParam
            })?;
            regions.push(region);
        }
        self.memory.set(regions, faults);
        self.publish_memory()?;
        Ok(None)
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> VuResult<()> {
        if num == 0 || num > MAX_QUEUE_SIZE || !num.is_power_of_two() {
            return Err(VuError::InvalidParam);
        }
        self.vring(index)?.size = num as u16;
        Ok(())
    }

    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> VuResult<()> {
        let v = self.vring(index)?;
        v.desc = descriptor;
        v.used = used;
        v.avail = available;
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> VuResult<()> {
        self.vring(index)?.base = base as u16;
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> VuResult<VhostUserVringState> {
        if index as usize >= self.vrings.len() {
            return Err(VuError::InvalidParam);
        }
        let next = self.stop_vring(index as usize);
        let v = self.vring(index)?;
        if v.running.is_some() {
            // Never a base while the old worker still owns the ring.
            return Err(op(
                "the virtqueue still has requests in flight (controller shutting down)",
            ));
        }
        let base = next.unwrap_or(v.base);
        v.kick = None;
        v.call = None;
        v.enabled = false;
        Ok(VhostUserVringState::new(index, base as u32))
    }

    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        self.vring(index as u32)?.kick = fd;
        self.maybe_start(index as usize)
    }

    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        let restart = self
            .vrings
            .get(index as usize)
            .is_some_and(|v| v.running.is_some());
        if restart {
            self.stop_vring(index as usize);
        }
        self.vring(index as u32)?.call = fd;
        if restart {
            self.maybe_start(index as usize)?;
        }
        Ok(())
    }

    fn set_vring_err(&mut self, index: u8, fd: Option<File>) -> VuResult<()> {
        // Used by rings started from now on (a running ring keeps the one it had).
        self.vring(index as u32)?.err = fd;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> VuResult<VhostUserProtocolFeatures> {
        Ok(Self::protocol_features())
    }

    fn set_protocol_features(&mut self, features: u64) -> VuResult<()> {
        self.acked_protocol = features & Self::protocol_features().bits();
        Ok(())
    }

    fn get_queue_num(&mut self) -> VuResult<u64> {
        Ok(self.export.num_queues as u64)
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> VuResult<()> {
        if !self.protocol_negotiated() {
            return Err(VuError::InactiveFeature(
                VhostUserVirtioFeatures::PROTOCOL_FEATURES,
            ));
        }
        self.vring(index)?.enabled = enable;
        if enable {
            self.maybe_start(index as usize)
        } else {
            self.stop_vring(index as usize);
            Ok(())
        }
    }

    fn get_config(
        &mut self,
        offset: u32,
        size: u32,
        _flags: VhostUserConfigFlags,
    ) -> VuResult<Vec<u8>> {
        let b = &self.export.bdev;
        let space = config_space(&BlkGeometry {
            block_size: b.block_size(),
            size_bytes: b.num_blocks() * b.block_size() as u64,
            num_queues: self.export.num_queues,
        });
        config_slice(&space, offset, size).ok_or(VuError::InvalidParam)
    }

    fn set_config(
        &mut self,
        _offset: u32,
        _buf: &[u8],
        _flags: VhostUserConfigFlags,
    ) -> VuResult<()> {
        // The writeback field is not offered (no CONFIG_WCE); nothing else is writable.
        Err(op("the virtio-blk configuration space is read-only"))
    }

    fn set_backend_req_fd(&mut self, _backend: Backend) {}

    fn set_gpu_socket(&mut self, _gpu: GpuBackend) -> VuResult<()> {
        Err(op("not a GPU device"))
    }

    fn get_shared_object(&mut self, _uuid: VhostUserSharedMsg) -> VuResult<File> {
        Err(op("shared objects are not supported"))
    }

    fn get_inflight_fd(
        &mut self,
        inflight: &VhostUserInflight,
    ) -> VuResult<(VhostUserInflight, File)> {
        let (nq, qs) = (inflight.num_queues, inflight.queue_size);
        if nq == 0 || nq > self.export.num_queues || qs == 0 || qs as u32 > MAX_QUEUE_SIZE {
            return Err(VuError::InvalidParam);
        }
        let (map, file) = InflightMap::create(nq, qs).map_err(|e| {
            tracing::error!(ctrlr = %self.export.ctrlr, "cannot create the inflight area: {e}");
            VuError::BackendInternalError
        })?;
        let reply = VhostUserInflight {
            mmap_size: (queue_region_size(qs) * nq as usize) as u64,
            mmap_offset: 0,
            num_queues: nq,
            queue_size: qs,
        };
        self.inflight = Some(map);
        Ok((reply, file))
    }

    fn set_inflight_fd(&mut self, inflight: &VhostUserInflight, file: File) -> VuResult<()> {
        let len = usize::try_from(inflight.mmap_size).map_err(|_| VuError::InvalidParam)?;
        if inflight.num_queues > self.export.num_queues {
            return Err(VuError::InvalidParam);
        }
        let map = InflightMap::map(
            &file,
            inflight.mmap_offset,
            len,
            inflight.num_queues,
            inflight.queue_size,
        )
        .map_err(|e| {
            tracing::error!(ctrlr = %self.export.ctrlr, "cannot map the inflight area: {e}");
            VuError::InvalidParam
        })?;
        self.inflight = Some(map);
        Ok(())
    }

    fn get_max_mem_slots(&mut self) -> VuResult<u64> {
        Ok(MAX_MEM_SLOTS)
    }

    fn add_mem_region(
        &mut self,
        region: &VhostUserSingleMemoryRegion,
        fd: File,
        _postcopy: Option<bool>,
    ) -> VuResult<Option<VhostUserMemoryRegionBase>> {
        // Refused before anything is mapped or registered with the SIGBUS guard table (shared
        // by every controller): the table stays as it was and `fd` is closed on return.
        if self.memory.len() as u64 >= MAX_MEM_SLOTS {
            tracing::error!(ctrlr = %self.export.ctrlr, gpa = { region.guest_phys_addr }, "memory region refused: all {MAX_MEM_SLOTS} memory slots offered are in use; remove a region first (REM_MEM_REG)");
            return Err(VuError::InvalidParam);
        }
        let r = MemoryTable::map_region(
            region.guest_phys_addr,
            region.memory_size,
            region.user_addr,
            region.mmap_offset,
            fd,
            self.memory.faults(),
        )
        .map_err(|e| {
            tracing::error!(ctrlr = %self.export.ctrlr, "{e}");
            VuError::InvalidParam
        })?;
        let mut table = self.memory.clone();
        table.add(r);
        let old = std::mem::replace(&mut self.memory, table);
        if let Err(e) = self.publish_memory() {
            self.memory = old;
            return Err(e);
        }
        Ok(None)
    }

    fn remove_mem_region(&mut self, region: &VhostUserSingleMemoryRegion) -> VuResult<()> {
        if !self
            .memory
            .remove(region.guest_phys_addr, region.memory_size)
        {
            return Err(VuError::InvalidParam);
        }
        if self.memory.is_empty() {
            self.mem = None;
            super::sigbus::sweep();
            return Ok(());
        }
        let r = self.publish_memory();
        // Release the removed region's mapping and guard-table entry now if no reactor holds
        // it any more (otherwise the next mapping's sweep does).
        super::sigbus::sweep();
        r
    }

    fn set_device_state_fd(
        &mut self,
        _direction: VhostTransferStateDirection,
        _phase: VhostTransferStatePhase,
        _fd: File,
    ) -> VuResult<Option<File>> {
        Err(op("device state transfer is not supported"))
    }

    fn check_device_state(&mut self) -> VuResult<()> {
        Err(op("device state transfer is not supported"))
    }

    fn get_shmem_config(&mut self) -> VuResult<VhostUserShMemConfig> {
        Err(op("shared memory regions are not supported"))
    }

    fn set_log_base(&mut self, _log: &VhostUserLog, _file: File) -> VuResult<()> {
        Err(op("dirty logging (migration) is not supported"))
    }
}
