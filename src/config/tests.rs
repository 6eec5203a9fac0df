//! The config's unit tests: loading, defaults, errors and the ignored-settings lint.

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("kitesync.toml");
    std::fs::write(&path, text).expect("write");
    Config::load(&path)
}

const GOOD: &str = r#"
[buildkite]
organization = "acme"
token = "bk-token"

[buildbutler]
url = "http://127.0.0.1:3000"
api_key = "bb-key"
"#;

#[test]
fn defaults_fill_everything_else() {
    let c = load(GOOD).expect("valid");
    assert_eq!(c.buildkite.api_url.as_str(), "https://api.buildkite.com/");
    assert_eq!(c.buildkite.requests_per_minute, 30);
    assert_eq!(c.buildbutler.ingest_prefix, "/api/v1/ingest");
    assert_eq!(c.buildbutler.mode, Mode::Ingest);
    assert_eq!(c.schedule.builds.as_str(), "*/30 * * * * *");
    assert_eq!(c.buildkite.token().expose(), "bk-token");
}

#[test]
fn example_config_loads_and_shows_the_defaults() {
    let example = include_str!("../../config.example.toml")
        .replace("# token = \"bkua_...\"", "token = \"bk-token\"")
        .replace("# api_key = \"bb_live_...\"", "api_key = \"bb-key\"")
        .replace(
            "url = \"http://buildbutler:3000\"",
            "url = \"http://127.0.0.1:3000\"",
        );
    let mut shown = load(&example).expect("the example is valid");
    let defaults = load(GOOD).expect("valid");
    // Relative to each config file's (temporary) directory.
    assert!(shown.state_path.ends_with("kitesync.db"));
    shown.state_path = defaults.state_path.clone();
    // Every value the example shows is the default (only the required keys differ).
    assert_eq!(format!("{:?}", shown), format!("{:?}", defaults));
    // So a copy of it warns about nothing.
    assert_eq!(shown.ignored(), Vec::new());
}

#[test]
fn settings_without_effect_are_named_with_what_to_change() {
    let keys = |c: &Config| c.ignored().iter().map(|i| i.key).collect::<Vec<_>>();
    assert!(keys(&load(GOOD).expect("valid")).is_empty());
    let text =
        format!("{GOOD}\n[metrics]\nlisten = \"0.0.0.0:9187\"\n\n[logs]\nmax_bytes = 1000\n");
    let c = load(&text).expect("valid");
    assert_eq!(keys(&c), ["[metrics] listen", "[logs] max_bytes"]);
    let said = c.ignored()[0].to_string();
    assert!(said.contains("set [metrics] enabled = true"), "{said}");
    // Enrichment tuned while it fetches nothing.
    let tuned = format!("{GOOD}\n[enrich]\nmax_files_per_build = 10\nmax_share_percent = 20\n");
    assert_eq!(
        keys(&load(&tuned).expect("valid")),
        ["[enrich] max_share_percent", "[enrich] max_files_per_build"]
    );
    let fetching = format!("{tuned}\n[tests]\njunit_artifact_globs = [\"*.xml\"]\n");
    assert!(keys(&load(&fetching).expect("valid")).is_empty());
    // Turned on, the same values are used: nothing to say.
    let on = text
        .replace("[metrics]\n", "[metrics]\nenabled = true\n")
        .replace("[logs]\n", "[logs]\nenabled = true\n");
    assert!(keys(&load(&on).expect("valid")).is_empty());
    // Webhook mode carries builds only.
    let webhook = GOOD.replace(
        "[buildbutler]\n",
        "[buildbutler]\nmode = \"webhook\"\nstatus_case = \"lower\"\n",
    );
    let webhook = format!("{webhook}\n[tests]\njunit_artifact_globs = [\"*.xml\"]\n");
    assert_eq!(
        keys(&load(&webhook).expect("valid")),
        ["[tests] junit_artifact_globs", "[buildbutler] status_case"]
    );
}

#[test]
fn regression_junit_globs_are_compiled_at_load() {
    let c = load(&format!(
        "{GOOD}\n[tests]\njunit_artifact_globs = [\"**/junit-*.xml\"]\n"
    ))
    .expect("valid");
    assert!(c.junit_globs().is_match("reports/junit-unit.xml"));
    assert!(!c.junit_globs().is_match("reports/coverage.xml"));
}

#[test]
fn numeric_secrets_are_secrets_too() {
    let text = GOOD.replace("token = \"bk-token\"", "token = 987654321");
    let c = load(&text).expect("a numeric token is still a token");
    assert_eq!(c.buildkite.token().expose(), "987654321");
}

