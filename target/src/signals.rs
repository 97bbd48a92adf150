//! Shutdown signals. SIGINT, SIGTERM and SIGQUIT are blocked in every thread (the mask is set
//! before any thread starts, so all inherit it) and collected synchronously by the main thread.
//! The signal sets and masks come from `vmm_sys_util::signal`; only `sigwait` is called here.

use vmm_sys_util::signal::{block_signal, create_sigset};

/// The signals that ask plexd to stop.
const STOP_SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGQUIT];

/// Blocks the stop signals in the calling thread (call first thing in `main`).
pub fn block_stop_signals() {
    for s in STOP_SIGNALS {
        // Fails only for an invalid signal number (these are libc's own) or one already
        // blocked, which is what we want anyway.
        let _ = block_signal(s);
    }
}

/// Waits for a stop signal and returns its name.
pub fn wait_for_stop_signal() -> &'static str {
    // Only fails for an invalid signal number, and these are the C library's own constants.
    let Ok(set) = create_sigset(&STOP_SIGNALS) else {
        return "SIGQUIT";
    };
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
