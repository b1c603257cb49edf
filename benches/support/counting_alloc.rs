//! A global allocator that counts allocations made on the thread that asks it to, for the
//! benchmarks and tests that check what forwarding allocates. Other threads (a test
//! harness's, criterion's) allocate too and are not counted.
//!
//! Use: `#[path = "…/counting_alloc.rs"] mod counting_alloc;` and
//! `#[global_allocator] static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;`,
//! then `counting_alloc::count(|| …)`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // A const-initialised Cell needs no allocation and no destructor, so the allocator may
    // read it.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: defers to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

/// Runs `f` and returns its result with the heap allocations this thread made in it.
pub fn count<T>(f: impl FnOnce() -> T) -> (T, u64) {
    COUNTING.with(|c| c.set(true));
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let out = f();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    COUNTING.with(|c| c.set(false));
    (out, allocations)
}
