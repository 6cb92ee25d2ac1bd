//! Stack high-water measurement: the free stack is painted with a pattern at reset, and the
//! deepest word overwritten since tells the worst-case stack use of the run (which
//! `cargo xtask sizes` adds to the static RAM).

use core::ptr::{read_volatile, write_volatile};

const PAINT: u32 = 0xC0DE_5AFE;
/// Left unpainted below the current stack pointer: `paint`'s own frame.
const MARGIN: usize = 256;

unsafe extern "C" {
    /// cortex-m-rt: the end of `.bss` (where a heap would start), the bottom of free RAM.
    static __sheap: u32;
    /// cortex-m-rt: the initial stack pointer, the top of RAM.
    static _stack_start: u32;
}

fn bounds() -> (usize, usize) {
    (
        &raw const __sheap as usize,
        &raw const _stack_start as usize,
    )
}

/// Fills the free stack below the current frame with the pattern.
pub fn paint() {
    let (bottom, _) = bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut at = (bottom + 3) & !3;
    while at + 4 <= sp - MARGIN {
        // SAFETY: between the end of the static data and the live stack frames: unused RAM.
        unsafe { write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
}

/// The most stack used since [`paint`], in bytes.
pub fn high_water() -> usize {
    let (bottom, top) = bounds();
    let mut at = (bottom + 3) & !3;
    // SAFETY: reads of RAM between the static data and the top of the stack.
    while at < top && unsafe { read_volatile(at as *const u32) } == PAINT {
        at += 4;
    }
    top - at
}
