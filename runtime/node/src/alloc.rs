//! The process allocator: mimalloc, called the way its C API intends.
//!
//! mimalloc instead of glibc's allocator: a search request makes dozens of small
//! allocations on two gateway threads, and glibc spent a tenth of its CPU in
//! malloc/free (with arena consolidation); Qdrant likewise swaps the allocator.
//!
//! The `mimalloc` crate's allocator sends every request through
//! `mi_malloc_aligned`, even for the alignments plain `mi_malloc` always meets. That
//! costs a longer fast path on every allocation, and sends blocks over 1 KiB whose size
//! class is not a power of two through the generic aligned path, which over-allocates
//! them by the alignment (callgrind: a dozen such blocks per search request, about
//! 170 instructions each). Plain `mi_malloc` is used here whenever its guarantee covers
//! the layout, as the `mimalloc` crate itself did before 0.1.40; only larger alignments
//! go to the aligned entry points. This module holds the crate's only `unsafe` code.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The alignment every `mi_malloc` block of at least this size has (`MI_MAX_ALIGN_SIZE`
/// on 64-bit targets); smaller blocks are aligned to their size class, a multiple of 8.
const MIN_ALIGN: usize = 16;

/// Whether a plain `mi_malloc` block of `size` bytes is aligned to `align`.
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

/// mimalloc as the global allocator (see the module docs).
pub struct Mimalloc;

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free` takes blocks
// of any of its entry points); `plain` routes a layout to the unaligned entry points only
// where mimalloc guarantees its alignment, so each returned block meets `layout`.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions accept any size; null means failure.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` was returned by this allocator, hence by mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout`; the new block keeps the
        // alignment, checked against the new size as in `alloc`.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// Layouts on both sides of the plain/aligned split come back aligned, keep their
    /// bytes across growth and shrinking, and free cleanly.
    #[test]
    fn blocks_meet_their_layouts_across_realloc() {
        use std::alloc::{GlobalAlloc, Layout};
        let a = super::Mimalloc;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1usize, 3, 8, 15, 16, 24, 100, 1000, 1500, 5000, 70_000] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: nonzero sizes; every block is freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    std::ptr::write_bytes(p, 0xab, size);
                    let grown = size * 3 + 1;
                    let q = a.realloc(p, layout, grown);
                    assert_eq!(q as usize % align, 0, "grown {grown} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xab));
                    let grown_layout = Layout::from_size_align(grown, align).expect("layout");
                    let r = a.realloc(q, grown_layout, 1);
                    assert_eq!(r as usize % align, 0, "shrunk align {align}");
                    assert_eq!(*r, 0xab);
                    a.dealloc(r, Layout::from_size_align(1, align).expect("layout"));
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
