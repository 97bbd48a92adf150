//! Shutdown signals. SIGINT, SIGTERM and SIGQUIT are blocked in every thread (the mask is set
//! before any thread starts, so all inherit it) and collected synchronously by the main thread.

/// The signals that ask plexd to stop.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT];

fn stop_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// Blocks the stop signals in the calling thread (call first thing in `main`).
pub fn block_stop_signals() {
    let set = stop_set();
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for a stop signal and returns its name.
pub fn wait_for_stop_signal() -> &'static str {
    let set = stop_set();
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` is initialised and the signals in it are blocked; `sig` is writable.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return match sig {
                libc::SIGINT => "SIGINT",
                libc::SIGTERM => "SIGTERM",
                _ => "SIGQUIT",
            };
        }
    }
}
