//! Every configuration mistake gets one clear line naming the file, the key and (where it is
//! in the file) the line, and exit code 2; secrets are never echoed.

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
