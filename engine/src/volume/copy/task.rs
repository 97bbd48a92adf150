//! Long-running operations (resync after a crash, plex attach) as tasks with an id,
//! progress, rate and ETA, and the copy engine they share.
//!
//! A copy runs chunk by chunk on its own thread. For each chunk it raises the volume's
//! [`SyncBarrier`] on the chunk, waits until no guest write to it is in flight, copies the
//! chunk from the source plex to the targets, and lowers the barrier; guest writes that hit a
//! raised barrier wait in their channel. So a guest write can never be overwritten by an older
//! copy of its block, and mirrors end identical. Progress is checkpointed in the configuration
//! so a copy resumes after a crash. A copy cancelled while a write of it is still in flight
//! returns at once and leaves that write to a fence (`io::fence`), which keeps the chunk
//! locked until the disk answers.
//!
//! A copy given a todo ([`CopyTodo`]) is sparse: it jumps from its progress to the next todo
//! region and copies only the todo blocks of each chunk; the progress still sweeps the whole
//! volume (blocks outside the todo are equal by the caller's promise), and the task counts
//! what it copied and skipped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::bdev::blocking::{start_io, BlockingIoError};
use crate::bdev::{Bdev, IoType};
use crate::volume::copy::sparse::CopyTodo;
use crate::volume::io::barrier::SyncBarrier;
use crate::volume::io::driver::CopyProgress;
use crate::volume::io::fence::{FenceList, FencedWrite};
use crate::volume::model::layout::PlexGeometry;
use crate::Engine;

/// How a task ended, or that it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    /// Running.
    Running,
    /// Finished successfully.
    Done,
    /// Stopped by an operation (volume stop, deport, plex detach, shutdown); resumes from
    /// its checkpoint when the volume next starts.
    Cancelled,
    /// Failed; the message says why.
    Failed(String),
}

/// One long-running operation.
pub struct Task {
    /// Id for `task_wait`.
    pub id: u64,
    /// What it does (`resync`, `plex_attach`).
    pub kind: &'static str,
    /// Disk group.
    pub dg: String,
    /// Volume.
    pub volume: String,
    /// Plex being written (attach, move), if one.
    pub plex: Option<String>,
    /// Plex being read from: detaching it stops the copy.
    pub source: Option<String>,
    /// Plexes being written (the resync's targets; the attached or moved plex): detaching
    /// or dissociating one stops the copy before its space can be freed.
    pub targets: Vec<String>,
    total: u64,
    start_offset: u64,
    /// Blocks copied so far (shared with the volume's I/O path while this is its resync).
    progress: Arc<CopyProgress>,
    started: Instant,
    state: Mutex<TaskState>,
    /// Seconds from start to the end, once it ended.
    ended_after: Mutex<Option<f64>>,
    /// What the task found (a check's mismatches), once it ended.
    result: Mutex<Option<serde_json::Value>>,
    finished: std::sync::Condvar,
    cancel: AtomicBool,
    /// Held while a chunk is being copied: cancelling waits for it, so no copy I/O starts
    /// after a cancel returns (a write still in flight then is fenced: see `volume::io::fence`).
    chunk: Mutex<()>,
    /// Where a cancelled copy hands the write it still waits for.
    fences: Arc<FenceList>,
    /// The regions a sparse copy copies (`None`: every block).
    todo: Option<CopyTodo>,
    /// Why a copy that could have been sparse copies everything.
    why_full: Option<String>,
    /// Blocks copied (sparse copies; a full copy counts its progress).
    copied: AtomicU64,
    /// Blocks passed without copying them (outside the todo).
    skipped: AtomicU64,
    /// Blocks of todo regions from the start on: what a sparse copy has to copy.
    todo_blocks: u64,
    #[cfg(test)]
    hook: Option<Hook>,
}

