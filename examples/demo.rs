//! A demo that needs no Buildkite account: starts fakes of Buildkite and BuildButler on
//! 127.0.0.1, runs one `--once` cycle of kitesync against them, and prints what BuildButler
//! received. Then it runs a second, idle cycle to show it costs one request.
//!
//! Run it with `cargo run --example demo`.

use kitesync::config::Config;
use kitesync_fakes::{data, FakeBuildkite, FakeButler};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let buildkite = FakeBuildkite::start("acme", "demo-token").await;
    let butler = FakeButler::start("demo-key").await;
    let now = chrono::Utc::now();
    buildkite.set_builds(data::finished_builds(
        "acme",
        1,
        250,
        now,
        chrono::Duration::seconds(9),
    ));
    buildkite.add_builds([data::build("acme", 251, "web", "running", now, None)]);

    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("kitesync.toml");
    std::fs::write(
        &config_path,
        format!(
            "state_path = \"{}\"\n\n[buildkite]\norganization = \"acme\"\napi_url = \"{}\"\ntoken = \"demo-token\"\nrequests_per_minute = 600\n\n[buildbutler]\nurl = \"{}\"\napi_key = \"demo-key\"\n",
            dir.path().join("state.db").display(),
            buildkite.url,
            butler.url
        ),
    )?;
    println!(
        "Fake Buildkite at {} holds 250 finished builds, 1 running, and no agents.",
        buildkite.url
    );
    println!("Fake BuildButler at {}.\n", butler.url);
    let config = Config::load(&config_path)?;

    let app = kitesync::app::App::new(config.clone())?;
    let first = kitesync::cli::oneshot::run_once(&app, std::time::Duration::ZERO).await?;
    println!(
        "First --once: {} Buildkite requests, {} builds delivered, outbox {} pending / {} dead.",
        first.requests,
        first.delivery.as_ref().map_or(0, |d| d.delivered),
        first.outbox.pending,
        first.outbox.dead
    );
    println!("\nWhat BuildButler received (the 5 newest builds, and their stages):");
    println!(
        "{:<10} {:>6}  {:<10} {:>9}  stages",
        "jobName", "build", "status", "duration"
    );
    let builds = butler.builds();
    let stages = butler.stages();
    let mut newest: Vec<_> = builds.values().collect();
    newest.sort_by_key(|b| std::cmp::Reverse(b["buildNumber"].as_u64()));
    for b in newest.iter().take(5) {
        let names: Vec<&str> = stages
            .get(b["id"].as_str().unwrap_or_default())
            .and_then(|s| s["stages"].as_array())
            .map(|s| s.iter().filter_map(|st| st["stageName"].as_str()).collect())
            .unwrap_or_default();
        println!(
            "{:<10} {:>6}  {:<10} {:>8}s  {}",
            b["jobName"].as_str().unwrap_or("?"),
            b["buildNumber"].as_u64().unwrap_or(0),
            b["status"].as_str().unwrap_or("?"),
            b["duration"].as_i64().unwrap_or(0) / 1000,
            names.join(" | ")
        );
    }
    println!("\nOne build as posted to /api/v1/ingest/builds:");
    if let Some(b) = newest.first() {
        println!("{}", serde_json::to_string_pretty(b)?);
    }

    let app = kitesync::app::App::new(config)?;
    let second = kitesync::cli::oneshot::run_once(&app, std::time::Duration::ZERO).await?;
    println!(
        "\nSecond --once (nothing new): {} Buildkite request, {} delivered; BuildButler holds {} builds from {} posts.",
        second.requests,
        second.delivery.as_ref().map_or(0, |d| d.delivered),
        butler.builds().len(),
        butler.build_posts()
    );
    Ok(())
}
