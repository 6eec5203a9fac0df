//! `kitesync check`: is everything in place? The token and its scopes against what the
//! enabled features need, the organization, the rate budget, and BuildButler's answer to
//! the API key — without storing anything anywhere.

use std::fmt::Write as _;

use crate::app::App;
use crate::buildkite::budget::Scope;
use crate::buildkite::SourceError;

/// One finding: fine or not, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) ok: bool,
    pub(crate) text: String,
}

/// The token scopes the features may need: the scope, the feature, and how to do without it.
#[rustfmt::skip]
const SCOPES: [(&str, &str, &str); 4] = [
    ("read_builds", "builds", ""),
    ("read_agents", "the agent sync", " (or set [schedule] agents = \"\")"),
    ("read_artifacts", "test results", " (or empty [tests] junit_artifact_globs)"),
    ("read_build_logs", "logs", " (or set [logs] enabled = false)"),
];

/// Runs every check (a few Buildkite requests and one BuildButler request).
pub(crate) async fn run(app: &App) -> Vec<Finding> {
    let config = &app.config;
    let mut found = Vec::new();
    let mut note = |ok, text: String| found.push(Finding { ok, text });
    match app.client.token_scopes().await {
        Ok(scopes) => {
            note(true, "the Buildkite token is valid".into());
            let enabled = [
                true,
                config.agents_enabled(),
                config.tests_enabled(),
                config.logs_enabled(),
            ];
            let needed = SCOPES.iter().zip(enabled).filter(|(_, on)| *on);
            for ((scope, feature, off), _) in needed {
                if scopes.iter().any(|s| s == scope) {
                    note(true, format!("token has {scope} ({feature})"));
                } else {
                    let why =
                        format!("token lacks {scope}: {feature} will fail; add the scope{off}");
                    note(false, why);
                }
            }
        }
        Err(e) => note(false, e.to_string()),
    }
    let org = &config.buildkite.organization;
    match app.client.probe_builds().await {
        Ok(()) => note(true, format!("can list the builds of {org}")),
        Err(e @ SourceError::NotFound { .. }) => note(false, e.to_string()),
        Err(e) => note(false, format!("cannot list the builds of {org}: {e}")),
    }
    let seen = app.client.budget().last_seen();
    let scope = |s: Option<Scope>| s.map_or("not reported".to_string(), |s| s.to_string());
    let (by_org, by_user) = (scope(seen.org), scope(seen.user));
    let budget = format!("rate budget: organization {by_org}; token owner {by_user}");
    note(true, budget);
    note(true, pace_line(app));
    match app.sink.check().await {
        Ok(text) => note(true, text),
        Err(e) => note(false, format!("BuildButler: {e}")),
    }
    found
}

/// The findings as `ok`/`FAIL` lines, after the config's own.
pub(crate) fn render(findings: &[Finding]) -> String {
    let mut out = "ok    the config is valid".to_string();
    for f in findings {
        let _ = write!(out, "\n{:<4}  {}", if f.ok { "ok" } else { "FAIL" }, f.text);
    }
    out
}

/// The pace: the configured one, and what `--pace free` would go at now.
fn pace_line(app: &App) -> String {
    let budget = app.client.budget();
    let free = match budget.free_pace_now() {
        Some(free) => format!("--pace free (--once, --backfill) would go at {free} a minute now"),
        None => "--pace free would keep it: Buildkite reports no rate budget".to_string(),
    };
    format!(
        "pace: {}, polls first, test results and logs in every slot left (at most {} %); {free}",
        budget.pace(),
        app.config.enrich.max_share_percent
    )
}
