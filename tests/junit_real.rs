//! The corpus of real reports (`tests/data/junit/real/`, made by real runners; SOURCES.md says
//! how): each file's cases, failures, errors and skips are counted by its elements with
//! another XML reader (roxmltree), independently of kitesync's parser and of the suites'
//! count attributes (which real runners get wrong), and compared with what the parser
//! produces and with the runner's own console summary (manifest.toml). Then the whole corpus
//! goes through the real binary as the artifacts of real builds.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use kitesync::item::TestStatus;
use kitesync::sync::enrich::test_results::stem;
use kitesync::sync::junit;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit/real")
}

/// What manifest.toml says of one file.
#[derive(Debug)]
struct Expected {
    path: String,
    /// None: not JUnit, or refused (cut off).
    counts: Option<Counts>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    cases: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

fn manifest() -> Vec<Expected> {
    let text = std::fs::read_to_string(dir().join("manifest.toml")).expect("manifest.toml");
    let doc: toml_edit::DocumentMut = text.parse().expect("manifest.toml is TOML");
    let files = doc["file"].as_array_of_tables().expect("[[file]] tables");
    files
        .iter()
        .map(|t| {
            let int = |key: &str| t.get(key).and_then(|v| v.as_integer());
            let path = t["path"].as_str().expect("path").to_string();
            let counts = int("cases").map(|cases| Counts {
                cases: cases as usize,
                failures: int("failures").unwrap_or(0) as usize,
                errors: int("errors").unwrap_or(0) as usize,
                skipped: int("skipped").unwrap_or(0) as usize,
            });
            assert!(
                t.get("console").is_some() || t.get("from").is_some(),
                "{path}: the manifest says where its counts come from"
            );
            Expected { path, counts }
        })
        .collect()
}

/// The document as text, decoded here (not by the parser): a UTF-8 byte order mark dropped,
/// UTF-16 by its byte order mark or its first bytes, leading blank lines dropped.
fn decode(bytes: &[u8]) -> String {
    let utf16 = |b: &[u8], le: bool| {
        let units: Vec<u16> = b
            .chunks_exact(2)
            .map(|p| {
                if le {
                    u16::from_le_bytes([p[0], p[1]])
                } else {
                    u16::from_be_bytes([p[0], p[1]])
                }
            })
            .collect();
        String::from_utf16(&units).expect("valid UTF-16")
    };
    let text = match bytes {
        [0xEF, 0xBB, 0xBF, rest @ ..] => String::from_utf8(rest.to_vec()).expect("UTF-8"),
        [0xFF, 0xFE, rest @ ..] => utf16(rest, true),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, false),
        [_, 0, ..] => utf16(bytes, true),
        [0, _, ..] => utf16(bytes, false),
        _ => String::from_utf8(bytes.to_vec()).expect("UTF-8"),
    };
    text.trim_start().to_string()
}

/// The document as roxmltree reads it, when it is well-formed and its root is JUnit's.
fn junit_document(text: &str) -> Option<roxmltree::Document<'_>> {
    // An external entity is never loaded: it reads as empty text.
    fn never_load<'a>(_: Option<&str>, _: &str) -> Result<Option<&'a str>, String> {
        Ok(Some(""))
    }
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        entity_resolver: Some(&never_load),
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, options).ok()?;
    let root = doc.root_element().tag_name().name();
    matches!(root, "testsuites" | "testsuite" | "testcase").then_some(doc)
}

/// Counts by elements with roxmltree; None when it is not JUnit or not well-formed.
fn count_independently(bytes: &[u8]) -> Option<Counts> {
    let text = decode(bytes);
    let doc = junit_document(&text)?;
    let mut counts = Counts::default();
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        counts.cases += 1;
        let children: Vec<&str> = case
            .children()
            .filter(|c| c.is_element())
            .map(|c| c.tag_name().name())
            .collect();
        let first = |names: &[&str]| children.iter().find(|c| names.contains(c)).copied();
        let not_run = case
            .attribute("status")
            .is_some_and(|s| ["notrun", "skipped", "disabled"].contains(&s));
        match first(&["failure", "error"]).or_else(|| first(&["rerunFailure", "rerunError"])) {
            Some("failure" | "rerunFailure") => counts.failures += 1,
            Some(_) => counts.errors += 1,
            None if not_run || children.contains(&"skipped") => counts.skipped += 1,
            None => {}
        }
    }
    Some(counts)
}

