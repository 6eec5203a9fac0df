//! kitesync against the real Prometheus tools (Debian's `prometheus` package): `promtool`
//! checks and unit-tests the alerting rules and lints `/metrics`, and a real `prometheus`
//! server scrapes the daemon, loads the rules and runs every query of the Grafana dashboard.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

/// Runs promtool; its exit status and everything it printed.
fn promtool(args: &[&str], dir: &Path, stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    let mut input = child.stdin.take().expect("stdin");
    input
        .write_all(stdin.unwrap_or("").as_bytes())
        .expect("stdin written");
    drop(input);
    let out = child.wait_with_output().expect("promtool finished");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_alerting_rules_pass_promtools_checks_and_unit_tests() {
    if !tool_available("promtool", "prometheus") {
        return;
    }
    let dir = contrib("prometheus");
    let (ok, said) = promtool(&["check", "rules", "kitesync-rules.yml"], &dir, None);
    assert!(ok && said.contains("SUCCESS"), "{said}");
    let (ok, said) = promtool(&["test", "rules", "kitesync-rules.test.yml"], &dir, None);
    assert!(ok && said.contains("SUCCESS"), "{said}");

    // Every alert is made to fire by a unit test, and every alert says what to do.
    let rules = std::fs::read_to_string(dir.join("kitesync-rules.yml")).expect("rules");
    let tests = std::fs::read_to_string(dir.join("kitesync-rules.test.yml")).expect("tests");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    for alert in alerts {
        let fires = tests
            .split(&format!("alertname: {alert}\n"))
            .skip(1)
            .any(|after| after.trim_start().starts_with("exp_alerts:\n"));
        assert!(fires, "no unit test makes {alert} fire");
    }
    assert_eq!(
        rules.matches("summary:").count(),
        rules.matches("description:").count()
    );
}

/// The `data` of a Prometheus API answer, once it says `success`.
async fn api(base: &str, path: &str, params: &[(&str, &str)]) -> Option<Value> {
    let url = url::Url::parse_with_params(&format!("{base}{path}"), params).ok()?;
    let answer = reqwest::get(url).await.ok()?.text().await.ok()?;
    let answer: Value = serde_json::from_str(&answer).ok()?;
    (answer["status"] == "success").then(|| answer["data"].clone())
}

/// The result of an instant query once it has at least one sample.
async fn query_until(base: &str, expr: &str) -> Vec<Value> {
    until_some(|| async move {
        let data = api(base, "/api/v1/query", &[("query", expr)]).await?;
        let result = data["result"].as_array()?.clone();
        (!result.is_empty()).then_some(result)
    })
    .await
}

fn value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

/// The daemon with metrics on a port it picks, polling every second, with `builds` to deliver.
async fn daemon_with_metrics(h: &mut Harness, builds: u64) -> (tokio::process::Child, Log, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    h.set_env("KITESYNC_METRICS__ENABLED", "true");
    h.set_env("KITESYNC_METRICS__LISTEN", "127.0.0.1:0");
    h.bk.set_builds(recent_builds(builds));
    let mut daemon = h.spawn_daemon();
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    (daemon, stderr, base)
}

#[tokio::test(flavor = "multi_thread")]
async fn promtool_lints_the_classic_text_format_clean() {
    if !tool_available("promtool", "prometheus") {
        return;
    }
    let mut h = Harness::start().await;
    let (daemon, _log, base) = daemon_with_metrics(&mut h, 3).await;
    until(|| h.bb.builds().len() == 3).await;
    // Without an OpenMetrics Accept header (as promtool and curl ask), the classic format.
    let response = reqwest::get(format!("{base}/metrics"))
        .await
        .expect("scrape");
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap_or("")
        .to_string();
    let text = response.text().await.expect("body");
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    let (ok, said) = promtool(&["check", "metrics"], Path::new("."), Some(&text));
    assert!(ok, "promtool check metrics:\n{said}\n{text}");
    terminate(&daemon);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_daemon_runs_the_rules_and_every_dashboard_query() {
    if !tool_available("prometheus", "prometheus") {
        return;
    }
    let mut h = Harness::start().await;
    let (daemon, _log, target) = daemon_with_metrics(&mut h, 7).await;
    let target = target.trim_start_matches("http://").to_string();

    let dir = h.dir.path().to_path_buf();
    let config = dir.join("prometheus.yml");
    let rules = contrib("prometheus/kitesync-rules.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: kitesync\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        ),
    )
    .expect("prometheus.yml");
    let port = free_port();
    let prometheus = tokio::process::Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");
    let base = format!("http://127.0.0.1:{port}");
    let base = base.as_str();

    // The target is up, with no scrape error (OpenMetrics read as Prometheus reads it).
    let target_seen = until_some(|| async move {
        let data = api(base, "/api/v1/targets", &[]).await?;
        let t = data["activeTargets"].as_array()?.first()?.clone();
        (t["health"] == "up").then_some(t)
    })
    .await;
    assert_eq!(target_seen["lastError"], "", "{target_seen}");
    assert_eq!(target_seen["labels"]["job"], "kitesync");
    let up = query_until(base, r#"up{job="kitesync"} == 1"#).await;
    assert_eq!(up.len(), 1);

    // The delivered-builds counter Prometheus stored matches what BuildButler received.
    until(|| h.bb.builds().len() == 7).await;
    let delivered = until_some(|| async move {
        let r = query_until(base, "kitesync_builds_delivered_total").await;
        (value(&r[0]) == 7.0).then_some(r)
    })
    .await;
    assert_eq!(delivered.len(), 1);

    // Every rule loads and evaluates without error.
    let groups = until_some(|| async move {
        let data = api(base, "/api/v1/rules", &[]).await?;
        let groups = data["groups"].as_array()?.clone();
        let evaluated = groups.iter().all(|g| {
            g["rules"].as_array().is_some_and(|r| {
                r.iter()
                    .all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z")
            })
        });
        (groups.len() == 2 && evaluated).then_some(groups)
    })
    .await;
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
    {
        assert_eq!(rule["health"], "ok", "{rule}");
    }

    // Every expression of the dashboard parses and returns data.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(contrib("grafana/kitesync.json")).expect("dashboard"),
    )
    .expect("dashboard JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let exprs: Vec<String> = exprs
        .iter()
        .map(|e| {
            e.replace("$__rate_interval", "15s")
                .replace("$job", "kitesync")
                .replace("$instance", ".*")
        })
        .collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let mut missing = Vec::new();
        for expr in &exprs {
            match api(base, "/api/v1/query", &[("query", expr)]).await {
                Some(data) if data["result"].as_array().is_some_and(|r| !r.is_empty()) => {}
                other => missing.push(format!("{expr} -> {other:?}")),
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dashboard queries without data (or refused):\n{}",
            missing.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    terminate(&daemon);
    drop(prometheus);
}
