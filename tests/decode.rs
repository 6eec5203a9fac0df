//! Builds as Buildkite really sends them (issue 19): a field of an unexpected type never
//! costs a build, and every recorded Buildkite build (`../shared/realdata/buildkite_real`,
//! answers of the live API 2015–2024, sources in its SOURCES.md) goes through the decoder
//! and, served by the fake, through the real binary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use common::*;
use kitesync::buildkite::model::{parse_time, Build};
use kitesync_fakes::data;
use serde_json::{json, Value};

/// What a drifted field does to its build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// Delivered, the field read as absent and named (`None`: read as it is).
    Delivered(Option<&'static str>),
    /// A dead letter naming the field.
    Dead(&'static str),
}

/// The dead letters of builds in the state database: (key, error).
fn dead_builds(h: &Harness) -> BTreeMap<String, String> {
    let conn = rusqlite::Connection::open(h.state_path()).expect("state database");
    let mut stmt = conn
        .prepare("SELECT key, last_error FROM outbox WHERE kind = 'build' AND state = 'dead'")
        .expect("query");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows");
    rows.map(|r| r.expect("row")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_field_of_an_unexpected_type_never_costs_a_build() {
    use Then::*;
    // (JSON pointer in the build as served, value, what follows), build n = case n + 1.
    let agent = json!({"id": 1, "name": 2, "hostname": false, "meta_data": "queue=default"});
    let cases: Vec<(&str, Value, Then)> = vec![
        ("/commit", json!(123), Delivered(Some("commit"))),
        ("/branch", json!(["main"]), Delivered(Some("branch"))),
        (
            "/source",
            json!({"kind": "webhook"}),
            Delivered(Some("source")),
        ),
        ("/scheduled_at", json!(5), Delivered(Some("scheduled_at"))),
        (
            "/started_at",
            json!("yesterday"),
            Delivered(Some("started_at")),
        ),
        ("/jobs", json!("none"), Delivered(Some("jobs"))),
        (
            "/jobs/0/soft_failed",
            json!("true"),
            Delivered(Some("jobs.soft_failed")),
        ),
        (
            "/jobs/0/soft_failed",
            json!(1),
            Delivered(Some("jobs.soft_failed")),
        ),
        (
            "/jobs/0/artifact_paths",
            json!(["tmp/*.xml"]),
            Delivered(None),
        ),
        (
            "/jobs/0/artifact_paths",
            json!(7),
            Delivered(Some("jobs.artifact_paths")),
        ),
        (
            "/jobs/0/agent",
            json!("ci-1"),
            Delivered(Some("jobs.agent")),
        ),
        (
            "/jobs/0/agent",
            agent,
            Delivered(Some("jobs.agent.meta_data")),
        ),
        (
            "/jobs/0/started_at",
            json!(1.5),
            Delivered(Some("jobs.started_at")),
        ),
        (
            "/jobs/0/finished_at",
            json!("soon"),
            Delivered(Some("jobs.finished_at")),
        ),
        ("/jobs/0/state", json!(3), Delivered(Some("jobs.state"))),
        ("/jobs/0/name", json!(true), Delivered(Some("jobs.name"))),
        ("/jobs/0/type", json!(1), Delivered(Some("jobs.type"))),
        ("/jobs/0/id", json!(5), Delivered(Some("jobs.id"))),
        (
            "/jobs/0/retried",
            json!("no"),
            Delivered(Some("jobs.retried")),
        ),
        ("/jobs/0/label", json!([]), Delivered(Some("jobs.label"))),
        (
            "/jobs/0/step_key",
            json!({}),
            Delivered(Some("jobs.step_key")),
        ),
        ("/id", json!(12), Dead("id")),
        ("/number", json!("23"), Dead("number")),
        ("/state", json!(5), Dead("state")),
        ("/created_at", json!("not a time"), Dead("created_at")),
        // Regression (issue 20): no creation time, no place in the walk's narrowing.
        ("/created_at", Value::Null, Dead("created_at")),
        ("/pipeline", json!("web"), Dead("pipeline.slug")),
        ("/pipeline/slug", json!(5), Dead("pipeline.slug")),
        ("/finished_at", json!(17), Dead("finished_at")),
        (
            "/finished_at",
            json!("2026-13-45T99:00:00Z"),
            Dead("finished_at"),
        ),
    ];
    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(cases.len() as u64));
    for (i, (pointer, value, _)) in cases.iter().enumerate() {
        h.bk.set_drift(&data::build_id(i as u64 + 1), pointer, value.clone());
    }
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 1, "dead letters: {}", run.output());

    let delivered = h.bb.builds();
    let dead = dead_builds(&h);
    for (i, (pointer, value, then)) in cases.iter().enumerate() {
        let case = format!("build {}: {pointer} = {value}", i + 1);
        let id = data::build_id(i as u64 + 1);
        match then {
            Delivered(_) => assert!(delivered.contains_key(&id), "{case}: delivered"),
            Dead(field) => {
                assert!(!delivered.contains_key(&id), "{case}: not delivered");
                let key = if *pointer == "/id" {
                    let hashed = dead.keys().find(|k| k.starts_with("undecodable-"));
                    hashed.expect("keyed by a hash").clone()
                } else {
                    id
                };
                let error = dead
                    .get(&key)
                    .unwrap_or_else(|| panic!("{case}: dead letter"));
                assert!(error.contains(&format!("`{field}`")), "{case}: {error}");
            }
        }
    }
    let dead_cases = cases.iter().filter(|c| matches!(c.2, Dead(_))).count();
    assert_eq!(dead.len(), dead_cases, "{dead:?}");
    // What was read as absent is delivered as absent; what was read, as read.
    assert_eq!(delivered[&data::build_id(1)]["commitSha"], Value::Null);
    assert_eq!(delivered[&data::build_id(2)]["branch"], Value::Null);
    assert_eq!(delivered[&data::build_id(3)]["cause"], Value::Null);
    assert_eq!(delivered[&data::build_id(1)]["branch"], "main");
    // Each field named once in the log, with a build, however many builds had it.
    let fields: BTreeSet<&str> = cases
        .iter()
        .filter_map(|c| match c.2 {
            Delivered(field) => field,
            Dead(_) => None,
        })
        .chain(["jobs.agent.id", "jobs.agent.name", "jobs.agent.hostname"])
        .collect();
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("unexpected type or format"))
        .collect();
    for field in &fields {
        let named = warnings
            .iter()
            .filter(|l| {
                l.contains(&format!("field=\"{field}\"")) || l.contains(&format!("field={field} "))
            })
            .count();
        assert_eq!(named, 1, "{field} named once: {warnings:#?}");
    }
    assert_eq!(warnings.len(), fields.len(), "{warnings:#?}");
    assert!(
        warnings.iter().all(|l| l.contains("build=")),
        "{warnings:#?}"
    );
}