/// What kitesync's parser made of the file, counted the same way.
fn count_parsed(path: &str, bytes: &[u8]) -> Result<Counts, junit::JunitError> {
    let suites = junit::parse(bytes, stem(path))?;
    let mut counts = Counts::default();
    for suite in &suites {
        assert!(
            !suite.name.trim().is_empty(),
            "{path}: a suite without a name"
        );
        for case in &suite.cases {
            assert!(
                !case.name.trim().is_empty() && !case.class_name.trim().is_empty(),
                "{path}: a case without a name or class name in {}",
                suite.name
            );
            counts.cases += 1;
            match case.status {
                TestStatus::Failed => counts.failures += 1,
                TestStatus::Error => counts.errors += 1,
                TestStatus::Skipped => counts.skipped += 1,
                TestStatus::Passed => {}
            }
        }
    }
    Ok(counts)
}

#[test]
fn every_real_report_is_counted_alike_by_elements_by_the_parser_and_by_its_runner() {
    let manifest = manifest();
    let on_disk: Vec<String> = std::fs::read_dir(dir())
        .expect("corpus")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    for name in &on_disk {
        assert!(
            manifest.iter().any(|e| &e.path == name),
            "{name} is not in manifest.toml"
        );
    }
    let junit_files = manifest.iter().filter(|e| e.counts.is_some()).count();
    assert!(junit_files >= 25, "{junit_files} JUnit files in the corpus");
    for expected in &manifest {
        let bytes = std::fs::read(dir().join(&expected.path)).expect("corpus file");
        let independent = count_independently(&bytes);
        let parsed = count_parsed(&expected.path, &bytes);
        match expected.counts {
            Some(counts) => {
                assert_eq!(independent, Some(counts), "{}: by elements", expected.path);
                assert_eq!(
                    parsed.as_ref().ok(),
                    Some(&counts),
                    "{}: by kitesync's parser ({:?})",
                    expected.path,
                    parsed.as_ref().err()
                );
            }
            None => {
                assert_eq!(independent, None, "{}: JUnit after all?", expected.path);
                assert!(parsed.is_err(), "{}: read as JUnit", expected.path);
            }
        }
    }
}

#[test]
fn flaky_reruns_passed_and_failed_reruns_failed() {
    let bytes = std::fs::read(dir().join("surefire-rerun-flaky.xml")).expect("corpus file");
    let suites = junit::parse(&bytes, "surefire-rerun-flaky").expect("parses");
    let status = |name: &str| {
        suites[0]
            .cases
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.status)
    };
    assert_eq!(status("flakyThenPasses"), Some(TestStatus::Passed));
    assert_eq!(status("flakyErrorThenPasses"), Some(TestStatus::Passed));
    assert_eq!(status("computesTotal"), Some(TestStatus::Failed));
    assert_eq!(status("throwsUnexpectedly"), Some(TestStatus::Error));
    let bytes = std::fs::read(dir().join("nextest.xml")).expect("corpus file");
    let suites = junit::parse(&bytes, "nextest").expect("parses");
    let flaky = suites[0]
        .cases
        .iter()
        .find(|c| c.name == "tests::flaky_then_passes")
        .expect("the flaky test");
    assert_eq!(flaky.status, TestStatus::Passed);
    assert_eq!(flaky.trace, None, "a passed case carries no trace");
}

#[test]
fn a_doctype_and_a_split_cdata_end_inside_a_failure_are_text() {
    let bytes = std::fs::read(dir().join("xmlrunner-unittest.xml")).expect("corpus file");
    let suites = junit::parse(&bytes, "x").expect("parses");
    let case = suites
        .iter()
        .flat_map(|s| &s.cases)
        .find(|c| c.name == "test_gets_json")
        .expect("the case");
    assert_eq!(case.status, TestStatus::Failed);
    assert!(
        case.trace
            .as_deref()
            .is_some_and(|t| t.contains("<!DOCTYPE html><html><body>502 ]]> Bad Gateway")),
        "{case:?}"
    );
}

#[test]
fn an_external_entity_is_never_resolved() {
    let bytes =
        std::fs::read(dir().join("derived-doctype-external-entity.xml")).expect("corpus file");
    let suites = junit::parse(&bytes, "x").expect("parses");
    let failed = suites[0]
        .cases
        .iter()
        .find(|c| c.name == "test_totals_with_tax")
        .expect("the case");
    assert!(
        failed
            .trace
            .as_deref()
            .is_some_and(|t| t.contains("tax is 20 % &xxe;")),
        "{failed:?}"
    );
}

