//! End-to-end benchmark: the real `kitesync` binary, as a separate process, against the
//! fakes on loopback, with realistic generated builds (jobs, a mix of states).
//!
//!     cargo bench --bench e2e -- [--builds 100000] [--only backfill|memory|idle|steady|tests|pace]
//!
//! `KITESYNC_BENCH_WRAP` runs kitesync under another command (a profiler: `heaptrack -o
//! /tmp/ks`, `valgrind --tool=massif`); the RSS figures are then the wrapper's.
//!
//! Prints a table: builds delivered per second, Buildkite requests against the minimum
//! ceil(N/100), 429s, peak RSS of the kitesync process (and of a 20,000-build backfill,
//! `--memory-builds`), requests per idle daemon cycle, the delay from a build's finish to its
//! delivery while builds finish at 10 a second; and with
//! test results on: requests per 1,000 builds, builds per second and RSS of a backfill with
//! JUnit files, and the delay from finish to delivery while a backlog of test results is
//! being fetched; the daemon's request rate through a backlog as a share of its pace, and a
//! `--pace free` backfill's time against what the free budget allows.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use kitesync_fakes::{data, FakeBuildkite, FakeButler};
use tokio::process::{Child, Command};

const ORG: &str = "acme";

struct Env {
    bk: FakeBuildkite,
    bb: FakeButler,
    _dir: tempfile::TempDir,
    config: PathBuf,
}

async fn env(schedule: &str) -> Env {
    env_with(schedule, "").await
}

/// The benchmark's config, with `extra` TOML appended (new sections only).
async fn env_with(schedule: &str, extra: &str) -> Env {
    let bk = FakeBuildkite::start(ORG, "bench-token").await;
    let bb = FakeButler::start("bench-key").await;
    bk.set_budgets(10_000_000, 10_000_000, Duration::from_secs(60));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("kitesync.toml");
    std::fs::write(
        &config,
        format!(
            "state_path = \"{}\"\n\n[buildkite]\norganization = \"{ORG}\"\napi_url = \"{}\"\ntoken = \"bench-token\"\nrequests_per_minute = 10000\n\n[buildbutler]\nurl = \"{}\"\napi_key = \"bench-key\"\nconcurrency = 16\n\n[schedule]\nbuilds = \"{schedule}\"\nagents = \"\"\n{extra}",
            dir.path().join("state.db").display(),
            bk.url,
            bb.url
        ),
    )
    .expect("config");
    Env {
        bk,
        bb,
        _dir: dir,
        config,
    }
}

fn kitesync(config: &Path, args: &[&str]) -> Child {
    let bin = env!("CARGO_BIN_EXE_kitesync");
    let wrap = std::env::var("KITESYNC_BENCH_WRAP").unwrap_or_default();
    let mut words: Vec<&str> = wrap.split_whitespace().collect();
    words.push(bin);
    Command::new(words[0])
        .args(&words[1..])
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("kitesync started")
}

/// Peak resident memory of a process so far (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// CPU time (user + system) a process has used so far, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// Waits for `child`, sampling its peak RSS and CPU time; returns (wall time, peak RSS MiB,
/// CPU seconds, success).
async fn watch(mut child: Child) -> (Duration, f64, f64, bool) {
    let started = Instant::now();
    let pid = child.id().unwrap_or(0);
    let (mut peak, mut cpu): (f64, f64) = (0.0, 0.0);
    loop {
        if let Some(rss) = peak_rss_mib(pid) {
            peak = peak.max(rss);
        }
        if let Some(c) = cpu_seconds(pid) {
            cpu = cpu.max(c);
        }
        match tokio::time::timeout(Duration::from_millis(20), child.wait()).await {
            Ok(status) => {
                return (
                    started.elapsed(),
                    peak,
                    cpu,
                    status.is_ok_and(|s| s.success()),
                )
            }
            Err(_) => continue,
        }
    }
}

fn row(name: &str, value: String, target: &str) {
    println!("| {name:<52} | {value:>16} | {target:<28} |");
}

/// A backfill of `builds` generated builds over two years, test results off: the fakes, and
/// (wall time, peak RSS MiB, CPU seconds, success). The builds have the documented shape
/// (`fakes/data/buildkite/`): several jobs each, each script job with its agent.
async fn backfilled(builds: u64) -> (Env, Duration, f64, f64, bool) {
    let e = env("*/30 * * * * *").await;
    let now = Utc::now();
    let spacing = chrono::Duration::milliseconds(730 * 86_400_000 / builds.max(1) as i64);
    let generated =
        data::finished_builds(ORG, 1, builds, now - chrono::Duration::hours(1), spacing);
    e.bk.set_builds(generated);
    let since = (now - chrono::Duration::days(731)).to_rfc3339();
    let child = kitesync(&e.config, &["--backfill", "--since", &since]);
    let (took, peak, cpu, ok) = watch(child).await;
    (e, took, peak, cpu, ok)
}

