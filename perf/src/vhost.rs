//! `plexperf --vhost-user SOCKET`: the same workloads as the in-process jobs, driven as a
//! vhost-user front-end against any vhost-user-blk back-end (plexd, qemu-storage-daemon, SPDK).
//!
//! The virtio-blk driver side is the `blkio` crate (libblkio's pure-Rust core): it negotiates
//! the protocol, lays out the split rings in a memfd it shares with the back-end and turns
//! requests into descriptor chains. plexperf adds one memory region for the data buffers
//! (every buffer of every queue lives there, so the back-end can reach them) and runs each
//! virtqueue on its own thread with `-q` requests in flight, resubmitting from the completion
//! loop. Nothing on that loop allocates: slots, buffers, the completion array and the
//! histogram are all set up before the first request.

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use blkio::{Blkio, Blkioq, Completion, MemoryRegion, ReqFlags};
use hdrhistogram::Histogram;
use plexd_engine::reactor::tsc;

use crate::job::JobResult;
use crate::workload::{check_pattern, fill_pattern, Rng, Workload};

/// What a vhost-user run does.
#[derive(Debug, Clone)]
pub struct VhostSpec {
    /// The back-end's vhost-user socket.
    pub socket: PathBuf,
    /// Virtqueues, each driven by its own thread.
    pub queues: u32,
    /// Workload.
    pub workload: Workload,
    /// Bytes per request (a multiple of the device's block size).
    pub io_size: usize,
    /// Requests kept in flight per queue.
    pub queue_depth: u32,
    /// Read percentage for rw/randrw.
    pub read_pct: u32,
    /// Run time (None: until `max_ios`).
    pub duration: Option<Duration>,
    /// Stop each queue after this many requests (None: until `duration`).
    pub max_ios: Option<u64>,
    /// PRNG seed.
    pub seed: u64,
    /// Busy-poll the used rings (true, like bdevperf) or sleep on the call eventfd.
    pub poll: bool,
    /// Virtqueue size (None: enough descriptors for `queue_depth`, at most 1024).
    pub queue_size: Option<u32>,
    /// Pin queue `i`'s thread to `cpus[i % len]` (empty: no pinning).
    pub cpus: Vec<usize>,
    /// Where the data buffers are mapped (see [`BufferPlacement`]).
    pub placement: BufferPlacement,
    /// Set to true to end the run early.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Where the shared data-buffer region goes in plexperf's address space. The front-end's
/// virtual addresses double as guest-physical addresses in vhost-user, so this decides the
/// order in which the back-end sees the regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferPlacement {
    /// Above the rings: regions arrive in ascending address order, as QEMU's guest RAM does.
    AboveRings,
    /// Wherever the kernel puts it (usually below the rings): regions arrive out of order,
    /// which a back-end must accept too (kept to reproduce back-end bugs).
    Anywhere,
}

impl std::str::FromStr for BufferPlacement {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "above-rings" => Ok(BufferPlacement::AboveRings),
            "anywhere" => Ok(BufferPlacement::Anywhere),
            o => Err(format!(
                "unknown placement '{o}': use above-rings or anywhere"
            )),
        }
    }
}

/// What the back-end told us about the device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Capacity in bytes.
    pub capacity: u64,
    /// Logical block size (request alignment) in bytes.
    pub block_size: u64,
    /// Queues the back-end offers.
    pub max_queues: u32,
    /// Virtqueue size in use.
    pub queue_size: u32,
}

/// Why a vhost-user run failed.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// Connecting or negotiating failed.
    #[error("{socket}: {message}")]
    Setup {
        /// The socket.
        socket: String,
        /// What went wrong.
        message: String,
    },
    /// The spec does not fit the device.
    #[error("{0}")]
    Spec(String),
    /// A queue failed while running.
    #[error("queue {queue}: {message}")]
    Queue {
        /// Queue index.
        queue: u32,
        /// What went wrong.
        message: String,
    },
}

/// The shared data-buffer region: a memfd mapping whose lifetime is this value's.
struct Buffers {
    region: MemoryRegion,
    owned: bool,
}

