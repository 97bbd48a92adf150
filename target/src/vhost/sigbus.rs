//! Surviving a front-end that shrinks shared memory under plexd.
//!
//! Guest memory and inflight areas are shared mappings of files the front-end owns (memfd,
//! hugetlbfs or tmpfs files). If the front-end truncates such a file after plexd mapped it,
//! the next access to a page past the new end raises SIGBUS, and by default that kills plexd
//! with every export it serves. Refusing files that are not sealed against shrinking
//! (F_SEAL_SHRINK) is no cure: QEMU's `memory-backend-file` (hugetlbfs) and libblkio's buffers
//! are not sealed. So plexd survives the fault instead:
//!
//! - every such mapping is registered here (a fixed table of atomics, readable from a signal
//!   handler), and unregistered before it is unmapped;
//! - a SIGBUS handler looks the faulting address up; inside a registered mapping it replaces
//!   the faulting page with a private zero page (`mmap MAP_FIXED|MAP_ANONYMOUS`) and returns,
//!   so the access completes: reads of the lost memory give zeros, writes go nowhere. The
//!   front-end broke its own memory (it faults on those pages itself); plexd only has to live
//!   on and keep its other exports serving. The fault is counted ([`faults`]) and logged by
//!   the connection's control thread;
//! - the fault is also counted on the mapping's own counter (given to [`register`]; guest
//!   memory shares one per memory table). The rings remember that count when they parse a
//!   request and compare it when the request completes: a request whose memory was lost
//!   answers IOERR instead of "success", and the table is poisoned (later requests fail and
//!   the queue stops, signalling its error eventfd) until the front-end sets a new table;
//! - only kernel-generated `BUS_ADRERR` faults (an access past the end of the file) are
//!   handled; any other SIGBUS (hardware memory errors, `kill`/`sigqueue`, addresses outside
//!   these mappings) goes to the previous handler (Rust's stack-overflow handler) or the
//!   default action, as before.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};

/// Mappings that can be registered at once (guest memory regions of every connection, their
/// old snapshots still in use, inflight areas).
pub const MAX_MAPPINGS: usize = 4096;

const FREE: u8 = 0;
const BUSY: u8 = 1;
const LIVE: u8 = 2;

/// One registered mapping (or a free entry) in the table the SIGBUS handler reads: its state
/// (`FREE`, `BUSY` while being changed, `LIVE`) and address range.
struct MappingEntry {
    state: AtomicU8,
    start: AtomicUsize,
    end: AtomicUsize,
    /// Address of the mapping's fault counter (an `AtomicU64` kept alive by the [`Guard`]),
    /// or 0.
    counter: AtomicUsize,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: MappingEntry = MappingEntry {
    state: AtomicU8::new(FREE),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    counter: AtomicUsize::new(0),
};

static MAPPINGS: [MappingEntry; MAX_MAPPINGS] = [EMPTY; MAX_MAPPINGS];
static FAULTS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);

/// Errors registering a mapping.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The table is full.
    #[error("more than {MAX_MAPPINGS} shared-memory mappings are registered; disconnect unused front-ends")]
    Full,
    /// sigaction failed.
    #[error("cannot install the SIGBUS handler: {0}")]
    Install(std::io::Error),
}

/// A registered mapping; unregisters on drop (drop it before unmapping).
#[derive(Debug)]
pub struct Guard {
    slot: usize,
    /// The fault counter the slot points to; outlives the registration.
    _counter: Option<Arc<AtomicU64>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let s = &MAPPINGS[self.slot];
        s.state.store(BUSY, Ordering::SeqCst);
        s.start.store(0, Ordering::SeqCst);
        s.end.store(0, Ordering::SeqCst);
        s.counter.store(0, Ordering::SeqCst);
        s.state.store(FREE, Ordering::SeqCst);
    }
}

/// SIGBUS faults survived in registered mappings since plexd started.
pub fn faults() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

fn install() -> Result<(), GuardError> {
    let mut err = None;
    INSTALL.call_once(|| {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            PAGE_SIZE.store(page as usize, Ordering::Relaxed);
        }
        // SAFETY: a zeroed sigaction is a valid value to fill in; sigaction is given valid
        // pointers; the handler only uses async-signal-safe operations (atomics, mmap,
        // sigaction, and the previous handler).
        unsafe {
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_sigbus as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut new.sa_mask);
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(libc::SIGBUS, &new, &mut old) != 0 {
                err = Some(std::io::Error::last_os_error());
                return;
            }
            let _ = PREVIOUS.set(old);
        }
    });
    match err {
        Some(e) => Err(GuardError::Install(e)),
        None => Ok(()),
    }
}

/// Registers `[start, start + len)`, a shared mapping of a file the front-end controls. Each
/// fault survived in it also increments `counter`, if given.
pub fn register(
    start: *const u8,
    len: usize,
    counter: Option<Arc<AtomicU64>>,
) -> Result<Guard, GuardError> {
    install()?;
    let start = start as usize;
    let end = start.saturating_add(len);
    for (i, s) in MAPPINGS.iter().enumerate() {
        if s.state
            .compare_exchange(FREE, BUSY, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            s.start.store(start, Ordering::SeqCst);
            s.end.store(end, Ordering::SeqCst);
            s.counter.store(
                counter.as_ref().map_or(0, |c| Arc::as_ptr(c) as usize),
                Ordering::SeqCst,
            );
            s.state.store(LIVE, Ordering::SeqCst);
            return Ok(Guard {
                slot: i,
                _counter: counter,
            });
        }
    }
    Err(GuardError::Full)
}

