//! The bdev layer's state on one reactor thread (SPDK's `bdev_mgmt_channel`): the request
//! pool, the queue of finished requests waiting for their callbacks, and the cache of this
//! thread's I/O channels.
//!
//! The reactor knows nothing of it. It is created the first time the bdev layer is used on a
//! reactor thread and handed to that reactor as an owned poller
//! ([`reactor::register_owned_poller`]), so it lives exactly as long as the thread is a reactor:
//! polling it runs the queued callbacks, quiescing it (reactor shutdown) drops the cached
//! channels, and the reactor drops it when the thread stops being one. The bdev layer reaches
//! it through a thread-local, which the reactor's handle ([`Registration`]) clears when the
//! reactor drops it.
//!
//! Everything here is touched only by the owning thread, so it uses `RefCell` and no locks.
//! Borrows are kept short and never held across a callback, so callbacks may submit new
//! requests, create channels or register pollers.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::channel::IoChannel;
use super::io::{BdevIo, IoPool};
use crate::reactor::{self, Poller};

/// Requests preallocated per reactor. More are created on demand and then kept.
const IO_POOL_SIZE: usize = 1024;

thread_local! {
    static CURRENT: RefCell<Option<Rc<BdevThread>>> = const { RefCell::new(None) };
}

/// The bdev layer's per-thread state on one reactor.
pub(crate) struct BdevThread {
    /// Free requests (see [`BdevIo::alloc`]).
    pub(crate) pool: RefCell<IoPool>,
    completions: RefCell<VecDeque<BdevIo>>,
    channels: RefCell<HashMap<u64, Rc<IoChannel>>>,
}

impl BdevThread {
    /// This thread's state, created (and handed to the reactor) on first use. `None` off a
    /// reactor thread.
    pub(crate) fn current() -> Option<Rc<BdevThread>> {
        if let Some(t) = Self::existing() {
            return Some(t);
        }
        reactor::current_index()?;
        let t = Rc::new(BdevThread {
            pool: RefCell::new(IoPool::new(IO_POOL_SIZE)),
            completions: RefCell::new(VecDeque::with_capacity(IO_POOL_SIZE * 2)),
            channels: RefCell::new(HashMap::new()),
        });
        CURRENT
            .try_with(|c| *c.borrow_mut() = Some(t.clone()))
            .ok()?;
        if !reactor::register_owned_poller(Rc::new(Registration(t.clone()))) {
            drop(Registration(t));
            return None;
        }
        Some(t)
    }

    /// Runs `f` with this thread's state if it exists (never creates it).
    pub(crate) fn with<R>(f: impl FnOnce(&BdevThread) -> R) -> Option<R> {
        CURRENT
            .try_with(|c| c.borrow().as_deref().map(f))
            .ok()
            .flatten()
    }

    fn existing() -> Option<Rc<BdevThread>> {
        CURRENT.try_with(|c| c.borrow().clone()).ok().flatten()
    }

    /// Queues a finished request; its callback runs when the reactor polls this state, never
    /// inline.
    pub(crate) fn push_completion(&self, io: BdevIo) {
        self.completions.borrow_mut().push_back(io);
    }

    /// Runs the callbacks of the requests that were complete when this call started.
    fn run_completions(&self) -> usize {
        let n = self.completions.borrow().len();
        for _ in 0..n {
            let io = self.completions.borrow_mut().pop_front();
            match io {
                Some(io) => io.finish(),
                None => break,
            }
        }
        n
    }

    /// The cached channel of bdev `id` on this reactor.
    pub(crate) fn channel(&self, id: u64) -> Option<Rc<IoChannel>> {
        self.channels.borrow().get(&id).cloned()
    }

    /// Caches a channel.
    pub(crate) fn insert_channel(&self, id: u64, ch: Rc<IoChannel>) {
        self.channels.borrow_mut().insert(id, ch);
    }

    /// Drops the cached channel of bdev `id` (requests in flight keep it alive until they end).
    pub(crate) fn remove_channel(&self, id: u64) -> Option<Rc<IoChannel>> {
        self.channels.borrow_mut().remove(&id)
    }

    /// Drops every cached channel.
    fn clear_channels(&self) {
        let chans: Vec<Rc<IoChannel>> =
            self.channels.borrow_mut().drain().map(|(_, c)| c).collect();
        drop(chans);
    }
}

/// The reactor's handle on this thread's state: polls it, and when the reactor drops it (the
/// thread stops being a reactor), takes the state out of the thread-local and drops it.
struct Registration(Rc<BdevThread>);

impl Poller for Registration {
    fn poll(&self) -> usize {
        self.0.run_completions()
    }

    /// Callbacks waiting to run: the reactor must not sleep on them.
    fn busy(&self) -> bool {
        !self.0.completions.borrow().is_empty()
    }

    /// Requests waiting for their callbacks (those still in a driver count on their channel).
    fn inflight(&self) -> u64 {
        self.0.completions.borrow().len() as u64
    }

    /// The reactor is stopping: requests in flight keep their channel alive and finish;
    /// drivers that hold requests indefinitely (error injection's `pending`, the delay driver)
    /// release them when their channel goes.
    fn quiesce(&self) {
        self.0.clear_channels();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Out of the thread-local first (and the borrow released), so that what drops with the
        // state finds none: requests completed now run their callbacks inline, and requests
        // dropped now go back to the heap.
        let state = CURRENT.try_with(|c| c.borrow_mut().take()).ok().flatten();
        drop(state);
    }
}

impl Drop for BdevThread {
    fn drop(&mut self) {
        // The reactor is gone: channels first (requests their drivers complete now find no
        // reactor and run their callbacks inline), then the callbacks that never ran.
        self.clear_channels();
        let pending: Vec<BdevIo> = self.completions.borrow_mut().drain(..).collect();
        drop(pending);
    }
}
