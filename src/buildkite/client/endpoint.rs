//! What each Buildkite endpoint needs and means: its token scope, its metrics label, the
//! most of its answer that is read, and what its 404 says.

use super::error::SourceError;

// Caps on what is read of an answer, by what it is: a body over its cap is an error naming
// the endpoint and the cap, never an allocation.
/// A page of builds: 100 builds with every job and retried job are a few MB.
const BUILDS_PAGE_CAP: u64 = 32 * 1024 * 1024;
/// A page of agents or of a build's artifacts (100 of them, about a KB each).
const LIST_PAGE_CAP: u64 = 8 * 1024 * 1024;
/// A small answer: the access token, an artifact's `/download` redirect.
const SMALL_CAP: u64 = 64 * 1024;
/// A log tail may be this much more than the `max_bytes` asked for (headers, a server that
/// rounds its ranges); a server that ignores `Range` and sends more is refused.
const LOG_SLACK: u64 = 64 * 1024;

/// A request for test results or logs: paced in
/// [`Lane::Enrich`](crate::buildkite::budget::Lane::Enrich) and counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EnrichRequest {
    /// A page of a build's artifact list.
    Listing,
    /// An artifact's `/download` (the 302 to its storage URL).
    Download,
    /// A job's log tail.
    Log,
}

impl EnrichRequest {
    /// The `kind` label of the enrichment request metrics.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EnrichRequest::Listing => "listing",
            EnrichRequest::Download => "download",
            EnrichRequest::Log => "log",
        }
    }
}

/// A Buildkite endpoint kitesync calls, which decides everything that differs between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /v2/access-token`: the token itself.
    AccessToken,
    /// A page of the organization's builds.
    Builds,
    /// A page of the organization's connected agents.
    Agents,
    /// A page of a build's artifact list.
    Artifacts,
    /// An artifact's `/download` (the 302 to its storage URL).
    ArtifactDownload,
    /// The last `max_bytes` of a job's log.
    Log { max_bytes: u64 },
}

impl Endpoint {
    /// The token scope it needs, named when Buildkite's 403 does not name one.
    pub(crate) fn scope(self) -> &'static str {
        match self {
            Endpoint::AccessToken => "(none)",
            Endpoint::Builds => "read_builds",
            Endpoint::Agents => "read_agents",
            Endpoint::Artifacts | Endpoint::ArtifactDownload => "read_artifacts",
            Endpoint::Log { .. } => "read_build_logs",
        }
    }

    /// The `endpoint` label of the request metrics (the dashboard shows these values).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Endpoint::AccessToken => "access-token",
            Endpoint::Builds => "builds",
            Endpoint::Agents => "agents",
            Endpoint::Artifacts | Endpoint::ArtifactDownload => "artifacts",
            Endpoint::Log { .. } => "logs",
        }
    }

    /// The most of one answer that is read.
    pub(crate) fn cap(self) -> u64 {
        match self {
            Endpoint::Builds => BUILDS_PAGE_CAP,
            Endpoint::Agents | Endpoint::Artifacts => LIST_PAGE_CAP,
            Endpoint::AccessToken | Endpoint::ArtifactDownload => SMALL_CAP,
            Endpoint::Log { max_bytes } => max_bytes.saturating_add(LOG_SLACK),
        }
    }

    /// What Buildkite's 404 here means: for one build's items (artifacts, logs) only that
    /// item is gone; elsewhere the organization (or the token's access to it) is wrong.
    pub(crate) fn not_found(self, endpoint: String) -> SourceError {
        match self {
            Endpoint::Artifacts | Endpoint::ArtifactDownload | Endpoint::Log { .. } => {
                SourceError::Gone { endpoint }
            }
            Endpoint::AccessToken | Endpoint::Builds | Endpoint::Agents => {
                SourceError::NotFound { endpoint }
            }
        }
    }

    /// The kind of enrichment request it is (see [`EnrichRequest`]), or `None` for a poll.
    pub(crate) fn enrich(self) -> Option<EnrichRequest> {
        match self {
            Endpoint::Artifacts => Some(EnrichRequest::Listing),
            Endpoint::ArtifactDownload => Some(EnrichRequest::Download),
            Endpoint::Log { .. } => Some(EnrichRequest::Log),
            Endpoint::AccessToken | Endpoint::Builds | Endpoint::Agents => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Endpoint; 6] = [
        Endpoint::AccessToken,
        Endpoint::Builds,
        Endpoint::Agents,
        Endpoint::Artifacts,
        Endpoint::ArtifactDownload,
        Endpoint::Log { max_bytes: 1024 },
    ];

    /// Regression: the labels, scopes, caps and 404s `Scope` gave before it became `Endpoint`.
    /// The labels are what `contrib/grafana/kitesync.json` shows by `endpoint`.
    #[test]
    fn regression_each_endpoint_keeps_its_label_scope_cap_and_404() {
        let expected: [(&str, &str, u64, bool, Option<EnrichRequest>); 6] = [
            ("access-token", "(none)", SMALL_CAP, false, None),
            ("builds", "read_builds", BUILDS_PAGE_CAP, false, None),
            ("agents", "read_agents", LIST_PAGE_CAP, false, None),
            (
                "artifacts",
                "read_artifacts",
                LIST_PAGE_CAP,
                true,
                Some(EnrichRequest::Listing),
            ),
            (
                "artifacts",
                "read_artifacts",
                SMALL_CAP,
                true,
                Some(EnrichRequest::Download),
            ),
            (
                "logs",
                "read_build_logs",
                1024 + LOG_SLACK,
                true,
                Some(EnrichRequest::Log),
            ),
        ];
        for (endpoint, (label, scope, cap, gone, enrich)) in ALL.into_iter().zip(expected) {
            assert_eq!(endpoint.label(), label, "{endpoint:?}");
            assert_eq!(endpoint.scope(), scope, "{endpoint:?}");
            assert_eq!(endpoint.cap(), cap, "{endpoint:?}");
            let not_found = endpoint.not_found("x".into());
            assert_eq!(
                matches!(not_found, SourceError::Gone { .. }),
                gone,
                "{endpoint:?}"
            );
            assert_eq!(endpoint.enrich(), enrich, "{endpoint:?}");
        }
    }

    #[test]
    fn a_log_tail_reads_no_more_than_a_u64_holds() {
        assert_eq!(
            Endpoint::Log {
                max_bytes: u64::MAX
            }
            .cap(),
            u64::MAX
        );
    }
}