async fn backfill(builds: u64) {
    let (e, took, peak, cpu, ok) = backfilled(builds).await;
    let delivered = e.bb.build_count();
    let requests = e.bk.requests();
    let limited = requests.iter().filter(|r| r.status == 429).count();
    let minimum = builds.div_ceil(100);
    println!(
        "\nbackfill of {builds} builds ({})",
        if ok { "exit 0" } else { "FAILED" }
    );
    row(
        "builds delivered (build + stages)",
        delivered.to_string(),
        &builds.to_string(),
    );
    row(
        "builds delivered per second, end to end",
        format!("{:.0}", delivered as f64 / took.as_secs_f64()),
        "> 5,000",
    );
    row("wall time", format!("{:.1} s", took.as_secs_f64()), "");
    row(
        "kitesync CPU time (the fakes share the cores)",
        format!("{cpu:.1} s"),
        "",
    );
    row(
        "builds per kitesync CPU-second",
        format!("{:.0}", delivered as f64 / cpu.max(0.01)),
        "",
    );
    row(
        "Buildkite requests (minimum ceil(N/100))",
        format!("{} ({minimum})", requests.len()),
        &format!("<= {:.0}", 1.05 * minimum as f64),
    );
    row("429 answers", limited.to_string(), "0");
    row("peak RSS of kitesync", format!("{peak:.1} MiB"), "< 40 MB");
}

/// Peak RSS of a backfill of `builds` builds of the documented shape (20,000 by default),
/// test results off.
async fn real_sized(builds: u64) {
    let (e, _, peak, _, ok) = backfilled(builds).await;
    println!(
        "\nbackfill of {builds} builds of the documented shape, test results off ({})",
        if ok { "exit 0" } else { "FAILED" }
    );
    row(
        "builds delivered",
        e.bb.build_count().to_string(),
        &builds.to_string(),
    );
    row(
        "peak RSS of kitesync",
        format!("{peak:.1} MiB"),
        "<= 30 MiB for 20,000",
    );
}