/// Every JSON value a recorded file holds: a JSON file's own, or each response body of a VCR
/// cassette (a YAML literal block `string: |`, or a single-quoted `string: '…'`).
fn recorded_values(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("readable");
    if path.extension().is_some_and(|e| e == "json") {
        return vec![serde_json::from_str(&text).expect("JSON")];
    }
    let lines: Vec<&str> = text.lines().collect();
    let mut values = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((indent, rest)) = line.split_once("string: ") else {
            continue;
        };
        let body = if rest == "|" {
            // A literal block: the lines indented deeper than the key.
            let deeper = indent.len() + 2;
            let block = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() >= deeper);
            block
                .map(|l| l.get(deeper..).unwrap_or(""))
                .collect::<Vec<_>>()
                .join("\n")
        } else if let Some(quoted) = rest.strip_prefix('\'') {
            // A single-quoted flow scalar: line breaks fold to spaces, '' is a quote.
            let mut folded = quoted.to_string();
            for next in &lines[i + 1..] {
                if folded.trim_end().ends_with('\'') && !folded.trim_end().ends_with("''") {
                    break;
                }
                folded.push(' ');
                folded.push_str(next.trim());
            }
            let folded = folded.trim_end().strip_suffix('\'').unwrap_or(&folded);
            folded.replace("''", "'")
        } else {
            continue;
        };
        if let Ok(v) = serde_json::from_str::<Value>(&body) {
            values.push(v);
        }
    }
    values
}

/// Recorded objects, each with the file it was read from.
type FromFile = Vec<(String, Value)>;

