//! The unit tests' global allocator: the system's, counting per thread the bytes its
//! allocations take in the heap (the usable size glibc gives each, plus its chunk header), so a
//! test can weigh what a structure holds against what the code says it holds
//! (`entries::hot::footprint`). Invariant: counts only the calling thread's allocations and
//! frees, so tests running in parallel do not disturb each other's counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// glibc's header per allocation (one `size_t` before the usable bytes).
const HEADER: usize = 8;

thread_local! {
    static HELD: Cell<isize> = const { Cell::new(0) };
}

struct Counting;

#[global_allocator]
static COUNTING: Counting = Counting;

/// Adds (or, with `sign` -1, takes off) what the allocation at `p` takes.
fn note(p: *mut u8, sign: isize) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` is a live allocation of the system allocator (malloc's).
    let n = unsafe { libc::malloc_usable_size(p.cast()) } + HEADER;
    let _ = HELD.try_with(|h| h.set(h.get() + sign * n as isize));
}

// SAFETY: every call goes to `System` unchanged; the counting only reads the pointers.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        note(p, 1);
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        note(p, 1);
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(p, -1);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        let before = unsafe { libc::malloc_usable_size(p.cast()) } + HEADER;
        let q = unsafe { System.realloc(p, l, new_size) };
        if !q.is_null() {
            let _ = HELD.try_with(|h| h.set(h.get() - before as isize));
            note(q, 1);
        }
        q
    }
}

/// What `f`'s result holds in the heap: the bytes allocated on this thread while `f` ran
/// and not freed when it returned, with the result itself.
pub fn held<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = HELD.with(Cell::get);
    let v = f();
    let after = HELD.with(Cell::get);
    (v, (after - before).max(0) as usize)
}

#[test]
fn counts_what_is_held_and_not_what_was_freed() {
    let (v, n) = held(|| {
        drop(vec![0u8; 100_000]);
        vec![0u8; 1000]
    });
    assert!((1000..1100).contains(&n), "{n}");
    let before = HELD.with(Cell::get);
    drop(v);
    assert_eq!(
        before - HELD.with(Cell::get),
        n as isize,
        "a free takes off what it held"
    );
}
