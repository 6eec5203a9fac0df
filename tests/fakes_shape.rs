//! The fakes answer in the documented shape: every key of Buildkite's documented examples
//! (`fakes/data/buildkite/*.json`, sources in its `SOURCES.md`), nulls included, and no key
//! the examples lack. Builds come from `data::build` directly; the access token, the 429
//! body, artifacts and agents are read from a running fake. Key sets are compared at every
//! depth, so neither the fakes nor the documents can change without this failing.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use common::{ORG, TOKEN};
use kitesync_fakes::{data, FakeBuildkite};
use serde_json::Value;

/// A documented example.
fn doc(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fakes/data/buildkite")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("a documented example");
    serde_json::from_str(&text).expect("JSON")
}

/// Objects whose keys are data, not schema: any key set is the documented one.
const FREE_MAPS: [&str; 4] = [
    "env",
    "meta_data",
    "pull_request",
    "job_state_counts.states",
];

/// Compares the key sets of `ours` and `documented` at `path` and below, collecting
/// mismatches. Where one side is `null` and the other an object, the field is a nullable
/// one (its key is there, which the parent's comparison checks) and is not descended into;
/// `objects` collects the paths where both were objects, so callers can require that every
/// documented object was compared at least once.
fn compare(
    path: &str,
    ours: &Value,
    documented: &Value,
    errors: &mut BTreeSet<String>,
    objects: &mut BTreeSet<String>,
) {
    match (ours, documented) {
        (Value::Object(o), Value::Object(d)) => {
            objects.insert(path.to_string());
            if FREE_MAPS.contains(&path) {
                return;
            }
            let ok: BTreeSet<&String> = o.keys().collect();
            let dk: BTreeSet<&String> = d.keys().collect();
            let extra: Vec<_> = ok.difference(&dk).collect();
            let missing: Vec<_> = dk.difference(&ok).collect();
            if !extra.is_empty() || !missing.is_empty() {
                errors.insert(format!(
                    "{}: keys not documented {extra:?}, documented keys missing {missing:?}",
                    if path.is_empty() { "(top level)" } else { path }
                ));
            }
            for (k, v) in o {
                if let Some(dv) = d.get(k) {
                    let here = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    compare(&here, v, dv, errors, objects);
                }
            }
        }
        (Value::Array(o), Value::Array(d)) => {
            if let Some(first) = d.first() {
                for v in o {
                    compare(&format!("{path}[]"), v, first, errors, objects);
                }
            }
        }
        (Value::Null, _) | (_, Value::Null) => {}
        (o, d) => {
            if std::mem::discriminant(o) != std::mem::discriminant(d) {
                errors.insert(format!("{path}: {o} is not of the documented type of {d}"));
            }
        }
    }
}

/// Every path at which `v` holds an object.
fn object_paths(path: &str, v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            out.insert(path.to_string());
            for (k, v) in o {
                let here = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                object_paths(&here, v, out);
            }
        }
        Value::Array(a) => {
            if let Some(first) = a.first() {
                object_paths(&format!("{path}[]"), first, out);
            }
        }
        _ => {}
    }
}

/// Fails listing every mismatch (once each), and every documented object never compared as one.
fn check(what: &str, pairs: &[(&Value, &Value)]) {
    let mut errors = BTreeSet::new();
    let mut compared = BTreeSet::new();
    let mut documented = BTreeSet::new();
    for (ours, doc) in pairs {
        compare("", ours, doc, &mut errors, &mut compared);
        object_paths("", doc, &mut documented);
    }
    let never: Vec<_> = documented.difference(&compared).collect();
    assert!(
        errors.is_empty(),
        "{what} differs from the documents:\n{}",
        errors.into_iter().collect::<Vec<_>>().join("\n")
    );
    assert!(
        never.is_empty(),
        "{what}: these documented objects are always null: {never:?}"
    );
}

/// Which documented job a generated job should look like: by type, and for a script job by
/// whether it is a retry (only a retry has `retry_source`).
fn documented_job<'a>(jobs: &'a [Value], job: &Value) -> &'a Value {
    let retry = job.get("retry_source").is_some_and(|r| !r.is_null());
    jobs.iter()
        .find(|d| {
            d["type"] == job["type"]
                && (d["type"] != "script" || d.get("retry_source").is_some() == retry)
        })
        .unwrap_or_else(|| panic!("no documented job of type {}", job["type"]))
}