/// The recorded builds and manual jobs under `dir`.
fn recorded(dir: &Path) -> (FromFile, FromFile) {
    let (mut builds, mut jobs) = (Vec::new(), Vec::new());
    let mut files: Vec<_> = walk_files(dir);
    files.sort();
    for path in files {
        let name = path
            .strip_prefix(dir)
            .expect("inside")
            .display()
            .to_string();
        if name == "manifest.json" || !(name.ends_with(".json") || name.ends_with(".yml")) {
            continue;
        }
        for value in recorded_values(&path) {
            let items = match value {
                Value::Array(items) => items,
                one => vec![one],
            };
            for item in items {
                if item.get("number").is_some() && item.get("state").is_some() {
                    builds.push((name.clone(), item));
                } else if item["type"] == "manual" {
                    jobs.push((name.clone(), item));
                }
            }
        }
    }
    (builds, jobs)
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a directory").flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk_files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Shifts every time under a key ending in `_at`, at any depth, by `by`, keeping its form.
fn shift_times(v: &mut Value, by: Duration) {
    match v {
        Value::Object(object) => {
            for (key, value) in object.iter_mut() {
                match value.as_str().filter(|_| key.ends_with("_at")) {
                    Some(s) => {
                        if let Some(t) = parse_time(s) {
                            *value = json!(render(t + by, s.ends_with(" UTC")));
                        }
                    }
                    None => shift_times(value, by),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| shift_times(i, by)),
        _ => {}
    }
}

fn render(t: DateTime<Utc>, old: bool) -> String {
    match old {
        true => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        false => t.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_every_recorded_buildkite_build_decodes_and_is_delivered_when_finished() {
    let Some(dir) = realdata("buildkite_real") else {
        return;
    };
    let (builds, jobs) = recorded(&dir);
    // Build #68 and #67 of the 2015 cassettes, the export, getBuild, ... (SOURCES.md).
    assert!(builds.len() >= 10, "{} recorded builds found", builds.len());
    assert!(jobs.len() >= 2, "{} recorded manual jobs found", jobs.len());
    assert!(
        builds.iter().any(|(_, b)| b["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with(" UTC"))),
        "the 2015 time form is among them"
    );
    // Each recorded manual job in a copy of the first recorded finished build with jobs.
    let host = builds
        .iter()
        .find(|(_, b)| {
            b["state"] == "passed" && b["jobs"].as_array().is_some_and(|j| !j.is_empty())
        })
        .expect("a passed build with jobs")
        .clone();
    let mut all = builds.clone();
    for (file, job) in &jobs {
        let mut b = host.1.clone();
        b["jobs"].as_array_mut().expect("jobs").push(job.clone());
        all.push((format!("{} + the manual job of {file}", host.0), b));
    }

    // The decoder: every recorded build decodes, no field read as absent.
    let mut finished = BTreeSet::new();
    for (i, (file, build)) in all.iter().enumerate() {
        let case = format!("{file}: build #{}", build["number"]);
        let b = Build::decode(&build.to_string()).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert!(b.ignored.is_empty(), "{case}: {:?}", b.ignored);
        let active = [
            "scheduled",
            "running",
            "canceling",
            "creating",
            "waiting",
            "failing",
        ];
        let is_active = active.contains(&b.state.as_str());
        assert_eq!(b.finished().is_some(), !is_active, "{case}: {}", b.state);
        if !is_active {
            finished.insert(i);
        }
        if file.contains("manual job") {
            let label = jobs
                .iter()
                .map(|(_, j)| j["label"].as_str())
                .collect::<Vec<_>>();
            assert!(
                b.steps()
                    .any(|j| j.kind == "manual" && label.contains(&j.label.as_deref())),
                "{case}: the manual job is a step"
            );
        }
    }
    assert!(
        !finished.is_empty() && finished.len() < all.len(),
        "finished and not"
    );

    // The fake: each served with a fresh id and number, its times shifted into the last
    // half hour in their recorded form; the finished ones delivered, the others not.
    let h = Harness::start().await;
    let now = Utc::now();
    let served: Vec<Value> = all
        .iter()
        .enumerate()
        .map(|(i, (_, recorded))| {
            let number = 1000 + i as u64;
            let id = data::build_id(number);
            let mut b = recorded.clone();
            let last = ["finished_at", "created_at"]
                .iter()
                .find_map(|k| b[k].as_str().and_then(parse_time))
                .expect("a time");
            let at = now - Duration::minutes(30) + Duration::seconds(i as i64 * 10);
            shift_times(&mut b, at - last);
            b["id"] = json!(id);
            b["number"] = json!(number);
            for (k, job) in b["jobs"].as_array_mut().into_iter().flatten().enumerate() {
                job["id"] = json!(format!("{id}-j{k}"));
            }
            b
        })
        .collect();
    h.bk.set_builds(served);
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let delivered = h.bb.builds();
    for (i, (file, recorded)) in all.iter().enumerate() {
        let number = 1000 + i as u64;
        let case = format!("{file}: build #{} served as #{number}", recorded["number"]);
        let got = delivered.get(&data::build_id(number));
        assert_eq!(
            got.is_some(),
            finished.contains(&i),
            "{case}: delivered iff finished"
        );
        if let Some(got) = got {
            assert_eq!(got["buildNumber"], number, "{case}");
            assert_eq!(got["jobName"], recorded["pipeline"]["slug"], "{case}");
        }
    }
    assert!(dead_builds(&h).is_empty(), "no dead letter");
}
