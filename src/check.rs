//! `kitesync check`: is everything in place? The token and its scopes against what the
//! enabled features need, the organization, the rate budget, and BuildButler's answer to
//! the API key — without storing anything anywhere.

use crate::app::App;
use crate::buildkite::SourceError;

/// One finding: fine or not, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub text: String,
}

fn finding(ok: bool, text: impl Into<String>) -> Finding {
    Finding {
        ok,
        text: text.into(),
    }
}

/// Runs every check (a few Buildkite requests and one BuildButler request).
pub async fn run(app: &App) -> Vec<Finding> {
    let config = &app.config;
    let mut found = Vec::new();
    let needs = [
        ("read_builds", "builds", true, ""),
        (
            "read_agents",
            "the agent sync",
            config.agents_enabled(),
            " (or set [schedule] agents = \"\")",
        ),
        (
            "read_artifacts",
            "test results",
            config.tests_enabled(),
            " (or empty [tests] junit_artifact_globs)",
        ),
        (
            "read_build_logs",
            "logs",
            config.logs_enabled(),
            " (or set [logs] enabled = false)",
        ),
    ];
    match app.client.token_scopes().await {
        Ok(scopes) => {
            found.push(finding(true, "the Buildkite token is valid"));
            for (scope, feature, _, off) in needs.into_iter().filter(|n| n.2) {
                if scopes.iter().any(|s| s == scope) {
                    found.push(finding(true, format!("token has {scope} ({feature})")));
                } else {
                    found.push(finding(
                        false,
                        format!("token lacks {scope}: {feature} will fail; add the scope{off}"),
                    ));
                }
            }
        }
        Err(e) => found.push(finding(false, e.to_string())),
    }
    let org = &config.buildkite.organization;
    match app.client.probe_builds().await {
        Ok(()) => found.push(finding(true, format!("can list the builds of {org}"))),
        Err(e @ SourceError::NotFound { .. }) => found.push(finding(false, e.to_string())),
        Err(e) => found.push(finding(
            false,
            format!("cannot list the builds of {org}: {e}"),
        )),
    }
    let seen = app.client.budget().last_seen();
    let scope = |s: Option<crate::buildkite::budget::Scope>| {
        s.map_or("not reported".to_string(), |s| {
            format!(
                "{} of {} left, resets in {}s",
                s.remaining,
                s.limit,
                s.reset.as_secs()
            )
        })
    };
    found.push(finding(
        true,
        format!(
            "rate budget: organization {}; token owner {}",
            scope(seen.org),
            scope(seen.user)
        ),
    ));
    match app.sink.check().await {
        Ok(text) => found.push(finding(true, text)),
        Err(e) => found.push(finding(false, format!("BuildButler: {e}"))),
    }
    found
}

/// The findings as `ok`/`FAIL` lines, after the config's own.
pub fn render(findings: &[Finding]) -> String {
    let mut lines = vec!["ok    the config is valid".to_string()];
    for f in findings {
        lines.push(format!(
            "{:<4}  {}",
            if f.ok { "ok" } else { "FAIL" },
            f.text
        ));
    }
    lines.join("\n")
}