async fn idle() {
    let e = env("* * * * * *").await;
    e.bk.set_builds(data::finished_builds(
        ORG,
        1,
        300,
        Utc::now(),
        chrono::Duration::seconds(5),
    ));
    let mut daemon = kitesync(&e.config, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while e.bb.build_count() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = e.bk.requests().len();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let cycles = 10;
    let per_cycle = (e.bk.requests().len() - before) as f64 / cycles as f64;
    let pid = daemon.id().unwrap_or(0);
    let rss = peak_rss_mib(pid).unwrap_or(0.0);
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    println!("\nidle daemon, 10 cycles of a 1 s schedule");
    row(
        "Buildkite requests per idle cycle",
        format!("{per_cycle:.1}"),
        "1",
    );
    row("peak RSS of kitesync", format!("{rss:.1} MiB"), "");
}

async fn steady() {
    let e = env("*/2 * * * * *").await;
    let mut daemon = kitesync(&e.config, &[]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seconds = 30;
    let delays = finishing(&e, 10, seconds, 0).await;
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    println!("\nsteady state: 10 builds finishing per second for {seconds} s, 2 s poll schedule");
    latency_rows(&delays, 10 * seconds);
}

/// Adds `per_second` builds finishing now for `seconds` (numbered from 10,000), waits until
/// BuildButler has them (besides the `already` it held), and returns how long each took from
/// its finish to BuildButler, sorted.
async fn finishing(e: &Env, per_second: u64, seconds: u64, already: usize) -> Vec<f64> {
    let mut finished = std::collections::BTreeMap::new();
    for i in 0..seconds * per_second {
        let n = 10_000 + i;
        e.bk.add_builds([data::just_finished(ORG, n, "web")]);
        finished.insert(data::build_id(n), Instant::now());
        tokio::time::sleep(Duration::from_millis(1000 / per_second)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while e.bb.build_count() < already + finished.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = e.bb.first_seen();
    let mut delays: Vec<f64> = finished
        .iter()
        .filter_map(|(id, at)| Some(seen.get(id)?.duration_since(*at).as_secs_f64()))
        .collect();
    delays.sort_by(f64::total_cmp);
    delays
}

/// Rows of how many of `finished` builds were delivered, and how fast: median and p99.
fn latency_rows(delays: &[f64], finished: u64) {
    let pct = |p: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    row(
        "builds delivered",
        format!("{} of {finished}", delays.len()),
        "all",
    );
    row(
        "finish -> delivered, median",
        format!("{:.2} s", pct(0.5)),
        "<= poll interval + 1 s = 3 s",
    );
    row(
        "finish -> delivered, p99",
        format!("{:.2} s", pct(0.99)),
        "<= 3 s",
    );
}

/// A JUnit file of one suite with ten passing cases.
fn junit(name: &str) -> Vec<u8> {
    let cases: String = (0..10)
        .map(|i| format!(r#"<testcase classname="{name}" name="case{i}" time="0.01"/>"#))
        .collect();
    format!(r#"<?xml version="1.0"?><testsuite name="{name}">{cases}</testsuite>"#).into_bytes()
}

/// Gives builds `numbers` `files` JUnit files each.
fn with_junit(bk: &FakeBuildkite, numbers: impl Iterator<Item = u64>, files: usize) {
    for n in numbers {
        let all = (0..files).map(|i| (format!("junit/{i}.xml"), junit(&format!("b{n}-{i}"))));
        bk.set_artifacts(n, all.collect());
    }
}

/// A backfill of `builds` builds with 2 JUnit files each, test results on, at the highest
/// pace the config allows (10,000 requests a minute) with all of it open to enrichment: what
/// test results cost in requests, and what they do to throughput and memory.
async fn with_test_results(builds: u64) {
    let tests =
        "[tests]\njunit_artifact_globs = [\"junit/*.xml\"]\n[enrich]\nmax_share_percent = 100\n";
    let e = env_with("*/30 * * * * *", tests).await;
    let now = Utc::now();
    let spacing = chrono::Duration::milliseconds(730 * 86_400_000 / builds.max(1) as i64);
    let generated =
        data::finished_builds(ORG, 1, builds, now - chrono::Duration::hours(1), spacing);
    e.bk.set_builds(generated);
    with_junit(&e.bk, 1..=builds, 2);
    let since = (now - chrono::Duration::days(731)).to_rfc3339();
    let child = kitesync(&e.config, &["--backfill", "--since", &since]);
    let (took, peak, _, ok) = watch(child).await;
    let requests = e.bk.requests().len();
    let per_1000 = requests as f64 * 1000.0 / builds as f64;
    println!(
        "\nwith test results: backfill of {builds} builds with 2 JUnit files each ({})",
        if ok { "exit 0" } else { "FAILED" }
    );
    row(
        "builds / test suites delivered",
        format!("{} / {}", e.bb.build_count(), e.bb.suite_count()),
        &format!("{builds} / {}", 2 * builds),
    );
    row(
        "Buildkite requests per 1,000 builds",
        format!("{per_1000:.0}"),
        "1,000 + 2,000 + 10 = 3,010",
    );
    row(
        "builds delivered per second, with their test results",
        format!("{:.1}", builds as f64 / took.as_secs_f64()),
        "the pace: 10,000 a minute / 3",
    );
    row("peak RSS of kitesync", format!("{peak:.1} MiB"), "< 40 MB");
}

/// The daemon works through a backlog of test results (300 builds x 10 files at 6,000
/// requests a minute: over 30 s) while builds finish at 2 a second: how long each
/// takes from its finish to BuildButler.
async fn latency_during_a_backlog() {
    let tests = "[tests]\njunit_artifact_globs = [\"junit/*.xml\"]\n";
    let e = env_with("*/2 * * * * *", tests).await;
    std::fs::write(
        &e.config,
        std::fs::read_to_string(&e.config)
            .expect("config")
            .replace("requests_per_minute = 10000", "requests_per_minute = 6000"),
    )
    .expect("config");
    let now = Utc::now();
    e.bk.set_builds(data::finished_builds(
        ORG,
        1,
        300,
        now - chrono::Duration::minutes(30),
        chrono::Duration::seconds(5),
    ));
    with_junit(&e.bk, 1..=300, 10);
    let mut daemon = kitesync(&e.config, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while e.bb.build_count() < 300 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seconds = 20;
    let delays = finishing(&e, 2, seconds, 300).await;
    let suites_meanwhile = e.bb.suite_count();
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    println!(
        "\nwith test results: 2 builds finishing per second for {seconds} s, 2 s poll schedule, during a backlog of 3,000 JUnit files"
    );
    row(
        "backlog suites delivered by then (of 3,000)",
        suites_meanwhile.to_string(),
        "< 3,000: still working",
    );
    latency_rows(&delays, 2 * seconds);
}

/// The daemon at 1,200 requests a minute (enrichment bound by the pace, not by its own
/// latency) with a backlog of test results: its request rate after the first minute, as a
/// share of the pace, and the polls' own part of it.
async fn backlog_rate() {
    let tests = "[tests]\njunit_artifact_globs = [\"junit/*.xml\"]\n";
    let e = env_with("*/10 * * * * *", tests).await;
    let config = std::fs::read_to_string(&e.config).expect("config");
    let config = config.replace("requests_per_minute = 10000", "requests_per_minute = 1200");
    std::fs::write(&e.config, config).expect("config");
    e.bk.set_builds(data::finished_builds(
        ORG,
        1,
        200,
        Utc::now() - chrono::Duration::minutes(30),
        chrono::Duration::seconds(5),
    ));
    with_junit(&e.bk, 1..=200, 10);
    let mut daemon = kitesync(&e.config, &[]);
    let start = Instant::now();
    let (from, to) = (
        start + Duration::from_secs(60),
        start + Duration::from_secs(90),
    );
    tokio::time::sleep_until(to.into()).await;
    let _ = daemon.start_kill();
    let _ = daemon.wait().await;
    let requests = e.bk.requests();
    let window: Vec<_> = requests
        .iter()
        .filter(|r| r.at >= from && r.at < to)
        .collect();
    let polls = window.iter().filter(|r| r.uri.contains("/builds?")).count();
    let pace = 1200.0 / 60.0 * (to - from).as_secs_f64();
    println!("\nthe daemon at 1,200 a minute, 10 s poll schedule, a backlog of 2,200 test-result requests: from 60 s to 90 s");
    row(
        "requests / the pace",
        format!("{:.3}", window.len() as f64 / pace),
        &format!(">= 0.95 - polls' {:.3}", polls as f64 / pace),
    );
}

/// A backfill with test results under `--pace free` against budgets of 60 (token owner)
/// and 120 (organization) requests per 30 s, of which another client spends 10 and 30 in
/// every window: how long it took against the least time the free budget allows.
async fn free_pace_backfill() {
    const WINDOW: Duration = Duration::from_secs(30);
    let tests = "[tests]\njunit_artifact_globs = [\"junit/*.xml\"]\n";
    let e = env_with("*/30 * * * * *", tests).await;
    let config = std::fs::read_to_string(&e.config).expect("config");
    let config = config.replace("requests_per_minute = 10000", "requests_per_minute = 30");
    std::fs::write(&e.config, config).expect("config");
    let builds = 43;
    let now = Utc::now();
    e.bk.set_builds(data::finished_builds(
        ORG,
        1,
        builds,
        now - chrono::Duration::hours(1),
        chrono::Duration::minutes(10),
    ));
    with_junit(&e.bk, 1..=builds, 2);
    // The token owner's is the lower: 60 − 10 − a reserve of 6 = 44 free a window.
    e.bk.set_budgets(120, 60, WINDOW);
    e.bk.set_other_client(30, 10);
    let free_per_minute = 44.0 * 60.0 / WINDOW.as_secs_f64();
    let since = (now - chrono::Duration::days(2)).to_rfc3339();
    let child = kitesync(
        &e.config,
        &["--backfill", "--since", &since, "--pace", "free"],
    );
    let (took, _, _, ok) = watch(child).await;
    let requests = e.bk.requests();
    let limited = requests.iter().filter(|r| r.status == 429).count();
    let least = requests.len() as f64 / free_per_minute * 60.0;
    println!(
        "\nbackfill of {builds} builds with 2 JUnit files each under --pace free, 44 requests free per 30 s window ({}; {} requests, {limited} 429s, {:.1} s)",
        if ok { "exit 0" } else { "FAILED" },
        requests.len(),
        took.as_secs_f64()
    );
    row(
        "time taken / (requests / free budget a minute)",
        format!("{:.2}", took.as_secs_f64() / least),
        "<= 1.15",
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let builds: u64 = value("--builds")
        .and_then(|b| b.parse().ok())
        .unwrap_or(100_000);
    let only = value("--only");
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    println!(
        "| {:<52} | {:>16} | {:<28} |",
        "figure", "measured", "target"
    );
    println!("|{}|{}|{}|", "-".repeat(54), "-".repeat(18), "-".repeat(30));
    if run("backfill") {
        backfill(builds).await;
    }
    if run("memory") {
        let builds = value("--memory-builds")
            .and_then(|b| b.parse().ok())
            .unwrap_or(20_000);
        real_sized(builds).await;
    }
    if run("idle") {
        idle().await;
    }
    if run("steady") {
        steady().await;
    }
    if run("tests") {
        let builds = value("--test-builds")
            .and_then(|b| b.parse().ok())
            .unwrap_or(1_000);
        with_test_results(builds).await;
        latency_during_a_backlog().await;
    }
    if run("pace") {
        backlog_rate().await;
        free_pace_backfill().await;
    }
}