#[test]
fn generated_builds_have_the_documented_keys_at_every_depth() {
    let documented = doc("build.json");
    let doc_jobs = documented["jobs"].as_array().expect("jobs").clone();
    let mut doc_build = documented.clone();
    doc_build["jobs"] = Value::Array(Vec::new());
    let end = Utc
        .with_ymd_and_hms(2026, 11, 1, 12, 0, 0)
        .single()
        .expect("a time");
    let mut builds = data::finished_builds(ORG, 1, 63, end, chrono::Duration::minutes(1));
    builds.push(data::build(ORG, 64, "web", "running", end, None));

    let mut builds_only = Vec::new();
    let mut jobs = Vec::new();
    for b in &builds {
        let mut top = b.clone();
        top["jobs"] = Value::Array(Vec::new());
        builds_only.push(top);
        jobs.extend(b["jobs"].as_array().expect("jobs").iter().cloned());
    }
    let pairs: Vec<(&Value, &Value)> = builds_only.iter().map(|b| (b, &doc_build)).collect();
    check("the build", &pairs);

    // Each documented kind of job occurs, and each occurrence has its kind's keys.
    let pairs: Vec<(&Value, &Value)> = jobs
        .iter()
        .map(|j| (j, documented_job(&doc_jobs, j)))
        .collect();
    for d in &doc_jobs {
        assert!(
            pairs.iter().any(|(_, doc)| std::ptr::eq(*doc, d)),
            "no generated job is shaped like the documented {} job {}",
            d["type"],
            d["id"]
        );
    }
    check("the jobs", &pairs);

    // What the NOTES call out, beyond key sets.
    for job in &jobs {
        assert!(
            job["agent"].get("meta_data").is_none(),
            "a job's agent has no meta_data"
        );
        if job["type"] == "manual" {
            assert!(
                job.get("name").is_none() && job["web_url"].is_null(),
                "{job}"
            );
        }
    }
}

#[test]
fn generated_agents_have_the_documented_keys() {
    let documented = doc("agent.json");
    let busy = data::agent(ORG, 1, "connected", Some(":rspec: Specs"));
    let idle = data::agent(ORG, 2, "connected", None);
    check("the agent", &[(&busy, &documented), (&idle, &documented)]);
}

/// A GET of the fake with the token; the status, the headers and the JSON body.
async fn get(bk: &FakeBuildkite, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let response = reqwest::Client::new()
        .get(format!("{}{path}", bk.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("the fake answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.expect("a JSON body"))
}

#[tokio::test(flavor = "multi_thread")]
async fn served_answers_have_the_documented_keys() {
    let bk = FakeBuildkite::start(ORG, TOKEN).await;
    bk.set_agents(vec![
        data::agent(ORG, 1, "connected", Some(":rspec: Specs")),
        data::agent(ORG, 2, "connected", None),
    ]);
    bk.set_artifacts(
        3,
        vec![("tmp/junit-1.xml".into(), b"<testsuite/>".to_vec())],
    );

    let (status, headers, token) = get(&bk, "/v2/access-token").await;
    assert_eq!(status, 200);
    check("the access token", &[(&token, &doc("access-token.json"))]);
    assert_eq!(headers["ratelimit-scope"], "rest");
    assert_eq!(headers["ratelimit-user-scope"], "rest_user");
    assert!(headers.get("ratelimit-warning").is_none());
    assert!(headers.get("ratelimit-user-warning").is_none());
    for key in ["created_at", "expires_at"] {
        let t = token[key].as_str().expect("a time");
        assert!(
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S UTC").is_ok(),
            "{key} in the documented `... UTC` form: {t}"
        );
    }

    let (status, _, artifacts) = get(
        &bk,
        &format!("/v2/organizations/{ORG}/pipelines/web/builds/3/artifacts"),
    )
    .await;
    assert_eq!(status, 200);
    let documented = doc("artifacts.json");
    let pairs: Vec<(&Value, &Value)> = artifacts
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| (a, &documented[0]))
        .collect();
    assert_eq!(pairs.len(), 1);
    check("the artifacts", &pairs);

    let (status, _, agents) = get(&bk, &format!("/v2/organizations/{ORG}/agents")).await;
    assert_eq!(status, 200);
    let documented = doc("agent.json");
    let pairs: Vec<(&Value, &Value)> = agents
        .as_array()
        .expect("a list")
        .iter()
        .map(|a| (a, &documented))
        .collect();
    assert_eq!(pairs.len(), 2);
    check("the agents", &pairs);

    // The token owner's budget runs out: the 429 names `rest_user`, the org's `rest`.
    bk.set_budgets(100, 1, Duration::from_secs(60));
    let (status, headers, body) = get(&bk, "/v2/access-token").await;
    assert_eq!(status, 200, "the first request fits");
    assert_eq!(
        headers["ratelimit-user-warning"],
        "You have exceeded your API rate limit."
    );
    let (status, _, body429) = get(&bk, "/v2/access-token").await;
    assert_eq!(status, 429, "{body}");
    check("the user 429", &[(&body429, &doc("rate-limited-429.json"))]);
    assert_eq!(body429["scope"], "rest_user");
    let reset = body429["reset"].as_u64().expect("reset in seconds");
    assert!(
        body429["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("Please wait {reset} seconds"))),
        "{body429}"
    );

    bk.set_budgets(1, 100, Duration::from_secs(60));
    let _ = get(&bk, "/v2/access-token").await;
    let (status, headers, body429) = get(&bk, "/v2/access-token").await;
    assert_eq!(status, 429);
    check(
        "the org 429",
        &[(&body429, &doc("rate-limited-429-org.json"))],
    );
    assert_eq!(body429["scope"], "rest");
    assert_eq!(
        headers["ratelimit-warning"],
        "You have exceeded your API rate limit."
    );
}
