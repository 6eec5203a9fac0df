//! Measures what a backfill costs in Buildkite requests: 12,000 finished builds spread over
//! two years, against the fake API with a depth limit of 10 pages (1,000 builds a listing).
//! Prints the requests made against the target of 1.05 x ceil(N/100) plus one per window
//! (the walk is one window, narrowed page by page).
//!
//! Run it with `cargo run --release --example backfill_cost [-- BUILDS [DEPTH]]`.

use kitesync::config::Config;
use kitesync::sync::backfill::{Observer, Progress};
use kitesync_fakes::{data, FakeBuildkite, FakeButler};

struct Quiet;

impl Observer for Quiet {
    fn page(&mut self, _: &Progress<'_>) {}
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let builds: u64 = args.next().map_or(Ok(12_000), |a| a.parse())?;
    let depth: u32 = args.next().map_or(Ok(10), |a| a.parse())?;
    let buildkite = FakeBuildkite::start("acme", "token").await;
    let butler = FakeButler::start("key").await;
    let now = chrono::Utc::now();
    let spacing = chrono::Duration::days(730) / i32::try_from(builds)?;
    buildkite.set_builds(data::finished_builds(
        "acme",
        1,
        builds,
        now - chrono::Duration::hours(1),
        spacing,
    ));
    buildkite.set_max_page(depth);
    buildkite.set_budgets(100_000, 100_000, std::time::Duration::from_secs(60));

    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kitesync.toml");
    std::fs::write(
        &path,
        format!(
            "state_path = \"{}\"\n[buildkite]\norganization = \"acme\"\napi_url = \"{}\"\ntoken = \"token\"\nrequests_per_minute = 10000\n[buildbutler]\nurl = \"{}\"\napi_key = \"key\"\nconcurrency = 16\n",
            dir.path().join("state.db").display(),
            buildkite.url,
            butler.url
        ),
    )?;
    let config = Config::load(&path)?;
    let since = now - chrono::Duration::days(731);
    let started = std::time::Instant::now();
    let outcome = kitesync::cli::oneshot::run_backfill(
        kitesync::app::App::new(config)?,
        since,
        Some(now),
        true,
        &mut Quiet,
        std::future::pending(),
    )
    .await?;
    let walk = outcome.walk.ok_or("interrupted")??;
    let minimum = builds.div_ceil(100);
    // The range is one window, narrowed page by page: the target allows one extra request.
    let target = (1.05 * minimum as f64).floor() as u64 + 1;
    println!("builds in range           {builds}");
    println!("depth limit (pages)       {depth}");
    println!("delivered to BuildButler  {}", butler.builds().len());
    println!("pages                     {}", walk.checkpoint.pages);
    println!("Buildkite requests        {}", outcome.requests);
    println!("minimum ceil(N/100)       {minimum}");
    println!(
        "target 1.05 x min + 1     {target}  -> {}",
        if outcome.requests <= target {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "429 answers               {}",
        buildkite
            .requests()
            .iter()
            .filter(|r| r.status == 429)
            .count()
    );
    println!(
        "wall time                 {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
