//! Buildkite's error messages, where its words are the only source of what went wrong: each
//! is read in one function here, tested on the texts Buildkite documents.

/// The `message` of Buildkite's JSON error (`{"message": ...}`), if `body` is one.
pub(super) fn buildkite_message(body: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("message")?
        .as_str()
        .map(str::to_string)
}

/// The scope a 403's message names: "Your access token doesn't have the read_builds scope"
/// -> `read_builds`.
pub(super) fn missing_scope(message: &str) -> Option<&str> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("read_") || w.starts_with("write_"))
}

/// True when a 400's message is the builds listing's depth limit: "Listing builds this deep
/// is not supported. Please narrow your query using filters such as branch or created_from."
pub(super) fn too_deep(message: &str) -> bool {
    message.contains("this deep")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The depth limit's text as Buildkite's builds API page documents it
    /// (`../shared/realdata/buildkite/docs_src/builds.md`, three times) and
    /// `/work/shared/reference/buildkite-api.md` quotes it.
    const DOCUMENTED_TOO_DEEP: &str = "Listing builds this deep is not supported. Please narrow your query using filters such as branch or created_from.";

    #[test]
    fn names_the_missing_scope() {
        let cases = [
            // The reference's 403 (buildkite-api.md, "Token scopes and errors").
            (
                "Your access token doesn't have the read_builds scope",
                Some("read_builds"),
            ),
            (
                "Your access token doesn't have the read_artifacts scope",
                Some("read_artifacts"),
            ),
            (
                "Your access token doesn't have the read_build_logs scope.",
                Some("read_build_logs"),
            ),
            ("Forbidden", None),
            // The reference's 401: no scope in it.
            (
                "Authentication required. Please supply a valid API Access Token",
                None,
            ),
            (DOCUMENTED_TOO_DEEP, None),
        ];
        for (message, scope) in cases {
            assert_eq!(missing_scope(message), scope, "{message}");
        }
    }

    #[test]
    fn knows_the_depth_limit_by_its_documented_text() {
        let cases = [
            (DOCUMENTED_TOO_DEEP, true),
            // Other 400/422 messages from Buildkite's docs (docs_src/jobs.md, builds.md).
            ("Validation Failed", false),
            ("Priority must be an integer", false),
            ("This job type cannot be unblocked", false),
            (
                "Your access token doesn't have the read_builds scope",
                false,
            ),
        ];
        for (message, deep) in cases {
            assert_eq!(too_deep(message), deep, "{message}");
        }
    }

    #[test]
    fn only_a_json_message_is_buildkites() {
        assert_eq!(
            buildkite_message(r#"{"message": "No way"}"#).as_deref(),
            Some("No way")
        );
        assert_eq!(buildkite_message("<html>Access denied</html>"), None);
        assert_eq!(buildkite_message(r#"{"error": "denied"}"#), None);
        assert_eq!(buildkite_message(r#"{"message": 403}"#), None);
    }
}
