//! A cheap monotonic tick counter for latency and busy/idle accounting (the CPU's TSC on
//! x86_64, a nanosecond clock elsewhere), with its rate calibrated once per process.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Reads the tick counter.
#[inline]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC reads a counter; it has no memory effects and exists on every x86_64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Ticks per second, measured once (about 20 ms) on first use.
pub fn tick_rate() -> u64 {
    static RATE: OnceLock<u64> = OnceLock::new();
    *RATE.get_or_init(|| {
        if cfg!(not(target_arch = "x86_64")) {
            return 1_000_000_000;
        }
        let t0 = Instant::now();
        let c0 = ticks();
        while t0.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        let c1 = ticks();
        let ns = t0.elapsed().as_nanos() as u64;
        ((c1.wrapping_sub(c0) as u128 * 1_000_000_000) / ns.max(1) as u128) as u64
    })
}

/// Converts a tick count to a duration.
pub fn ticks_to_duration(t: u64) -> Duration {
    Duration::from_nanos(((t as u128 * 1_000_000_000) / tick_rate().max(1) as u128) as u64)
}

/// Converts a duration to ticks.
pub fn duration_to_ticks(d: Duration) -> u64 {
    ((d.as_nanos() * tick_rate() as u128) / 1_000_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_is_plausible_and_monotonic() {
        let r = tick_rate();
        assert!(r >= 1_000_000, "tick rate {r}");
        let a = ticks();
        std::thread::sleep(Duration::from_millis(5));
        let b = ticks();
        let d = ticks_to_duration(b - a);
        assert!(
            d >= Duration::from_millis(4) && d < Duration::from_millis(500),
            "{d:?}"
        );
    }
}
