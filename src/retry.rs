//! Shared retry helpers: exponential backoff with jitter, and readable transport errors.

use std::time::Duration;

use rand::Rng;

/// The wait before retry number `attempt` (1-based): `base * 2^(attempt-1)`, capped, then
/// scaled by a random factor in [0.5, 1.0] so that many clients do not retry in step.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(cap).mul_f64(rand::rng().random_range(0.5..=1.0))
}

/// A transport error in one line, with its root cause ("connection refused", "operation
/// timed out") and without the URL's query.
pub fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "connection dropped mid-answer"
    } else {
        "request failed"
    };
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let cause = root.to_string();
    if cause == e.to_string() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let base = Duration::from_millis(100);
        let cap = Duration::from_secs(1);
        for _ in 0..50 {
            let first = backoff(1, base, cap);
            assert!(
                first >= Duration::from_millis(50) && first <= base,
                "{first:?}"
            );
            let third = backoff(3, base, cap);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(backoff(40, base, cap) <= cap);
        }
    }
}