#[test]
fn out_of_range_values_are_refused_not_overflowed() {
    for (key, value) in [
        ("overlap_seconds", "10000000000000"),
        ("first_poll_lookback_minutes", "1000000000000"),
        ("overlap_seconds", "0"),
        ("reserve_percent", "95"),
    ] {
        let text = GOOD.replace(
            "organization = \"acme\"",
            &format!("organization = \"acme\"\n{key} = {value}"),
        );
        let m = load(&text).unwrap_err().to_string();
        assert!(
            m.contains(&format!("[buildkite] {key} = {value} is out of range")),
            "{m}"
        );
    }
    let text = GOOD.replace(
        "api_key = \"bb-key\"",
        "api_key = \"bb-key\"\nretry_window_seconds = 999999999999",
    );
    assert!(load(&text)
        .unwrap_err()
        .to_string()
        .contains("out of range"));
}

#[test]
fn enrich_keys_have_defaults_and_ranges() {
    let c = load(GOOD).expect("valid");
    assert_eq!(
        c.enrich.max_share_percent, 100,
        "no ceiling: every slot the polls leave"
    );
    assert_eq!(c.enrich.max_files_per_build, 50);
    assert_eq!(c.enrich.max_bytes_per_build, 64 << 20);
    assert!(c.enrich.backfill);
    for (key, value) in [("max_share_percent", "0"), ("max_share_percent", "101")] {
        let text = format!("{GOOD}\n[enrich]\n{key} = {value}\n");
        let m = load(&text).unwrap_err().to_string();
        assert!(
            m.contains(&format!(
                "line 11: [enrich] {key} = {value} is out of range"
            )),
            "{m}"
        );
    }
}

#[test]
fn api_url_with_v2_and_url_passwords() {
    let text = GOOD.replace(
        "organization = \"acme\"",
        "organization = \"acme\"\napi_url = \"https://api.buildkite.com/v2\"",
    );
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("without /v2"), "{m}");
    let text = GOOD.replace("http://127.0.0.1:3000", "ftp://user:hunter2@host");
    let m = load(&text).unwrap_err().to_string();
    assert!(!m.contains("hunter2"), "{m}");
}

#[test]
fn passwords_in_urls_never_reach_config_errors() {
    let text = GOOD.replace(
        "http://127.0.0.1:3000",
        "http://user:hunter2@bb.example:99999",
    );
    let m = load(&text).unwrap_err().to_string();
    assert!(!m.contains("hunter2"), "{m}");
    assert!(m.contains("[buildbutler] url"), "{m}");
}

#[test]
fn state_path_is_relative_to_the_config_file() {
    let c = load(GOOD).expect("valid");
    assert!(c.state_path.is_absolute(), "{:?}", c.state_path);
}

#[test]
fn secret_never_prints() {
    let c = load(GOOD).expect("valid");
    let shown = format!("{c:?}");
    assert!(!shown.contains("bk-token"), "{shown}");
    assert!(!shown.contains("bb-key"), "{shown}");
}

#[test]
fn syntax_error_names_file_and_line() {
    let e = load("[buildkite]\norganization = \"acme\"\ntoken = bk\n").unwrap_err();
    let m = e.to_string();
    assert!(m.contains("kitesync.toml line 3"), "{m}");
    assert!(m.contains("TOML syntax error"), "{m}");
}

#[test]
fn unknown_mode_names_key_and_line() {
    let text = GOOD.replace(
        "api_key = \"bb-key\"",
        "api_key = \"bb-key\"\nmode = \"push\"",
    );
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("line 9"), "{m}");
    assert!(m.contains("[buildbutler] mode"), "{m}");
    assert!(m.contains("push"), "{m}");
}

#[test]
fn unknown_key_is_an_error() {
    let text = GOOD.replace(
        "token = \"bk-token\"",
        "token = \"bk-token\"\ntokne = \"x\"",
    );
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("tokne"), "{m}");
}

#[test]
fn token_and_token_file_conflict() {
    let text = GOOD.replace(
        "token = \"bk-token\"",
        "token = \"bk-token\"\ntoken_file = \"/x\"",
    );
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("both set"), "{m}");
    assert!(!m.contains("bk-token"), "{m}");
}

#[test]
fn secret_from_file_is_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("token");
    std::fs::write(&secret, "from-file\n").expect("write");
    let text = GOOD.replace(
        "token = \"bk-token\"",
        &format!("token_file = \"{}\"", secret.display()),
    );
    let c = load(&text).expect("valid");
    assert_eq!(c.buildkite.token().expose(), "from-file");
}

