//! Thin safe wrappers over the two kernel objects a sleeping reactor needs: an `eventfd` to be
//! woken through and an `epoll` instance to sleep on.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking, close-on-exec eventfd.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates an eventfd with counter 0.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Adds 1 to the counter, waking anyone polling the fd.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to a descriptor we own. A full counter
        // (EAGAIN) already means "readable", which is all a waker needs.
        let _ = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter to zero; returns whether it was non-zero.
    pub fn drain(&self) -> bool {
        drain_fd(self.fd.as_raw_fd())
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Reads and discards an eventfd's counter; returns whether anything was pending.
pub fn drain_fd(fd: RawFd) -> bool {
    let mut value: u64 = 0;
    // SAFETY: reads at most 8 bytes into a live u64; `fd` is a non-blocking eventfd owned by
    // the caller for the duration of the call.
    let n = unsafe { libc::read(fd, (&mut value as *mut u64).cast(), 8) };
    n == 8
}

/// An epoll instance used by one reactor to sleep until any of its wake sources fires.
#[derive(Debug)]
pub struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// Creates an epoll instance.
    pub fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory-safety preconditions; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    /// Watches `fd` for readability; `token` is returned by [`Epoll::wait`] when it fires.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Stops watching `fd`.
    pub fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is valid for the call; removing an fd that is not registered only
        // returns an error, which is harmless here.
        let _ = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Sleeps until a watched fd is readable or `timeout` passes (`None`: forever). Fills
    /// `tokens` with the tokens that fired and returns how many did.
    pub fn wait(&self, tokens: &mut [u64], timeout: Option<Duration>) -> usize {
        const MAX: usize = 32;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let ms = match timeout {
            None => -1,
            Some(t) => t.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32,
        };
        let cap = tokens.len().min(MAX);
        // SAFETY: `events` has room for `cap` entries and outlives the call.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), cap as i32, ms) };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for (slot, ev) in tokens.iter_mut().zip(events.iter()).take(n) {
            *slot = ev.u64;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_wakes_epoll() {
        let ep = Epoll::new().unwrap();
        let ev = EventFd::new().unwrap();
        ep.add(ev.as_raw_fd(), 7).unwrap();
        let mut toks = [0u64; 4];
        assert_eq!(ep.wait(&mut toks, Some(Duration::from_millis(1))), 0);
        ev.notify();
        assert_eq!(ep.wait(&mut toks, Some(Duration::from_millis(100))), 1);
        assert_eq!(toks[0], 7);
        assert!(ev.drain());
        assert!(!ev.drain());
        assert_eq!(ep.wait(&mut toks, Some(Duration::from_millis(1))), 0);
    }
}
