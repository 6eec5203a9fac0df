//! The memory of a running process as Linux counts it (`/proc/<pid>/status`), for tests that
//! bound it. Read it while the process is alive: once it has exited the figures are gone.

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`, ...) in MiB; `None` when the
/// process is gone or has no such field.
pub fn status_mib(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The peak resident memory of a running process so far (`VmHWM`), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmHWM")
}

/// The resident memory of a running process now (`VmRSS`), in MiB.
pub fn rss_mib(pid: u32) -> Option<f64> {
    status_mib(pid, "VmRSS")
}

/// Asserts that the running `child` has never held more than `limit_mib` resident (its
/// `VmHWM`), printing the figure for `case`; returns it.
pub fn assert_peak_rss_under(child: &tokio::process::Child, limit_mib: f64, case: &str) -> f64 {
    let pid = child.id().expect("still running");
    let peak = peak_rss_mib(pid).expect("VmHWM of a running process");
    println!("{case}: peak RSS {peak:.1} MiB (limit {limit_mib} MiB)");
    assert!(
        peak < limit_mib,
        "{case}: peak RSS {peak:.1} MiB, over {limit_mib} MiB"
    );
    peak
}
