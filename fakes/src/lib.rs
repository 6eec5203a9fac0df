//! In-process fakes of the Buildkite REST API and of BuildButler, for kitesync's tests and
//! demo. They listen on 127.0.0.1 only and behave like the real services where kitesync
//! depends on it: `Link` pagination, newest-first order, the depth limit, `RateLimit-*`
//! headers and 429s, 401/403 errors, and injected faults (5xx, truncated bodies, dropped
//! connections, latency) including hostile ones: endless bodies, `Link` loops, lists that
//! ignore their filters, day-long resets, a proxy's block page.

pub mod buildbutler;
pub mod buildkite;
pub mod data;
mod http;

pub use buildbutler::{Arrival, ButlerFault, FakeButler, Webhook};
pub use buildkite::{Endpoint, FakeBuildkite, Fault, Paging, RecordedRequest};