impl Buffers {
    /// Maps `len` bytes of a fresh memfd at an address above every `virtio-ring` mapping of
    /// this process (or anywhere).
    fn map(len: usize, placement: BufferPlacement) -> Result<Buffers, String> {
        // SAFETY: the name is a valid NUL-terminated string; flags 0.
        let fd = unsafe { libc::memfd_create(c"plexperf-buffers".as_ptr(), 0) };
        if fd < 0 {
            return Err(format!("memfd_create: {}", std::io::Error::last_os_error()));
        }
        let fail = |what: &str| {
            let e = std::io::Error::last_os_error();
            // SAFETY: fd is ours and open.
            unsafe { libc::close(fd) };
            Err(format!("{what}: {e}"))
        };
        // SAFETY: fd is a memfd we own.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            return fail("ftruncate");
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let addr = match placement {
            BufferPlacement::Anywhere => {
                // SAFETY: a fresh shared mapping of our memfd at a kernel-chosen address.
                let p =
                    unsafe { libc::mmap(std::ptr::null_mut(), len, prot, libc::MAP_SHARED, fd, 0) };
                if p == libc::MAP_FAILED {
                    return fail("mmap");
                }
                p as usize
            }
            BufferPlacement::AboveRings => {
                let step = 2usize << 20;
                let top = ring_top().unwrap_or(0);
                let mut hint = (top + step) & !(step - 1);
                let mut got = None;
                for _ in 0..65536 {
                    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; it fails
                    // with EEXIST instead, and we then try higher.
                    let p = unsafe {
                        libc::mmap(
                            hint as *mut libc::c_void,
                            len,
                            prot,
                            libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE,
                            fd,
                            0,
                        )
                    };
                    if p != libc::MAP_FAILED {
                        got = Some(p as usize);
                        break;
                    }
                    hint = match hint.checked_add(step) {
                        Some(h) => h,
                        None => break,
                    };
                }
                match got {
                    Some(a) => a,
                    None => return fail("mmap above the rings"),
                }
            }
        };
        Ok(Buffers {
            region: MemoryRegion {
                addr,
                iova: 0,
                len,
                fd,
                fd_offset: 0,
                flags: 0,
            },
            owned: true,
        })
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: the mapping and the fd were created by `map` and are released once.
            unsafe {
                libc::munmap(self.region.addr as *mut libc::c_void, self.region.len);
                libc::close(self.region.fd);
            }
        }
    }
}

/// The end address of the highest `virtio-ring` memfd mapping (blkio's rings).
fn ring_top() -> Option<usize> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter(|l| l.contains("virtio-ring"))
        .filter_map(|l| {
            let range = l.split_whitespace().next()?;
            usize::from_str_radix(range.split('-').nth(1)?, 16).ok()
        })
        .max()
}

/// One queue's share of the buffer region (`depth` buffers of `io_size` bytes), as an
/// address so the worker thread can own it.
#[derive(Clone, Copy)]
struct QueueBuffers {
    base: usize,
    io_size: usize,
}

impl QueueBuffers {
    fn ptr(&self, slot: usize) -> *mut u8 {
        (self.base + slot * self.io_size) as *mut u8
    }

    /// The buffer of `slot`.
    ///
    /// # Safety
    /// No request using this slot's buffer may be in flight, and `slot` must be below the
    /// queue depth the region was sized for.
    unsafe fn slice(&mut self, slot: usize) -> &mut [u8] {
        // SAFETY: the caller guarantees the slot is idle and in range; the region is mapped
        // for the whole run and slots never overlap.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(slot), self.io_size) }
    }
}

/// A virtqueue handed to its worker thread.
struct QueueWork {
    index: u32,
    q: Blkioq,
    bufs: QueueBuffers,
    base_unit: u64,
    span_units: u64,
}