/// The whole corpus as the artifacts of real builds, one file per build: every build is
/// delivered, every JUnit file's suites reach BuildButler (which refuses empty names), and
/// each file that is not JUnit or is cut off is skipped with a warning naming its build and
/// path, without a dead letter.
#[tokio::test(flavor = "multi_thread")]
async fn the_corpus_through_the_real_binary() {
    let manifest = manifest();
    let mut h = Harness::start().await;
    h.set_env("KITESYNC_TESTS__JUNIT_ARTIFACT_GLOBS", "[reports/*.xml]");
    h.bk.set_budgets(1000, 1000, std::time::Duration::from_secs(60));
    h.bk.set_builds(recent_builds(manifest.len() as u64));
    let mut suites_expected = 0;
    let cases_expected: usize = manifest
        .iter()
        .filter_map(|e| e.counts)
        .map(|c| c.cases)
        .sum();
    for (i, expected) in manifest.iter().enumerate() {
        let bytes = std::fs::read(dir().join(&expected.path)).expect("corpus file");
        if expected.counts.is_some() {
            suites_expected += junit::parse(&bytes, "x").expect("parses").len();
        }
        h.bk.set_artifacts(
            i as u64 + 1,
            vec![(format!("reports/{}", expected.path), bytes)],
        );
    }
    let run = h.once_ok().await;
    assert!(run.stdout.contains("0 dead"), "{}", run.output());
    assert_eq!(h.bb.builds().len(), manifest.len(), "every build delivered");
    let suites = h.bb.suites();
    assert_eq!(suites.len(), suites_expected, "every suite delivered");
    let cases: usize = suites
        .iter()
        .map(|s| s["testCases"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(cases, cases_expected, "every case delivered");
    let log = run.output();
    for (i, expected) in manifest.iter().enumerate() {
        if expected.counts.is_none() {
            let warned = log.lines().any(|l| {
                l.contains("JUnit file skipped")
                    && l.contains(&format!("path=\"reports/{}\"", expected.path))
                    && l.contains(&format!("#{}\"", i + 1))
            });
            assert!(warned, "no warning for {}:\n{log}", expected.path);
        }
    }
}

/// Cases, failed (a `<failure>` or an `<error>`) and skipped (neither, and `<skipped>` or
/// googletest's `status="notrun"`), as BuildButler should receive them from one file.
type Want = (usize, usize, usize);

/// A file's `<testcase>` elements as `../shared/realdata`'s expectations count them: cases,
/// with `<failure>`, with `<error>`, with `<skipped>` (or `status="notrun"`), each counted
/// regardless of the others; and what BuildButler should receive of them. `None` when it is
/// not JUnit ([`junit_document`]).
fn elements(bytes: &[u8]) -> Option<([usize; 4], Want)> {
    let text = decode(bytes);
    let doc = junit_document(&text)?;
    let (mut counts, mut want) = ([0; 4], (0, 0, 0));
    for case in doc.descendants().filter(|n| n.has_tag_name("testcase")) {
        let has = |name: &str| case.children().any(|c| c.has_tag_name(name));
        let skipped = has("skipped") || case.attribute("status") == Some("notrun");
        counts[0] += 1;
        counts[1] += usize::from(has("failure"));
        counts[2] += usize::from(has("error"));
        counts[3] += usize::from(skipped);
        want.0 += 1;
        if has("failure") || has("error") {
            want.1 += 1;
        } else if skipped {
            want.2 += 1;
        }
    }
    Some((counts, want))
}

/// What kitesync's parser made of a file, as [`Want`]; a file it refuses is `(0, 0, 0)`.
fn parsed_want(name: &str, bytes: &[u8]) -> Want {
    let Ok(suites) = junit::parse(bytes, stem(name)) else {
        return (0, 0, 0);
    };
    let cases = suites.iter().flat_map(|s| &s.cases);
    cases.fold((0, 0, 0), |(n, f, s), c| match c.status {
        TestStatus::Failed | TestStatus::Error => (n + 1, f + 1, s),
        TestStatus::Skipped => (n + 1, f, s + 1),
        TestStatus::Passed => (n + 1, f, s),
    })
}

/// A realdata JUnit corpus (`realdata/<sub>`): its files by name, and `expected.json` (per
/// file, its element counts and whether a strict XML parser reads it as JUnit), which must
/// cover every file and hold at least `at_least`. `None` when it is absent (see [`realdata`]).
type Corpus = (
    PathBuf,
    BTreeMap<String, Vec<u8>>,
    BTreeMap<String, serde_json::Value>,
);

fn corpus(sub: &str, at_least: usize) -> Option<Corpus> {
    let dir = realdata(sub)?;
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    let expected: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&text).expect("expected.json is JSON");
    let files: BTreeMap<String, Vec<u8>> = std::fs::read_dir(dir.join("files"))
        .expect("files/")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).expect("readable"))
        })
        .collect();
    assert!(
        files.keys().eq(expected.keys()),
        "{sub}: every file has its expectation"
    );
    assert!(files.len() >= at_least, "{sub}: {} files", files.len());
    Some((dir, files, expected))
}