/// The registered mapping holding `addr`: its range and its counter's address (or 0).
fn lookup(addr: usize) -> Option<(usize, usize, usize)> {
    for s in MAPPINGS.iter() {
        if s.state.load(Ordering::Acquire) != LIVE {
            continue;
        }
        let (start, end, counter) = (
            s.start.load(Ordering::Acquire),
            s.end.load(Ordering::Acquire),
            s.counter.load(Ordering::Acquire),
        );
        if addr >= start && addr < end && s.state.load(Ordering::Acquire) == LIVE {
            return Some((start, end, counter));
        }
    }
    None
}

/// Replaces the page(s) holding `addr` inside `[start, end)` with private zero pages. Tries the
/// base page size, then huge page sizes (a hugetlbfs mapping can only be replaced whole huge
/// pages at a time).
fn patch(addr: usize, start: usize, end: usize) -> bool {
    let base = PAGE_SIZE.load(Ordering::Relaxed);
    for size in [base, 2 << 20, 1 << 30] {
        let page = addr & !(size - 1);
        if page < start || page.saturating_add(size) > end {
            continue;
        }
        // SAFETY: replaces pages inside a mapping registered as guest memory (which plexd only
        // reaches through raw pointers); async-signal-safe (a plain system call).
        let p = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return true;
        }
    }
    false
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    if !info.is_null() {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        // Only an access past the end of the file, as the kernel reports it; hardware memory
        // errors and signals sent by processes are not ours to swallow.
        if code == libc::BUS_ADRERR {
            if let Some((start, end, counter)) = lookup(addr) {
                if patch(addr, start, end) {
                    if counter != 0 {
                        // SAFETY: the slot was LIVE with this counter; the Guard holding the
                        // counter is dropped only once nothing uses the mapping (no access
                        // can fault in it then), after the slot is cleared.
                        unsafe { (*(counter as *const AtomicU64)).fetch_add(1, Ordering::SeqCst) };
                    }
                    FAULTS.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    // Not ours: hand it on as if this handler were not there.
    match PREVIOUS.get() {
        Some(old)
            if old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
                && old.sa_flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous handler was installed for SIGBUS with SA_SIGINFO, so it
            // takes these arguments.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(old.sa_sigaction) };
            f(sig, info, ctx);
        }
        _ => {
            // SAFETY: resetting SIGBUS to its default action; returning re-executes the
            // faulting access, which then terminates the process as it would have.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// A mapping kept registered for as long as anything maps it. Requests in flight hold the
/// memory snapshot they were parsed with, so a region removed from the table may still be
/// used: dropping the handle parks the mapping, and [`sweep`] unregisters and unmaps it once
/// nothing else holds it.
pub struct Registered<T: Send + Sync + 'static> {
    mapping: std::sync::Arc<T>,
    guard: Option<Guard>,
}

impl<T: Send + Sync + 'static> Registered<T> {
    /// Wraps a mapping and its registration.
    pub fn new(mapping: std::sync::Arc<T>, guard: Guard) -> Self {
        Registered {
            mapping,
            guard: Some(guard),
        }
    }

    /// The mapping.
    pub fn get(&self) -> &std::sync::Arc<T> {
        &self.mapping
    }
}

type Parked = (std::sync::Arc<dyn Send + Sync>, Guard);

static PARKED: Mutex<Vec<Parked>> = Mutex::new(Vec::new());

impl<T: Send + Sync + 'static> Drop for Registered<T> {
    fn drop(&mut self) {
        if let Some(guard) = self.guard.take() {
            let m: std::sync::Arc<dyn Send + Sync> = self.mapping.clone();
            PARKED
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((m, guard));
        }
        // Our own handle goes after this function; the next sweep releases the mapping if
        // nothing else holds it then.
    }
}

/// Unregisters, then unmaps, parked mappings that nothing else uses any more.
pub fn sweep() {
    let done: Vec<Parked> = {
        let mut parked = PARKED.lock().unwrap_or_else(|p| p.into_inner());
        let (done, keep): (Vec<_>, Vec<_>) = parked
            .drain(..)
            .partition(|(m, _)| std::sync::Arc::strong_count(m) == 1);
        *parked = keep;
        done
    };
    for (mapping, guard) in done {
        drop(guard);
        drop(mapping);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    #[test]
    fn a_truncated_registered_mapping_reads_zeros_instead_of_killing() {
        // SAFETY: memfd_create with a valid name; checked.
        let fd = unsafe { libc::memfd_create(c"sigbus-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        // SAFETY: a fresh descriptor.
        let file = unsafe { std::fs::File::from_raw_fd(fd) };
        let len = 4 * 4096;
        file.set_len(len as u64).unwrap();
        // SAFETY: a new shared mapping of the file; checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = p as *mut u8;
        let counter = Arc::new(AtomicU64::new(0));
        let guard = register(p, len, Some(counter.clone())).unwrap();
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(p.add(3 * 4096), 7) };
        file.set_len(4096).unwrap();
        let before = faults();
        // SAFETY: inside the mapping; the page is past the end of the file now: SIGBUS,
        // survived by the handler.
        let v = unsafe { std::ptr::read_volatile(p.add(3 * 4096 + 5)) };
        assert_eq!(v, 0);
        // SAFETY: as above, a write.
        unsafe { std::ptr::write_volatile(p.add(2 * 4096), 1) };
        assert!(faults() >= before + 2);
        assert_eq!(
            counter.load(Ordering::SeqCst),
            2,
            "faults counted on the mapping"
        );
        drop(guard);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p.cast(), len) };
    }
}
