//! Every configuration mistake gets one clear line naming the file, the key and (where it is
//! in the file) the line, and exit code 2; secrets are never echoed.

mod common;

use std::process::Command;

struct Outcome {
    code: i32,
    stderr: String,
}

const GOOD: &str = r#"[buildkite]
organization = "acme"
token = "bkua_SECRET_TOKEN_d6a1f0"

[buildbutler]
url = "http://127.0.0.1:9"
api_key = "bb_live_SECRET_KEY_93c2e7"
"#;

fn run_with(text: &str, env: &[(&str, &str)]) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kitesync.toml");
    std::fs::write(&path, text).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kitesync"));
    cmd.arg("--config")
        .arg(&path)
        .arg("--once")
        .current_dir(dir.path());
    for (k, _) in std::env::vars() {
        if k.starts_with("KITESYNC_") {
            cmd.env_remove(k);
        }
    }
    let out = cmd.envs(env.iter().copied()).output().expect("ran");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn run(text: &str) -> Outcome {
    run_with(text, &[])
}

/// Exit 2 with one line that contains every one of `needles`, and no secret.
fn assert_config_error(o: &Outcome, needles: &[&str]) {
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert_eq!(o.stderr.trim().lines().count(), 1, "one line: {}", o.stderr);
    for n in needles {
        assert!(o.stderr.contains(n), "{n:?} missing from: {}", o.stderr);
    }
    assert!(
        !o.stderr.contains("SECRET"),
        "a secret leaked: {}",
        o.stderr
    );
}

#[test]
fn toml_syntax_error_names_file_and_line() {
    let text = GOOD.replace("organization = \"acme\"", "organization = acme");
    assert_config_error(&run(&text), &["kitesync.toml line 2", "TOML syntax error"]);
}

#[test]
fn missing_token() {
    let text = GOOD.replace("token = \"bkua_SECRET_TOKEN_d6a1f0\"\n", "");
    assert_config_error(&run(&text), &["[buildkite] token is missing", "token_file"]);
}

#[test]
fn empty_api_key() {
    let text = GOOD.replace("bb_live_SECRET_KEY_93c2e7", "  ");
    assert_config_error(&run(&text), &["line 7", "[buildbutler] api_key is empty"]);
}

#[test]
fn unreadable_token_file() {
    let text = GOOD.replace(
        "token = \"bkua_SECRET_TOKEN_d6a1f0\"",
        "token_file = \"/tmp/kitesync-no-such-token\"",
    );
    assert_config_error(
        &run(&text),
        &[
            "line 3",
            "token_file",
            "/tmp/kitesync-no-such-token",
            "no such file",
        ],
    );
}

#[test]
fn a_token_pasted_into_token_file_is_not_echoed() {
    for value in [
        "\"bkua_SECRET_TOKEN_d6a1f0\"",
        "\"/bkua_SECRET_TOKEN_d6a1f0\"",
        "93000000000000",
    ] {
        let text = GOOD.replace(
            "token = \"bkua_SECRET_TOKEN_d6a1f0\"",
            &format!("token_file = {value}"),
        );
        let o = run(&text);
        assert_config_error(&o, &["line 3", "[buildkite] token_file"]);
        assert!(!o.stderr.contains("93000000000000"), "{}", o.stderr);
    }
    // From the environment too.
    let text = GOOD.replace("token = \"bkua_SECRET_TOKEN_d6a1f0\"\n", "");
    let o = run_with(
        &text,
        &[("KITESYNC_BUILDKITE__TOKEN_FILE", "bkua_SECRET_FROM_ENV")],
    );
    assert_config_error(&o, &["[buildkite] token_file"]);
}

#[test]
fn the_buildkite_token_is_not_sent_to_buildbutler_over_plain_http() {
    let text = GOOD.replace("http://127.0.0.1:9", "http://buildbutler.example:3000")
        + "mode = \"webhook\"\nwebhook_send_buildkite_token = true\n";
    assert_config_error(
        &run(&text),
        &[
            "line 9",
            "[buildbutler] webhook_send_buildkite_token",
            "buildbutler.example",
            "https://",
        ],
    );
}

