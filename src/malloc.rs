//! glibc's allocator, set once at start for a small, steady footprint.
//!
//! By default glibc gives a thread that allocates while another holds the arena an arena of
//! its own (up to 8 per core), and each arena keeps what was freed in it. kitesync's store
//! calls run on tokio's blocking pool, its requests and renders on the workers: a backfill of
//! builds with several jobs each held 8 MiB of live heap at its peak but 23 MiB of heap
//! resident, spread over a dozen arenas, more on a busy machine.

/// One arena for the process, unless the environment sets glibc's allocator
/// (`MALLOC_ARENA_MAX` or `GLIBC_TUNABLES`). Call before any thread starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES"]
        .iter()
        .all(|var| std::env::var_os(var).is_none())
    {
        // SAFETY: mallopt only sets a parameter of the allocator, before any other thread
        // exists to allocate.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
    }
}
