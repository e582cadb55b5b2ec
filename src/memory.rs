//! The C allocator tuned for a long-lived daemon that is idle most of the time.
//!
//! glibc raises its mmap threshold each time a large block is freed, so after the first
//! large request the next large buffers (each 1 MiB `guest-file-write`) come from the heap and
//! stay resident once freed; and each thread that allocates may get an arena of its own (up to
//! eight per core), which the short-lived threads that collect facts would fill with freed
//! memory. A fixed threshold gives large buffers back to the kernel when they are freed, and
//! two arenas bound that spread. Measured by `guestd-bench` (README, "Performance"). musl's
//! allocator returns large blocks by itself and has no arenas: nothing to do there.

/// Called once, before the runtime starts its threads.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt(3) only sets allocator parameters; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}