#[test]
fn unknown_mode() {
    let text = format!("{GOOD}mode = \"carrier-pigeon\"\n");
    assert_config_error(
        &run(&text),
        &["line 8", "[buildbutler] mode", "carrier-pigeon", "ingest"],
    );
}

#[test]
fn invalid_cron() {
    let text = format!("{GOOD}\n[schedule]\nbuilds = \"*/5 * * * *\"\n");
    assert_config_error(&run(&text), &["line 10", "[schedule] builds", "six fields"]);
}

#[test]
fn invalid_url() {
    let text = GOOD.replace("http://127.0.0.1:9", "127.0.0.1:9");
    assert_config_error(&run(&text), &["line 6", "[buildbutler] url"]);
}

#[test]
fn bad_value_from_the_environment_names_the_variable() {
    let o = run_with(GOOD, &[("KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE", "fast")]);
    assert_config_error(&o, &["KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE"]);
}

#[test]
fn missing_config_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_kitesync"))
        .args(["--config", "/nonexistent/kitesync.toml", "--once"])
        .output()
        .expect("ran");
    let o = Outcome {
        code: out.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_config_error(&o, &["/nonexistent/kitesync.toml", "no such file"]);
}

#[test]
fn environment_overrides_the_file_and_can_supply_the_secret() {
    let text = GOOD.replace("token = \"bkua_SECRET_TOKEN_d6a1f0\"\n", "");
    // Supplied by the environment, the token is no longer missing, and the API URL from the
    // environment wins: the run goes to 127.0.0.1:9 (where nothing listens) and says so.
    let o = run_with(
        &text,
        &[
            ("KITESYNC_BUILDKITE__TOKEN", "bkua_SECRET_FROM_ENV"),
            ("KITESYNC_BUILDKITE__API_URL", "http://127.0.0.1:9"),
            ("KITESYNC_BUILDKITE__TIMEOUT_SECONDS", "1"),
            ("KITESYNC_UNRELATED_SETTING", "ignored"),
        ],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("Buildkite is unavailable at 127.0.0.1:9/v2/organizations/acme/builds"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("SECRET"), "{}", o.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_setting_without_effect_is_warned_about_once_at_start_and_the_example_is_quiet() {
    let mut h = common::Harness::start().await;
    h.bk.set_builds(common::recent_builds(1));
    h.set_env("KITESYNC_METRICS__LISTEN", "0.0.0.0:9187");
    let run = h.once_ok().await;
    let warned: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("has no effect"))
        .collect();
    assert_eq!(warned.len(), 1, "{}", run.stderr);
    assert!(
        warned[0].contains("WARN")
            && warned[0].contains("[metrics] listen")
            && warned[0].contains("set [metrics] enabled = true"),
        "{}",
        warned[0]
    );

    // A copy of the example config (every key at its default) warns about nothing.
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .expect("example");
    let example = example
        .replace(
            "organization = \"acme\"",
            &format!("organization = \"{}\"", common::ORG),
        )
        .replace(
            "# token = \"bkua_...\"",
            &format!("token = \"{}\"", common::TOKEN),
        )
        .replace(
            "# api_key = \"bb_live_...\"",
            &format!("api_key = \"{}\"", common::API_KEY),
        )
        .replace(
            "url = \"http://buildbutler:3000\"",
            &format!("url = \"{}\"", h.bb.url),
        )
        .replace(
            "api_url = \"https://api.buildkite.com\"",
            &format!("api_url = \"{}\"", h.bk.url),
        );
    std::fs::write(&h.config, example).expect("config");
    h.env.retain(|(k, _)| k != "KITESYNC_METRICS__LISTEN");
    h.set_env("KITESYNC_STATE_PATH", &h.state_path().display().to_string());
    let run = h.run(&["--once"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(!run.stderr.contains("has no effect"), "{}", run.stderr);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);
}
