//! Test helpers: a fake clock whose time advances only when waited on.

use crate::Clock;

/// A clock that advances by exactly the requested delays (plus 1 µs per reading).
#[derive(Debug, Default)]
pub struct FakeClock {
    pub now: u64,
}

impl Clock for FakeClock {
    fn now_us(&mut self) -> u64 {
        self.now += 1;
        self.now
    }
    fn delay_us(&mut self, us: u32) {
        self.now += u64::from(us);
    }
}
