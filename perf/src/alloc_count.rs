//! A counting global allocator for allocation accounting on the I/O path.
//!
//! Only allocations made on threads marked with [`mark_this_thread`] (reactors, vhost queue
//! threads) are counted, so a harness or reporting thread does not blur the figure. A binary
//! opts in with:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: plexd_perf::alloc_count::CountingAllocator = plexd_perf::alloc_count::CountingAllocator;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Const-initialised and drop-free, so the allocator may read it at any time.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Counts allocations on marked threads, then forwards to the system allocator.
pub struct CountingAllocator;

#[inline]
fn count() {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged; counting touches only a thread-local flag and an atomic.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded verbatim; the caller upholds GlobalAlloc::alloc's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded verbatim.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded verbatim; `ptr` came from this allocator (i.e. System).
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded verbatim; `ptr` came from System with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts allocations made on the calling thread from now on.
pub fn mark_this_thread() {
    COUNTED.with(|c| c.set(true));
}

/// Allocations counted so far on marked threads.
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}
