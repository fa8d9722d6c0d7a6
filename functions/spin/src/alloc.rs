//! The global allocator: the system one, except that while the component pre-initialises,
//! freed memory is zeroed.
//!
//! Wizer writes the non-zero bytes of linear memory into the component. Loading a model frees
//! far more than it keeps (the file, the protobuf, tract's intermediate models); zeroed, those
//! bytes cost the shipped component nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, Ordering};

static ZEROING: AtomicBool = AtomicBool::new(false);

/// Runs `f` with freed memory zeroed.
pub fn zeroing_freed<T>(f: impl FnOnce() -> T) -> T {
    ZEROING.store(true, Ordering::Relaxed);
    let out = f();
    ZEROING.store(false, Ordering::Relaxed);
    out
}

/// Zeroes `len` bytes at `ptr` with volatile writes: a plain `memset` right before `free` is a
/// dead store the optimiser removes.
///
/// # Safety
/// `ptr..ptr + len` must be writable.
unsafe fn zero(ptr: *mut u8, len: usize) {
    unsafe {
        let head = ptr.align_offset(8).min(len);
        for i in 0..head {
            ptr.add(i).write_volatile(0);
        }
        let words = (len - head) / 8;
        let wide = ptr.add(head) as *mut u64;
        for i in 0..words {
            wide.add(i).write_volatile(0);
        }
        for i in head + words * 8..len {
            ptr.add(i).write_volatile(0);
        }
    }
}

/// See the module's documentation.
pub struct Allocator;

// SAFETY: every call is forwarded to `System` with the caller's own arguments; the zeroing
// writes only the `layout.size()` bytes of a block the caller owns and is about to free.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe {
            if ZEROING.load(Ordering::Relaxed) {
                zero(ptr, layout.size());
            }
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe {
            if !ZEROING.load(Ordering::Relaxed) {
                return System.realloc(ptr, layout, new_size);
            }
            let new = System.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
            if !new.is_null() {
                ptr.copy_to_nonoverlapping(new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}
