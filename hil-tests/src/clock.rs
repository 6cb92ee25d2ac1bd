//! Host implementations of the time traits the stack takes from the board: the real clock
//! ([`StdClock`], for the demo) and a simulated one ([`SimClock`], for deterministic tests).

use std::time::{Duration, Instant};

/// `vouch_tpm::Clock` and `embedded_hal::delay::DelayNs` on the host's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct StdClock {
    start: Instant,
}

impl StdClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl vouch_tpm::Clock for StdClock {
    fn now_us(&mut self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn delay_us(&mut self, us: u32) {
        std::thread::sleep(Duration::from_micros(u64::from(us)));
    }
}

impl embedded_hal::delay::DelayNs for StdClock {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// A simulated clock for tests: time advances only by the delays the stack asks for (plus
/// 1 µs per reading, so a loop that never waits still ends). The bus models are synchronous
/// and count polls rather than time, so with this clock a run is deterministic: the stack's
/// timeouts are measured in bus time, not in how busy the test machine is. Clones share the
/// same time.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    now_us: std::rc::Rc<std::cell::Cell<u64>>,
}

impl SimClock {
    /// A clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Simulated microseconds elapsed.
    pub fn elapsed_us(&self) -> u64 {
        self.now_us.get()
    }

    fn advance(&self, us: u64) {
        self.now_us.set(self.now_us.get().saturating_add(us));
    }
}

impl vouch_tpm::Clock for SimClock {
    fn now_us(&mut self) -> u64 {
        self.advance(1);
        self.now_us.get()
    }

    fn delay_us(&mut self, us: u32) {
        self.advance(u64::from(us));
    }
}

impl embedded_hal::delay::DelayNs for SimClock {
    fn delay_ns(&mut self, ns: u32) {
        self.advance(u64::from(ns.div_ceil(1000)));
    }
}