#[test]
fn the_buildkite_token_goes_over_plain_http_only_to_loopback() {
    let with = |url: &str| {
        let text = GOOD.replace("http://127.0.0.1:3000", url).replace(
            "api_key = \"bb-key\"",
            "api_key = \"bb-key\"\nmode = \"webhook\"\nwebhook_send_buildkite_token = true",
        );
        load(&text)
    };
    for refused in [
        "http://buildbutler:3000",
        "http://10.0.0.7",
        "http://[fd00::1]:80",
    ] {
        let m = with(refused).unwrap_err().to_string();
        assert!(
            m.contains("line 10: [buildbutler] webhook_send_buildkite_token"),
            "{m}"
        );
        assert!(m.contains("clear text") && m.contains("https://"), "{m}");
        assert!(!m.contains("bk-token"), "{m}");
    }
    for allowed in [
        "https://buildbutler:3000",
        "http://127.0.0.1:3000",
        "http://127.1:3000",
        "http://localhost:3000",
        "http://[::1]:3000",
        "http://[::ffff:127.0.0.1]:3000",
    ] {
        assert!(with(allowed).is_ok(), "{allowed}");
    }
    // Without the opt-in, or in ingest mode (where it sends nothing), plain http is fine.
    let text = GOOD.replace("http://127.0.0.1:3000", "http://buildbutler:3000");
    assert!(load(&text).is_ok());
    let ingest = text.replace(
        "api_key = \"bb-key\"",
        "api_key = \"bb-key\"\nwebhook_send_buildkite_token = true",
    );
    assert!(load(&ingest).is_ok());
}

#[test]
fn a_secret_pasted_into_a_file_key_is_not_echoed() {
    for (key, value) in [
        (
            "token_file",
            "\"bkua_0123456789abcdef0123456789abcdef01234567\"",
        ),
        ("token_file", "\"ab/cd+ef/0123456789\""),
        ("token_file", "\"/bkua_0123456789\""),
        ("token_file", "9876543210987654"),
        ("token_file", "true"),
    ] {
        let text = GOOD.replace("token = \"bk-token\"", &format!("{key} = {value}"));
        let m = load(&text).unwrap_err().to_string();
        assert!(m.contains("line 4: [buildkite] token_file"), "{m}");
        let shown = value.trim_matches('"').trim_start_matches('/');
        assert!(!m.contains(shown), "{value} echoed: {m}");
    }
    let text = GOOD.replace("api_key = \"bb-key\"", "api_key_file = \"bb_live_SECRET\"");
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("[buildbutler] api_key_file"), "{m}");
    assert!(!m.contains("SECRET"), "{m}");
    // A path in a directory that exists is shown: it helps, and is no secret.
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("buildkite-token");
    let text = GOOD.replace(
        "token = \"bk-token\"",
        &format!("token_file = \"{}\"", missing.display()),
    );
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains(&missing.display().to_string()), "{m}");
    assert!(m.contains("no such file"), "{m}");
}

#[test]
fn bad_cron_and_url_are_explained() {
    let text = format!("{GOOD}\n[schedule]\nbuilds = \"every minute\"\n");
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("[schedule] builds"), "{m}");
    assert!(m.contains("line 11"), "{m}");
    let text = GOOD.replace("http://127.0.0.1:3000", "ftp://example");
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("[buildbutler] url"), "{m}");
    assert!(m.contains("line 7"), "{m}");
}

#[test]
fn wrong_type_names_key() {
    let text = GOOD.replace(
        "organization = \"acme\"",
        "organization = \"acme\"\nrequests_per_minute = \"lots\"",
    );
    let m = load(&text).unwrap_err().to_string();
    assert!(m.contains("[buildkite] requests_per_minute"), "{m}");
    assert!(m.contains("line 4"), "{m}");
}

#[test]
fn the_packaged_placeholders_are_refused_by_name() {
    let org = GOOD.replace("\"acme\"", "\"<your-organization-slug>\"");
    let m = load(&org).unwrap_err().to_string();
    assert!(m.contains("line 3: [buildkite] organization = \"<your-organization-slug>\" is the packaged placeholder"), "{m}");
    let url = GOOD.replace("http://127.0.0.1:3000", "https://your-buildbutler.invalid");
    let m = load(&url).unwrap_err().to_string();
    assert!(m.contains("line 7: [buildbutler] url = \"https://your-buildbutler.invalid/\" is the packaged placeholder"), "{m}");
    // Another host under .invalid is not the placeholder (a proxy may resolve it).
    let other = GOOD.replace("http://127.0.0.1:3000", "https://buildbutler.invalid");
    assert!(load(&other).is_ok());
}
