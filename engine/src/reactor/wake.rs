//! The two kernel objects a sleeping reactor needs, from `vmm_sys_util`: an [`EventFd`] to be
//! woken through and an [`Epoll`] set to sleep on.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};
pub use vmm_sys_util::eventfd::EventFd;

/// Creates a non-blocking, close-on-exec eventfd with counter 0, as every wake source must be.
pub fn new_eventfd() -> io::Result<EventFd> {
    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
}

/// Reads and discards an eventfd's counter; returns whether anything was pending.
///
/// Takes a raw fd because the reactor drains the wake fds its pollers lend it, which it does
/// not own.
pub fn drain_fd(fd: RawFd) -> bool {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; `fd` is a non-blocking eventfd owned by
    // the caller for the duration of the call.
    let n = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
    n == 8
}

/// Most events one [`Epoll::wait`] returns.
const MAX_EVENTS: usize = 32;

/// The epoll set one reactor sleeps on until any of its wake sources fires.
#[derive(Debug)]
pub struct Epoll(vmm_sys_util::epoll::Epoll);

impl Epoll {
    /// The epoll descriptor itself (tests read its `/proc/self/fdinfo` entry).
    #[cfg(test)]
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }

    /// Creates an epoll set (close-on-exec).
    pub fn new() -> io::Result<Self> {
        vmm_sys_util::epoll::Epoll::new().map(Epoll)
    }

    /// Watches `fd` for readability; `token` is returned by [`Epoll::wait`] when it fires.
    /// Watching an fd twice is not an error.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let ev = EpollEvent::new(EventSet::IN, token);
        match self.0.ctl(ControlOperation::Add, fd, ev) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops watching `fd` (an fd that is not watched is ignored).
    pub fn remove(&self, fd: RawFd) {
        let _ = self
            .0
            .ctl(ControlOperation::Delete, fd, EpollEvent::default());
    }

    /// Sleeps until a watched fd is readable or `timeout` passes (`None`: forever). Fills
    /// `tokens` with the tokens that fired and returns how many did.
    pub fn wait(&self, tokens: &mut [u64], timeout: Option<Duration>) -> usize {
        let mut events = [EpollEvent::default(); MAX_EVENTS];
        let ms = match timeout {
            None => -1,
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        let cap = tokens.len().min(MAX_EVENTS);
        let n = self.0.wait(ms, &mut events[..cap]).unwrap_or(0);
        for (slot, ev) in tokens.iter_mut().zip(events.iter()).take(n) {
            *slot = ev.data();
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    #[test]
    fn eventfd_wakes_epoll() {
        let ep = Epoll::new().unwrap();
        let ev = new_eventfd().unwrap();
        ep.add(ev.as_raw_fd(), 7).unwrap();
        ep.add(ev.as_raw_fd(), 7).unwrap();
        let mut toks = [0u64; 4];
        assert_eq!(ep.wait(&mut toks, Some(Duration::from_millis(1))), 0);
        ev.write(1).unwrap();
        assert_eq!(ep.wait(&mut toks, Some(Duration::from_millis(100))), 1);
        assert_eq!(toks[0], 7);
        assert!(drain_fd(ev.as_raw_fd()));
        assert!(!drain_fd(ev.as_raw_fd()));
        assert_eq!(ep.wait(&mut toks, Some(Duration::from_millis(1))), 0);
        ep.remove(ev.as_raw_fd());
        ev.write(1).unwrap();
        assert_eq!(ep.wait(&mut toks, Some(Duration::from_millis(1))), 0);
    }
}
