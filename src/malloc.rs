//! glibc's allocator, set once at start for a small, steady footprint.
//!
//! By default glibc gives each thread that allocates while another holds an arena an arena of
//! its own (up to 8 per core), and each keeps what its thread freed. kitesync's store calls
//! run on tokio's blocking pool, its requests and renders on the workers: a backfill of
//! builds with several jobs each peaked at 8 MiB of live heap but 23 MiB of heap resident,
//! spread over a dozen arenas. Freed large buffers (a page of builds, a batch of payloads)
//! also raise glibc's mmap threshold, so the next ones stay on the heap after they are freed.

/// One arena for the process, and buffers of 128 KiB or more mapped on their own (returned
/// to the system when freed). A setting given in the environment (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES`) is left as given. Call before any thread
/// starts.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let given = |var: &str| std::env::var_os(var).is_some();
        if given("GLIBC_TUNABLES") {
            return;
        }
        if !given("MALLOC_ARENA_MAX") {
            // SAFETY: mallopt only sets an allocator parameter; no allocation is in flight.
            unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
        }
        if !given("MALLOC_MMAP_THRESHOLD_") {
            // SAFETY: as above. A fixed threshold also stops glibc from raising it.
            unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
        }
    }
}