/// Places where a test can stop a copy or the event thread to force an interleaving.
#[cfg(test)]
pub(crate) enum HookPoint<'a> {
    /// A copy is about to take the chunk starting at block `at`.
    Chunk {
        /// The copy.
        task: &'a Task,
        /// First block of the chunk.
        at: u64,
    },
    /// A subdisk move copied everything and is about to wait for writes in flight before
    /// it swaps the subdisks.
    MoveCopied,
    /// The event thread is about to handle a failed write.
    WriteFailed,
    /// A copy's write to a target failed and the copy is about to hand that target to its
    /// owner (which detaches it).
    CopyTargetFailed,
}

/// A test hook, called at every [`HookPoint`] of one volume manager.
#[cfg(test)]
pub(crate) type Hook = Arc<dyn Fn(HookPoint<'_>) + Send + Sync>;

impl Task {
    /// What the task found (a check's mismatch count and ranges), if it reports anything.
    pub fn result(&self) -> Option<serde_json::Value> {
        self.result
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records what the task found (before it is marked done).
    pub(crate) fn set_result(&self, v: serde_json::Value) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    /// The task's state.
    pub fn state(&self) -> TaskState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Blocks copied so far (including where it resumed from). For a sparse copy: its
    /// frontier, blocks skipped included.
    pub fn done(&self) -> u64 {
        self.progress.get()
    }

    /// What the copy copies: `full`, or why it is sparse (`drl`, `delta`).
    pub fn mode(&self) -> &'static str {
        self.todo.as_ref().map_or("full", |t| t.mode().as_str())
    }

    /// Why the copy copies everything although it could have been sparse, if its owner said.
    pub fn why_full(&self) -> Option<&str> {
        self.why_full.as_deref()
    }

    /// The regions a sparse copy copies.
    pub fn todo(&self) -> Option<&CopyTodo> {
        self.todo.as_ref()
    }

    /// Blocks really copied since the start (a full copy: its progress since the start).
    pub fn copied_blocks(&self) -> u64 {
        match self.todo {
            Some(_) => self.copied.load(Ordering::Relaxed),
            None => self.done().saturating_sub(self.start_offset),
        }
    }

    /// Blocks passed without copying them, because they are outside the todo (0 for a
    /// full copy).
    pub fn skipped_blocks(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Todo regions from the start on (those that hold a block at or past where the copy
    /// began); `None` for a full copy.
    pub fn regions_total(&self) -> Option<u64> {
        let t = self.todo.as_ref()?;
        Some(t.regions_touching(self.start_offset..self.total))
    }

    /// Todo regions the copy has finished (every block of theirs below its progress);
    /// `None` for a full copy.
    pub fn regions_copied(&self) -> Option<u64> {
        let t = self.todo.as_ref()?;
        Some(t.regions_done(self.start_offset, self.done()))
    }

    /// The runs `[first, end)` of the todo regions the copy has finished (those
    /// [`Task::regions_copied`] counts), at most [`Task::MAX_REGION_RANGES`] of them; `None`
    /// for a full copy.
    pub fn region_ranges_copied(&self) -> Option<Vec<(u64, u64)>> {
        let t = self.todo.as_ref()?;
        let ranges = t.ranges_done(self.start_offset, self.done(), Self::MAX_REGION_RANGES);
        Some(ranges.into_iter().map(|r| (r.start, r.end)).collect())
    }

    /// How many region ranges [`Task::region_ranges_copied`] gives at most.
    pub const MAX_REGION_RANGES: usize = 1024;

    /// Records that the progress moved past `n` blocks of which `copied` were copied.
    fn count(&self, n: u64, copied: u64) {
        self.copied.fetch_add(copied, Ordering::Relaxed);
        self.skipped
            .fetch_add(n.saturating_sub(copied), Ordering::Relaxed);
    }

    /// Moves the progress of a sparse copy from `at` to the next todo block (or `end`,
    /// when no todo block is left before it), counting what it passes as skipped. Returns
    /// the new progress. A full copy stays at `at`.
    pub(crate) fn skip_to_todo(&self, at: u64, end: u64) -> u64 {
        let Some(t) = &self.todo else {
            return at;
        };
        let next = t.next_block(at).unwrap_or(end).min(end);
        if next > at {
            self.count(next - at, 0);
            self.progress.set(next);
        }
        next.max(at)
    }

    /// The runs of `blocks` a copy has to copy: all of it for a full copy, the todo blocks
    /// of it for a sparse one.
    pub(crate) fn runs_in(&self, blocks: std::ops::Range<u64>) -> Vec<std::ops::Range<u64>> {
        match &self.todo {
            Some(t) => t.runs_in(blocks),
            None => vec![blocks],
        }
    }

    /// Records a chunk done: the progress moves to `to`; of the `n` blocks passed, `copied`
    /// were copied.
    pub(crate) fn chunk_done(&self, to: u64, n: u64, copied: u64) {
        self.count(n, copied);
        self.progress.set(to);
    }

    /// The progress counter, for the I/O path to read (`VolumeShared::resync`).
    pub(crate) fn progress(&self) -> &Arc<CopyProgress> {
        &self.progress
    }

    /// Whether the task was asked to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Held while the task works on a chunk (cancelling waits for it).
    pub(crate) fn chunk_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.chunk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The flag cancelling sets (for waits that must end on a cancel).
    pub(crate) fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    /// Calls the test hook, if one is set.
    #[cfg(test)]
    pub(crate) fn hook(&self, p: HookPoint<'_>) {
        if let Some(h) = &self.hook {
            h(p);
        }
    }

    pub(crate) fn set_state(&self, s: TaskState) {
        if s != TaskState::Running {
            *self.ended_after.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(self.started.elapsed().as_secs_f64());
        }
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
        self.finished.notify_all();
    }

    /// Cancels the task and waits until it no longer works on a chunk. Prompt even if a disk
    /// never answers: a copier waiting for an I/O notices the cancel within
    /// [`CANCEL_SLICE`] and fences the I/O instead of waiting on.
    fn cancel_and_wait(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        drop(self.chunk.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Where the task stands: its counters and the rate and ETA they give.
    pub fn progress_report(&self) -> TaskProgress {
        let done = self.done();
        let elapsed = self
            .ended_after
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(|| self.started.elapsed().as_secs_f64());
        let copied = self.copied_blocks();
        let rate = if elapsed > 0.0 {
            copied as f64 / elapsed
        } else {
            0.0
        };
        // A sparse copy has only its todo blocks left to copy.
        let left = match self.todo {
            Some(_) => self.todo_blocks.saturating_sub(copied),
            None => self.total.saturating_sub(done),
        };
        let eta = if rate > 0.0 && self.state() == TaskState::Running {
            Some((left as f64 / rate).ceil() as u64)
        } else {
            None
        };
        TaskProgress {
            done,
            total: self.total,
            rate,
            eta_secs: eta,
            elapsed_secs: elapsed,
        }
    }
}

/// A task's progress at one moment ([`Task::progress_report`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskProgress {
    /// Blocks copied so far (including where it resumed from).
    pub done: u64,
    /// Blocks to copy.
    pub total: u64,
    /// Blocks copied per second since the start (blocks a sparse copy skipped do not count).
    pub rate: f64,
    /// Seconds left at that rate, while it runs and the rate is known.
    pub eta_secs: Option<u64>,
    /// Seconds since the start (to the end, once it ended).
    pub elapsed_secs: f64,
}

/// What a new task copies: the arguments of [`TaskList::add`].
pub(crate) struct TaskSpec<'a> {
    /// What it is (`resync`, `plex_attach`, `subdisk_move`, `read_repair`).
    pub(crate) kind: &'static str,
    /// The disk group.
    pub(crate) dg: &'a str,
    /// The volume.
    pub(crate) volume: &'a str,
    /// The plex being written (attach, move), if one.
    pub(crate) plex: Option<&'a str>,
    /// Other plexes being written (a resync's targets).
    pub(crate) targets: &'a [String],
    /// The plex being read from, if one.
    pub(crate) source: Option<&'a str>,
    /// The block it starts from (a checkpoint when it resumes).
    pub(crate) start: u64,
    /// The block it ends at.
    pub(crate) total: u64,
    /// The regions to copy, for a sparse copy (`None`: every block from `start`).
    pub(crate) todo: Option<CopyTodo>,
    /// Why a copy that could have been sparse copies everything (shown with the task).
    pub(crate) why_full: Option<String>,
}

/// Every task of this plexd (finished ones are kept for `task_list`).
#[derive(Default)]
pub struct TaskList {
    tasks: Mutex<Vec<Arc<Task>>>,
    /// Read repairs running now: cancelled like tasks, but not listed (they are short).
    repairs: Mutex<Vec<Arc<Task>>>,
    /// Copy writes still in flight after their copy was cancelled.
    fences: Arc<FenceList>,
    next: AtomicU64,
    /// Test hook handed to every task (and called by the manager at its own hook points).
    #[cfg(test)]
    pub(crate) hook: Mutex<Option<Hook>>,
}

impl TaskList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Task>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls the test hook, if one is set.
    #[cfg(test)]
    pub(crate) fn hook(&self, p: HookPoint<'_>) {
        let h = self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(h) = h {
            h(p);
        }
    }

    /// Registers a running task that writes `spec.targets` (besides `spec.plex`).
    pub(crate) fn add(&self, spec: TaskSpec<'_>) -> Arc<Task> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let t = self.new_task(id, spec);
        self.lock().push(t.clone());
        t
    }

    fn new_task(&self, id: u64, spec: TaskSpec<'_>) -> Arc<Task> {
        let TaskSpec {
            kind,
            dg,
            volume,
            plex,
            targets,
            source,
            start,
            total,
            todo,
            why_full,
        } = spec;
        let todo_blocks = todo.as_ref().map_or(0, |t| t.blocks_in(start..total));
        let mut written: Vec<String> = plex.iter().map(|p| p.to_string()).collect();
        written.extend(targets.iter().filter(|t| Some(t.as_str()) != plex).cloned());
        Arc::new(Task {
            id,
            kind,
            dg: dg.to_string(),
            volume: volume.to_string(),
            plex: plex.map(str::to_string),
            source: source.map(str::to_string),
            targets: written,
            total,
            start_offset: start,
            progress: Arc::new(CopyProgress::new(start)),
            started: Instant::now(),
            state: Mutex::new(TaskState::Running),
            ended_after: Mutex::new(None),
            result: Mutex::new(None),
            finished: std::sync::Condvar::new(),
            cancel: AtomicBool::new(false),
            chunk: Mutex::new(()),
            fences: self.fences.clone(),
            todo,
            why_full,
            copied: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            todo_blocks,
            #[cfg(test)]
            hook: self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        })
    }

    fn repairs(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Task>>> {
        self.repairs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a read repair of plex `target` from plex `source` on volume `dg`/`volume`:
    /// cancelled like a copy writing `target` and reading `source` (it is not listed). End it
    /// with [`TaskList::end_repair`].
    pub(crate) fn start_repair(
        &self,
        dg: &str,
        volume: &str,
        source: &str,
        target: &str,
    ) -> Arc<Task> {
        // Id 0: not a listed task (`task_list` ids stay consecutive).
        let t = self.new_task(
            0,
            TaskSpec {
                kind: "read_repair",
                dg,
                volume,
                plex: Some(target),
                targets: &[],
                source: Some(source),
                start: 0,
                total: 0,
                todo: None,
                why_full: None,
            },
        );
        self.repairs().push(t.clone());
        t
    }

    /// A read repair ended.
    pub(crate) fn end_repair(&self, t: &Arc<Task>) {
        t.set_state(if t.cancelled() {
            TaskState::Cancelled
        } else {
            TaskState::Done
        });
        self.repairs().retain(|r| !Arc::ptr_eq(r, t));
    }

    /// Copy writes still in flight after their copy was cancelled.
    pub fn fences(&self) -> &Arc<FenceList> {
        &self.fences
    }

    /// Running tasks (read repairs included) that `f` selects.
    fn running_where(&self, f: impl Fn(&Task) -> bool) -> Vec<Arc<Task>> {
        let mut hit: Vec<Arc<Task>> = self
            .lock()
            .iter()
            .filter(|t| t.state() == TaskState::Running && f(t))
            .cloned()
            .collect();
        hit.extend(
            self.repairs()
                .iter()
                .filter(|t| t.state() == TaskState::Running && f(t))
                .cloned(),
        );
        hit
    }

    /// Every task.
    pub fn list(&self) -> Vec<Arc<Task>> {
        self.lock().clone()
    }

    /// A task by id.
    pub fn get(&self, id: u64) -> Option<Arc<Task>> {
        self.lock().iter().find(|t| t.id == id).cloned()
    }

    /// Waits until task `id` is no longer running (or `timeout`); returns it.
    pub fn wait(&self, id: u64, timeout: Duration) -> Option<Arc<Task>> {
        let t = self.get(id)?;
        let st = t.state.lock().unwrap_or_else(|p| p.into_inner());
        let _ = t
            .finished
            .wait_timeout_while(st, timeout, |s| *s == TaskState::Running)
            .unwrap_or_else(|p| p.into_inner());
        Some(t)
    }

    fn cancel_where(&self, f: impl Fn(&Task) -> bool) {
        for t in self.running_where(f) {
            t.cancel_and_wait();
        }
    }

    /// Stops the running tasks of a group.
    pub fn cancel_group(&self, dg: &str) {
        self.cancel_where(|t| t.dg == dg);
    }

    /// Stops the running tasks of a volume.
    pub fn cancel_volume(&self, dg: &str, volume: &str) {
        self.cancel_where(|t| t.dg == dg && t.volume == volume);
    }

    /// Stops the running task writing a plex.
    pub fn cancel_plex(&self, dg: &str, plex: &str) {
        self.cancel_where(|t| t.dg == dg && t.plex.as_deref() == Some(plex));
    }

    /// Stops the running tasks of a volume that write or read one of `plexes`, and returns
    /// them (their owner may restart them with another source or without that target).
    pub fn cancel_using(&self, dg: &str, volume: &str, plexes: &[String]) -> Vec<Arc<Task>> {
        let uses = |t: &Task| {
            [&t.plex, &t.source]
                .iter()
                .any(|p| p.as_ref().is_some_and(|p| plexes.contains(p)))
                || t.targets.iter().any(|p| plexes.contains(p))
        };
        let hit = self.running_where(|t| t.dg == dg && t.volume == volume && uses(t));
        for t in &hit {
            t.cancel_and_wait();
        }
        // Repairs are not restarted.
        hit.into_iter()
            .filter(|t| t.kind != "read_repair")
            .collect()
    }

    /// Stops the running tasks of `kind` on a volume.
    pub fn cancel_kind(&self, dg: &str, volume: &str, kind: &str) {
        self.cancel_where(|t| t.dg == dg && t.volume == volume && t.kind == kind);
    }

    /// Stops every running task.
    pub fn cancel_all(&self) {
        self.cancel_where(|_| true);
    }

    /// Whether a task is running on the volume.
    pub fn busy(&self, dg: &str, volume: &str) -> bool {
        self.lock()
            .iter()
            .any(|t| t.state() == TaskState::Running && t.dg == dg && t.volume == volume)
    }
}

/// One plex's geometry and disks, for the copy engine.
#[derive(Clone)]
pub(crate) struct CopyPlex {
    pub(crate) geometry: PlexGeometry,
    pub(crate) disks: Vec<Arc<Bdev>>,
}

/// How often a copier waiting for an I/O checks whether its task was cancelled (at most;
/// shorter if the barrier's I/O timeout is shorter).
pub(crate) const CANCEL_SLICE: Duration = Duration::from_millis(100);

/// Why [`plex_io`] did not complete.
#[derive(Debug)]
pub(crate) enum PlexIoError {
    /// An I/O failed (or could not be started); the message says why.
    Failed(String),
    /// The task was cancelled while it waited: no I/O of the range is waited for any more
    /// (a write still in flight was fenced). The caller lowers its hold and stops.
    Stopped,
}

impl From<String> for PlexIoError {
    fn from(e: String) -> Self {
        PlexIoError::Failed(e)
    }
}

/// The context every I/O of one copy shares: the arguments of [`plex_io`] and [`copy`]
/// that do not change from chunk to chunk.
#[derive(Clone, Copy)]
pub(crate) struct CopyIo<'a> {
    /// The engine (for the disks' channels).
    pub(crate) engine: &'a Engine,
    /// The task the I/O belongs to (cancellation, fences).
    pub(crate) task: &'a Task,
    /// The volume's barrier, whose chunk the copier holds.
    pub(crate) barrier: &'a Arc<SyncBarrier>,
    /// Bytes per block.
    pub(crate) block_size: u64,
}

/// Reads `[offset, offset + num)` of a plex into `buf`, or writes `buf` there, for `io.task`,
/// which holds the range's chunk under `io.barrier`. Each I/O is waited for until it really
/// completed, however long that takes (a warning every `barrier.io_timeout()`): releasing the
/// chunk while a copy write is still in flight would let that write land after a newer guest
/// write. If the task is cancelled meanwhile, the wait ends ([`PlexIoError::Stopped`]): a
/// write still in flight is handed to a fence that keeps the chunk raised until the disk
/// answers (see `volume::io::fence`), a read is dropped (it owns its buffer; a late read changes
/// nothing). So a disk that never answers cannot block whoever cancels the task.
pub(crate) fn plex_io(
    io: &CopyIo<'_>,
    p: &CopyPlex,
    offset: u64,
    num: u64,
    op: IoType,
    buf: &mut [u8],
) -> Result<(), PlexIoError> {
    let chunk = io.barrier.chunk_of(offset);
    plex_io_in(io, p, offset, num, op, buf, chunk)
}

/// [`plex_io`] for a plex whose offsets are not the volume's (a RAID-5 column): `chunk` is
/// the barrier chunk the caller holds, which a fence keeps raised for a write the task was
/// cancelled under.
pub(crate) fn plex_io_in(
    io: &CopyIo<'_>,
    p: &CopyPlex,
    offset: u64,
    num: u64,
    op: IoType,
    buf: &mut [u8],
    chunk: u64,
) -> Result<(), PlexIoError> {
    let CopyIo {
        engine,
        task,
        barrier,
        block_size: bs,
    } = *io;
    let mut segs = Vec::new();
    p.geometry
        .map(offset, num, |s| segs.push(s))
        .map_err(|e| e.to_string())?;
    for s in segs {
        if task.cancelled() {
            return Err(PlexIoError::Stopped);
        }
        let disk = p
            .disks
            .get(s.target as usize)
            .ok_or("plex refers to an unknown disk".to_string())?;
        let range = (s.req_offset * bs) as usize..((s.req_offset + s.len) * bs) as usize;
        let data = match op {
            IoType::Write => Some(&buf[range.clone()]),
            _ => None,
        };
        let (at, len) = (s.target_offset * bs, s.len * bs);
        let io = start_io(engine, 0, disk, op, at, len, data).map_err(|e| e.to_string())?;
        let mut waited = Duration::ZERO;
        let mut since_warn = Duration::ZERO;
        let out = loop {
            let timeout = barrier.io_timeout();
            let slice = timeout.min(CANCEL_SLICE);
            match io.wait(slice) {
                Err(BlockingIoError::TimedOut(_)) => {
                    waited += slice;
                    since_warn += slice;
                    if since_warn >= timeout {
                        since_warn = Duration::ZERO;
                        barrier.count_slow_io();
                        tracing::warn!(
                            disk = %disk.name(),
                            "copy {} of {} blocks at block {} has not completed after {:?}; its chunk stays locked (guest writes to it wait) until the disk answers",
                            op.name(),
                            s.len,
                            s.target_offset,
                            waited
                        );
                    }
                    if task.cancelled() {
                        if op != IoType::Write {
                            return Err(PlexIoError::Stopped);
                        }
                        let r = task.fences.fence(FencedWrite { dg: &task.dg, volume: &task.volume, barrier, chunk, disk, offset: at, len }, io);
                        // Completed meanwhile or fenced: either way this copy stops here.
                        drop(r);
                        return Err(PlexIoError::Stopped);
                    }
                }
                r => break r,
            }
        }
        .map_err(|e| e.to_string())?;
        if op == IoType::Read {
            buf[range].copy_from_slice(&out);
        }
    }
    Ok(())
}

/// Copies `[task.done, end)` from `source` to every plex in `targets`, chunk by chunk under
/// the barrier. Calls `checkpoint(offset)` about once a second; stops early (Ok(false)) when
/// the task is cancelled. `delay` is slept between chunks (throttle). A write to a target
/// that fails is handed to `target_failed(index, error)` once the chunk is released: true
/// drops that target and copies the chunk again to the others, false fails the copy. The
/// chunk counts as done (`Task::done`) only once every target still in the copy took it.
///
/// A sparse task (one with a todo) jumps from its progress to the next todo block and copies
/// only the todo blocks of each chunk it raises; the progress passes the rest without a copy.
pub(crate) fn copy(
    io: &CopyIo<'_>,
    source: &CopyPlex,
    targets: &[CopyPlex],
    end: u64,
    delay: Duration,
    mut checkpoint: impl FnMut(u64),
    mut target_failed: impl FnMut(usize, &str) -> bool,
) -> Result<bool, String> {
    let CopyIo {
        task,
        barrier,
        block_size: bs,
        ..
    } = *io;
    let chunk = barrier.chunk_blocks();
    let mut buf = vec![0u8; (chunk * bs) as usize];
    let mut last_ck = Instant::now();
    let mut dropped = vec![false; targets.len()];
    loop {
        if task.cancelled() {
            return Ok(false);
        }
        // Blocks outside a sparse copy's todo are equal already: the progress passes them.
        let at = task.skip_to_todo(task.done(), end);
        if at >= end {
            return Ok(true);
        }
        // Chunks are aligned so that one chunk is one barrier bucket.
        let n = (chunk - at % chunk).min(end - at);
        #[cfg(test)]
        task.hook(HookPoint::Chunk { task, at });
        let runs = task.runs_in(at..at + n);
        let mut failed: Vec<(usize, String)> = Vec::new();
        {
            let _g = task.chunk.lock().unwrap_or_else(|p| p.into_inner());
            if task.cancelled() {
                return Ok(false);
            }
            let c = at / chunk;
            if !barrier.raise(c, &task.cancel) {
                return Ok(false);
            }
            let r = runs.iter().try_for_each(|run| {
                let (o, k) = (run.start, run.end - run.start);
                let data = &mut buf[((o - at) * bs) as usize..((o - at + k) * bs) as usize];
                plex_io(io, source, o, k, IoType::Read, data)?;
                for (i, t) in targets.iter().enumerate() {
                    if dropped[i] || failed.iter().any(|(j, _)| *j == i) {
                        continue;
                    }
                    match plex_io(io, t, o, k, IoType::Write, data) {
                        Ok(()) => {}
                        Err(PlexIoError::Failed(e)) => failed.push((i, e)),
                        Err(PlexIoError::Stopped) => return Err(PlexIoError::Stopped),
                    }
                }
                Ok(())
            });
            // A write still in flight keeps the chunk raised through its fence.
            barrier.lower(c);
            match r {
                Ok(()) => {}
                Err(PlexIoError::Stopped) => return Ok(false),
                Err(PlexIoError::Failed(e)) => return Err(e),
            }
            if failed.is_empty() {
                let copied = runs.iter().map(|r| r.end - r.start).sum();
                task.chunk_done(at + n, n, copied);
            }
        }
        if !failed.is_empty() {
            // `done` stays before this chunk: reads trust it (a plex counted in sync may
            // serve a read the source failed, and repair the source), and a target that
            // failed the chunk stays in the map until its owner has detached it. The chunk
            // is copied again to the targets left (or the cancelled copy ends).
            for (i, e) in failed {
                #[cfg(test)]
                task.hook(HookPoint::CopyTargetFailed);
                if !target_failed(i, &e) {
                    return Err(e);
                }
                dropped[i] = true;
            }
            continue;
        }
        if last_ck.elapsed() >= Duration::from_secs(1) {
            checkpoint(at + n);
            last_ck = Instant::now();
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
    }
}