/// Connects to `spec.socket`, runs the workload on every queue at once and returns one result
/// per queue. `progress` counts completed requests; `on_thread` runs first on every queue
/// thread (the allocation counter marks its threads with it).
pub fn run(
    spec: &VhostSpec,
    progress: Arc<AtomicU64>,
    on_thread: fn(),
) -> Result<(DeviceInfo, Vec<JobResult>), VhostError> {
    let sock = spec.socket.display().to_string();
    let setup = |what: &str, e: blkio::Error| VhostError::Setup {
        socket: sock.clone(),
        message: format!("{what}: {}", e.message()),
    };
    let mut b = Blkio::new("virtio-blk-vhost-user").map_err(|e| setup("driver", e))?;
    b.set_str("path", &sock).map_err(|e| setup("path", e))?;
    let read_only = matches!(spec.workload, Workload::Read | Workload::RandRead);
    b.set_bool("read-only", read_only)
        .map_err(|e| setup("read-only", e))?;
    b.connect().map_err(|e| setup("connect", e))?;
    let capacity = b.get_u64("capacity").map_err(|e| setup("capacity", e))?;
    let block_size = b
        .get_i32("request-alignment")
        .map_err(|e| setup("request-alignment", e))?
        .max(1) as u64;
    let max_queues = b
        .get_i32("max-queues")
        .map_err(|e| setup("max-queues", e))?
        .max(0) as u32;
    let max_queue_size = b
        .get_i32("max-queue-size")
        .map_err(|e| setup("max-queue-size", e))?
        .max(1) as u32;
    let nq = spec.queues.max(1);
    if nq > max_queues {
        return Err(VhostError::Spec(format!(
            "{sock}: {nq} queues requested, the back-end offers {max_queues}"
        )));
    }
    let depth = spec.queue_depth.max(1);
    // Each request takes three descriptors (header, data, status): size the ring so `depth`
    // requests fit, else blkio holds the excess back and the real depth is lower.
    let queue_size = spec
        .queue_size
        .unwrap_or_else(|| (depth * 3).next_power_of_two().clamp(64, 1024))
        .min(max_queue_size);
    if depth * 3 > queue_size {
        eprintln!(
            "plexperf: a queue of size {queue_size} holds {} requests; depth {depth} is capped there",
            queue_size / 3
        );
    }
    let io = spec.io_size as u64;
    if io == 0 || !io.is_multiple_of(block_size) {
        return Err(VhostError::Spec(format!(
            "I/O size {io} is not a multiple of the block size {block_size}"
        )));
    }
    let max_transfer = b.get_i32("max-transfer").unwrap_or(0).max(0) as u64;
    if max_transfer > 0 && io > max_transfer && spec.workload.has_data_transfer() {
        return Err(VhostError::Spec(format!(
            "I/O size {io} exceeds the device's maximum transfer of {max_transfer} bytes"
        )));
    }
    let units = capacity / io;
    let span_units = units / nq as u64;
    if span_units == 0 || (spec.workload == Workload::Verify && span_units < depth as u64) {
        return Err(VhostError::Spec(format!(
            "{sock}: the device ({capacity} bytes) is too small for {nq} queues of depth {depth} and I/O size {io}"
        )));
    }
    let (qs, pqs) = if spec.poll { (0, nq) } else { (nq, 0) };
    b.set_i32("num-queues", qs as i32)
        .map_err(|e| setup("num-queues", e))?;
    b.set_i32("num-poll-queues", pqs as i32)
        .map_err(|e| setup("num-poll-queues", e))?;
    b.set_i32("queue-size", queue_size as i32)
        .map_err(|e| setup("queue-size", e))?;
    let started = b.start().map_err(|e| setup("start", e))?;
    let queues: Vec<Blkioq> = if spec.poll {
        started.poll_queues
    } else {
        started.queues
    };

    let per_queue = depth as usize * spec.io_size;
    let page = 4096usize;
    let len = (per_queue * nq as usize).div_ceil(page) * page;
    let bufs = Buffers::map(len, spec.placement).map_err(|m| VhostError::Setup {
        socket: sock.clone(),
        message: m,
    })?;
    b.map_mem_region(&bufs.region)
        .map_err(|e| setup("map the buffer region (ADD_MEM_REG)", e))?;

    let info = DeviceInfo {
        capacity,
        block_size,
        max_queues,
        queue_size,
    };
    let name = Path::new(&sock)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| sock.clone());

    let work: Vec<QueueWork> = queues
        .into_iter()
        .enumerate()
        .map(|(i, q)| QueueWork {
            index: i as u32,
            q,
            bufs: QueueBuffers {
                base: bufs.region.addr + i * per_queue,
                io_size: spec.io_size,
            },
            base_unit: i as u64 * span_units,
            span_units,
        })
        .collect();
    let results: Vec<Result<JobResult, VhostError>> = std::thread::scope(|s| {
        let handles: Vec<_> = work
            .into_iter()
            .map(|w| {
                let progress = progress.clone();
                let name = name.clone();
                let cpu =
                    (!spec.cpus.is_empty()).then(|| spec.cpus[w.index as usize % spec.cpus.len()]);
                std::thread::Builder::new()
                    .name(format!("plexperf-q{}", w.index))
                    .spawn_scoped(s, move || {
                        if let Some(c) = cpu {
                            pin_to(c);
                        }
                        on_thread();
                        drive(spec, w, block_size, &name, cpu, progress)
                    })
                    .expect("spawn a queue thread")
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join().unwrap_or_else(|_| {
                    Err(VhostError::Queue {
                        queue: i as u32,
                        message: "thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    // Queues (dropped with their threads) and the driver go before the buffers.
    drop(b);
    drop(bufs);
    let results: Result<Vec<JobResult>, VhostError> = results.into_iter().collect();
    Ok((info, results?))
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
}

/// One of a queue's `queue_depth` requests: where it starts, its operation and what it
/// writes or expects.
struct QueueRequest {
    start: u64,
    seed: u64,
    offset: u64,
    op: Op,
    verify_reading: bool,
}

/// Drives one queue until the run ends and every request has completed.
fn drive(
    spec: &VhostSpec,
    mut w: QueueWork,
    block_size: u64,
    name: &str,
    cpu: Option<usize>,
    progress: Arc<AtomicU64>,
) -> Result<JobResult, VhostError> {
    let qerr = |m: String| VhostError::Queue {
        queue: w.index,
        message: m,
    };
    let depth = spec.queue_depth.max(1) as usize;
    let io = spec.io_size as u64;
    let tick_rate = tsc::tick_rate();
    let mut hist = Histogram::<u64>::new_with_bounds(1, tick_rate.saturating_mul(60).max(2), 3)
        .map_err(|e| qerr(format!("histogram: {e}")))?;
    let mut comps: Vec<MaybeUninit<Completion>> =
        (0..depth).map(|_| MaybeUninit::uninit()).collect();
    let mut slots: Vec<QueueRequest> = (0..depth)
        .map(|_| QueueRequest {
            start: 0,
            seed: 0,
            offset: 0,
            op: Op::Read,
            verify_reading: false,
        })
        .collect();
    let mut rng = Rng::new(spec.seed ^ ((w.index as u64 + 1) << 32));
    let mut next_unit = 0u64;
    let first = tsc::ticks();
    let deadline = match spec.duration {
        Some(d) => first + tsc::duration_to_ticks(d),
        None => u64::MAX,
    };
    let stall_ticks = tick_rate.saturating_mul(30);
    let (mut started, mut inflight) = (0u64, 0usize);
    let (mut ios, mut bytes, mut errors, mut miscompares) = (0u64, 0u64, 0u64, 0u64);
    let mut stopping = false;

    // Prepares slot `i`'s next request and submits it; false when the run is over.
    let mut issue = |q: &mut Blkioq,
                     bufs: &mut QueueBuffers,
                     slots: &mut [QueueRequest],
                     i: usize,
                     now: u64,
                     started: &mut u64,
                     stopping: &mut bool|
     -> bool {
        if *stopping
            || now >= deadline
            || spec.max_ios.is_some_and(|m| *started >= m)
            || spec
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            *stopping = true;
            return false;
        }
        *started += 1;
        let unit = if spec.workload.random() {
            rng.below(w.span_units)
        } else {
            let u = next_unit;
            next_unit = (u + 1) % w.span_units;
            u
        };
        let offset = (w.base_unit + unit) * io;
        let op = match spec.workload {
            Workload::Read | Workload::RandRead => Op::Read,
            Workload::Write | Workload::RandWrite | Workload::Verify => Op::Write,
            Workload::Rw | Workload::RandRw => {
                if (rng.below(100) as u32) < spec.read_pct {
                    Op::Read
                } else {
                    Op::Write
                }
            }
            Workload::Unmap => Op::Discard,
            Workload::Flush => Op::Flush,
            Workload::WriteZeroes => Op::WriteZeroes,
        };
        let seed = rng.next_u64();
        let s = &mut slots[i];
        s.start = now;
        s.seed = seed;
        s.offset = offset;
        s.op = op;
        s.verify_reading = false;
        if spec.workload == Workload::Verify {
            // SAFETY: slot `i` has no request in flight (it is being reissued).
            let b = unsafe { bufs.slice(i) };
            fill_pattern(b, offset / block_size, block_size as usize, seed);
        }
        submit(q, bufs, i, op, offset, io);
        true
    };

    for i in 0..depth {
        if !issue(
            &mut w.q,
            &mut w.bufs,
            &mut slots,
            i,
            tsc::ticks(),
            &mut started,
            &mut stopping,
        ) {
            break;
        }
        inflight += 1;
    }
    let mut last_completion = tsc::ticks();
    let mut spins = 0u32;
    while inflight > 0 {
        let got = if spec.poll {
            w.q.do_io(&mut comps, 0, None, None)
        } else {
            let mut t = Duration::from_millis(100);
            match w.q.do_io(&mut comps, 1, Some(&mut t), None) {
                Err(e) if e.errno().raw_os_error() == libc::ETIME => Ok(0),
                r => r,
            }
        };
        let n = got.map_err(|e| qerr(format!("do_io: {}", e.message())))?;
        let now = tsc::ticks();
        if n == 0 {
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) && now.wrapping_sub(last_completion) > stall_ticks {
                return Err(qerr(format!(
                    "no completion for 30 s with {inflight} requests in flight"
                )));
            }
            continue;
        }
        last_completion = now;
        let mut finished = 0u64;
        for c in &comps[..n] {
            // SAFETY: do_io initialised the first `n` completions.
            let c = unsafe { c.assume_init_read() };
            let i = c.user_data;
            inflight -= 1;
            let s = &mut slots[i];
            if c.ret != 0 {
                errors += 1;
                hist.saturating_record(now.wrapping_sub(s.start).max(1));
                finished += 1;
            } else if spec.workload == Workload::Verify && !s.verify_reading {
                // Written: read it back into the cleared buffer.
                s.verify_reading = true;
                s.op = Op::Read;
                // SAFETY: slot `i`'s request just completed.
                unsafe { w.bufs.slice(i) }.fill(0);
                submit(&mut w.q, &w.bufs, i, Op::Read, s.offset, io);
                inflight += 1;
                continue;
            } else {
                if s.verify_reading {
                    // SAFETY: slot `i`'s read just completed.
                    let b = unsafe { w.bufs.slice(i) };
                    if check_pattern(b, s.offset / block_size, block_size as usize, s.seed)
                        .is_some()
                    {
                        miscompares += 1;
                    }
                }
                ios += 1;
                if s.op != Op::Flush {
                    bytes += io;
                }
                hist.saturating_record(now.wrapping_sub(s.start).max(1));
                finished += 1;
            }
            if issue(
                &mut w.q,
                &mut w.bufs,
                &mut slots,
                i,
                now,
                &mut started,
                &mut stopping,
            ) {
                inflight += 1;
            }
        }
        progress.fetch_add(finished, Ordering::Relaxed);
    }
    let runtime = tsc::ticks_to_duration(tsc::ticks().wrapping_sub(first));
    Ok(JobResult {
        bdev: name.to_string(),
        core: cpu.unwrap_or(0) as u32,
        queue: Some(w.index),
        workload: spec.workload,
        ios,
        bytes,
        errors,
        miscompares,
        runtime,
        latency_ticks: hist,
        tick_rate,
    })
}

fn submit(q: &mut Blkioq, bufs: &QueueBuffers, slot: usize, op: Op, offset: u64, len: u64) {
    let f = ReqFlags::empty();
    let p = bufs.ptr(slot);
    // The buffer lies in the mapped region and stays untouched until this slot completes.
    match op {
        Op::Read => q.read(offset, p, len as usize, slot, f),
        Op::Write => q.write(offset, p, len as usize, slot, f),
        Op::Flush => q.flush(slot, f),
        Op::Discard => q.discard(offset, len, slot, f),
        Op::WriteZeroes => q.write_zeroes(offset, len, slot, f),
    }
}
