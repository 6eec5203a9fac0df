//! Why a Buildkite request, or an artifact's download, failed.

use crate::buildkite::storage::Refused;
use crate::net;

/// Why a Buildkite request failed for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("Buildkite rejected the API token (401 at {endpoint}): it is invalid, expired or revoked; set a valid token in [buildkite] token or token_file")]
    Unauthorized { endpoint: String },
    /// A 401 or 403 whose body is not Buildkite's JSON error (an HTML block page, say): a
    /// proxy, firewall or gateway between kitesync and Buildkite answered, not Buildkite.
    #[error("something between kitesync and Buildkite refused the request ({status} at {endpoint}, and not with Buildkite's JSON error: {quote:?}): a proxy, firewall or gateway on the way; ask whoever runs it to let kitesync reach the Buildkite API")]
    Blocked {
        endpoint: String,
        status: u16,
        /// The start of what it answered.
        quote: String,
    },
    #[error("the Buildkite API token lacks the {scope} scope needed for {endpoint} (403): add {scope} to the token at https://buildkite.com/user/api-access-tokens")]
    Forbidden { endpoint: String, scope: String },
    #[error("Buildkite answered 404 for {endpoint}: check [buildkite] organization and that the token's owner belongs to it")]
    NotFound { endpoint: String },
    /// A build's artifact, log or artifact list that no longer exists: that item alone.
    #[error("Buildkite answered 404 for {endpoint}: it no longer exists (deleted or expired)")]
    Gone { endpoint: String },
    #[error("Buildkite refused to list this deep at {endpoint} (400: {message})")]
    TooDeep { endpoint: String, message: String },
    #[error("Buildkite answered {status} at {endpoint}: {message}")]
    Rejected {
        endpoint: String,
        status: u16,
        message: String,
    },
    #[error("Buildkite is unavailable at {endpoint} after {attempts} attempts: {reason}")]
    Unavailable {
        endpoint: String,
        attempts: u32,
        reason: String,
        /// The last attempt failed because no answer came in time: the client's timeout, or
        /// a gateway's 504. A smaller page may still be answered.
        timed_out: bool,
    },
    #[error("Buildkite's answer at {endpoint} points at another host ({host}) for more: refusing to send the token there")]
    ForeignLink { endpoint: String, host: String },
    /// An answer longer than kitesync reads of such an answer (an endless stream, say).
    #[error("Buildkite's answer at {endpoint} is larger than {}: not read further (a page of fewer items may fit)", net::size(*cap))]
    TooLarge { endpoint: String, cap: u64 },
    /// A successful answer that breaks the API's rules (a list that does not narrow, a link
    /// that does not parse).
    #[error("Buildkite's answer at {endpoint} cannot be followed: {problem}")]
    Protocol { endpoint: String, problem: String },
}

impl SourceError {
    /// True when no retry can help: the token, its scopes or the organization are wrong.
    pub(crate) fn is_configuration(&self) -> bool {
        matches!(
            self,
            SourceError::Unauthorized { .. }
                | SourceError::Blocked { .. }
                | SourceError::Forbidden { .. }
                | SourceError::NotFound { .. }
        )
    }
}

/// Why an artifact could not be fetched from its storage host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FetchError {
    #[error("larger than [tests] max_file_bytes")]
    TooLarge,
    /// Refused before connecting: see [`check`](crate::buildkite::storage::check).
    #[error("refused: {0}")]
    Refused(Refused),
    #[error("{0}")]
    Failed(String),
}