/// The element counts `expected.json` lists for a file, as [`elements`] returns them.
fn listed(e: &serde_json::Value) -> [usize; 4] {
    ["cases", "failed", "errors", "skipped"].map(|k| e[k].as_u64().expect("a count") as usize)
}

/// Files of `realdata/junit` where kitesync's parser departs from `expected.json`, each for
/// the reason its SOURCES.md row gives: a strict parser (ElementTree) refuses them, and a
/// lenient reader recovers them exactly (their element counts).
const RECOVERED: &[(&str, &str)] = &[
    (
        "codecov__leading-blank-line.xml",
        "a blank line before the XML declaration",
    ),
    (
        "xunitviewer__utf-16le.xml",
        "UTF-16LE with a byte order mark, declared as \"UTF-16 LE\"",
    ),
    (
        "violations__root-is-testcase.xml",
        "a lone <testcase> root, which kitesync reads",
    ),
];

/// `realdata/junit` (46 files from public repositories): every file through the parser,
/// compared with its expected counts (`expected.json`: element counts; a file a strict
/// parser refuses is not JUnit, 0/0/0) — anchored by an element count with roxmltree.
#[test]
fn regression_every_public_report_of_realdata_junit_is_read_as_expected() {
    let Some((_, files, expected)) = corpus("junit", 46) else {
        return;
    };
    let mut wrong = Vec::new();
    for (name, bytes) in &files {
        let e = &expected[name];
        let parsed = parsed_want(name, bytes);
        let want = match (e["junit"].as_bool(), elements(bytes)) {
            (Some(true), Some((counts, want))) => {
                assert_eq!(counts, listed(e), "{name}: element counts");
                want
            }
            (Some(false), recovered) => match RECOVERED.iter().find(|(f, _)| f == name) {
                Some((_, why)) => {
                    let want = recovered.expect("recoverable").1;
                    assert_ne!(want, (0, 0, 0), "{name} ({why}): nothing to recover");
                    want
                }
                None => (0, 0, 0),
            },
            (junit, counts) => panic!("{name}: junit {junit:?}, elements {counts:?}"),
        };
        if parsed != want {
            wrong.push(format!("{name}: parsed {parsed:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The `want` column of `realdata/junit2/SOURCES.md`, by file: every reading accepted
/// (cases/failed/skipped).
fn wants(dir: &Path) -> BTreeMap<String, Vec<Want>> {
    let text = std::fs::read_to_string(dir.join("SOURCES.md")).expect("SOURCES.md");
    let mut wants = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let columns: Vec<&str> = line.split(" | ").collect();
        let file = columns[0].trim_start_matches("| ").trim_matches('`');
        let last = columns.last().expect("columns").trim_end_matches(" |");
        let readings = last
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
            .filter_map(|t| {
                let n: Vec<usize> = t
                    .split('/')
                    .map(|p| p.parse().ok())
                    .collect::<Option<_>>()?;
                (n.len() == 3).then(|| (n[0], n[1], n[2]))
            })
            .collect();
        wants.insert(file.to_string(), readings);
    }
    wants
}

/// `realdata/junit2` (101 files from 7 public repositories, each with its third party's own
/// expectation): every file through the parser, against what BuildButler should receive
/// (SOURCES.md's `want`, with both readings where it accepts two).
#[test]
fn regression_every_public_report_of_realdata_junit2_is_read_as_its_sources_want() {
    let Some((dir, files, expected)) = corpus("junit2", 101) else {
        return;
    };
    let wants = wants(&dir);
    assert!(files.keys().eq(wants.keys()), "every file has its want");
    let mut wrong = Vec::new();
    for (name, bytes) in &files {
        let accepted = &wants[name];
        assert!(!accepted.is_empty(), "{name}: a want");
        // The want agrees with the file's element counts (expected.json) where it is JUnit.
        let e = &expected[name];
        if let (Some(true), Some((counts, want))) = (e["junit"].as_bool(), elements(bytes)) {
            assert_eq!(counts, listed(e), "{name}: element counts");
            assert!(
                accepted.contains(&want),
                "{name}: {want:?} not in {accepted:?}"
            );
        }
        let parsed = parsed_want(name, bytes);
        if !accepted.contains(&parsed) {
            wrong.push(format!(
                "{name}: parsed {parsed:?}, want one of {accepted:?}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
