//! JUnit XML, as the tools people use write it: a bare `<testsuite>` or `<testsuites>`,
//! nested suites (each suite that holds test cases becomes one result), `<failure>` and
//! `<error>`, `<skipped>`, missing or odd `time`, non-ASCII names and huge `system-out`
//! (read past, never kept). Parsed as a stream with quick-xml; failure texts are capped.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::item::{Case, Suite, TestStatus as Status};

/// The most of a failure's message kept.
const MAX_MESSAGE: usize = 4 * 1024;
/// The most of a failure's text (stack trace) kept.
const MAX_TRACE: usize = 64 * 1024;

/// A suite being read.
struct Open {
    name: String,
    time: Option<i64>,
    cases: Vec<Case>,
}

/// Parses a JUnit XML document into its suites.
pub fn parse(xml: &[u8]) -> Result<Vec<Suite>, String> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut done: Vec<Suite> = Vec::new();
    let mut case: Option<Case> = None;
    // Set while inside <failure>/<error>/<skipped>: collects its text.
    let mut text: Option<String> = None;
    let mut seen_junit = false;
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| {
            format!(
                "not well-formed XML at byte {}: {e}",
                reader.error_position()
            )
        })?;
        match &event {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testsuites" => {
                seen_junit = true;
            }
            Event::Start(e) if e.name().as_ref() == b"testsuite" => {
                seen_junit = true;
                let name = attr(e, b"name").unwrap_or_default();
                let name = match (stack.last(), name.is_empty()) {
                    (Some(parent), true) => parent.name.clone(),
                    _ => name,
                };
                stack.push(Open {
                    name,
                    time: attr(e, b"time").map(|t| millis(&t)),
                    cases: Vec::new(),
                });
            }
            Event::End(e) if e.name().as_ref() == b"testsuite" => {
                if let Some(open) = stack.pop() {
                    close(open, &mut done);
                }
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                seen_junit = true;
                let self_closing = matches!(event, Event::Empty(_));
                let suite_name = stack.last().map(|s| s.name.clone()).unwrap_or_default();
                let new = Case {
                    class_name: attr(e, b"classname").unwrap_or(suite_name),
                    name: attr(e, b"name").unwrap_or_default(),
                    status: Status::Passed,
                    duration_ms: attr(e, b"time").map_or(0, |t| millis(&t)),
                    message: None,
                    trace: None,
                };
                if self_closing {
                    push_case(&mut stack, new);
                } else {
                    case = Some(new);
                }
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                if let Some(c) = case.take() {
                    push_case(&mut stack, c);
                }
            }
            Event::Start(e) | Event::Empty(e) if case.is_some() && is_outcome(e) => {
                let self_closing = matches!(event, Event::Empty(_));
                if let Some(c) = case.as_mut() {
                    let status = match e.name().as_ref() {
                        b"failure" => Status::Failed,
                        b"error" => Status::Error,
                        _ => Status::Skipped,
                    };
                    // A failure outranks a skip; the first failure or error wins.
                    if c.status == Status::Passed || c.status == Status::Skipped {
                        c.status = status;
                        c.message = attr(e, b"message").map(|m| capped(m, MAX_MESSAGE));
                    }
                }
                if !self_closing {
                    text = Some(String::new());
                }
            }
            Event::End(e) if text.is_some() && is_outcome_name(e.name().as_ref()) => {
                let body = text.take().unwrap_or_default();
                if let Some(c) = case.as_mut() {
                    let body = body.trim();
                    if !body.is_empty() && c.status != Status::Skipped && c.trace.is_none() {
                        c.trace = Some(capped(body.to_string(), MAX_TRACE));
                    }
                }
            }
            Event::Text(t) => {
                if let Some(s) = text.as_mut() {
                    if s.len() < MAX_TRACE {
                        s.push_str(&t.decode().unwrap_or_default());
                    }
                }
            }
            Event::CData(t) => {
                if let Some(s) = text.as_mut() {
                    if s.len() < MAX_TRACE {
                        s.push_str(&String::from_utf8_lossy(&t[..]));
                    }
                }
            }
            Event::GeneralRef(r) => {
                if let Some(s) = text.as_mut() {
                    let name = r.decode().unwrap_or_default();
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => s.push(c),
                        _ => s.push_str(
                            quick_xml::escape::resolve_predefined_entity(&name).unwrap_or(""),
                        ),
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    // Unclosed suites at the end of a cut-short file still count for what they hold.
    while let Some(open) = stack.pop() {
        close(open, &mut done);
    }
    if !seen_junit {
        return Err("no <testsuite>, <testsuites> or <testcase> element: not JUnit XML".into());
    }
    Ok(done)
}

fn close(open: Open, done: &mut Vec<Suite>) {
    if open.cases.is_empty() {
        return;
    }
    let sum = open
        .cases
        .iter()
        .fold(0i64, |total, c| total.saturating_add(c.duration_ms));
    done.push(Suite {
        name: open.name,
        duration_ms: open.time.unwrap_or(sum),
        cases: open.cases,
    });
}

/// A case outside any suite (a bare list of `<testcase>`s) gets a suite of its own.
fn push_case(stack: &mut Vec<Open>, case: Case) {
    if stack.is_empty() {
        stack.push(Open {
            name: "tests".to_string(),
            time: None,
            cases: Vec::new(),
        });
    }
    if let Some(top) = stack.last_mut() {
        top.cases.push(case);
    }
}

fn is_outcome(e: &BytesStart<'_>) -> bool {
    is_outcome_name(e.name().as_ref())
}

fn is_outcome_name(name: &[u8]) -> bool {
    matches!(name, b"failure" | b"error" | b"skipped")
}

fn attr(e: &BytesStart<'_>, key: &[u8]) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

/// Seconds as JUnit writes them ("1.5", "1,234.5", "") to milliseconds.
fn millis(seconds: &str) -> i64 {
    let cleaned: String = seconds.chars().filter(|c| *c != ',').collect();
    cleaned
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map_or(0, |s| (s * 1000.0).round().min(i64::MAX as f64) as i64)
}

fn capped(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(" [...]");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<Suite> {
        let path = format!("{}/tests/data/junit/{name}", env!("CARGO_MANIFEST_DIR"));
        let xml = std::fs::read(&path).expect("fixture");
        parse(&xml).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn statuses(suite: &Suite) -> Vec<Status> {
        suite.cases.iter().map(|c| c.status).collect()
    }

    #[test]
    fn junit4_surefire() {
        let suites = fixture("junit4-surefire.xml");
        assert_eq!(suites.len(), 1);
        let s = &suites[0];
        assert_eq!(s.name, "com.acme.CartTest");
        assert_eq!(s.duration_ms, 1234);
        use Status::*;
        assert_eq!(statuses(s), [Passed, Failed, Error, Skipped]);
        let failed = &s.cases[1];
        assert_eq!(failed.message.as_deref(), Some("expected:<1> but was:<2>"));
        assert!(failed
            .trace
            .as_deref()
            .is_some_and(|t| t.contains("CartTest.java:42")));
        let error = &s.cases[2];
        assert_eq!(error.duration_ms, 1_117_000, "thousands separators");
        assert!(error
            .trace
            .as_deref()
            .is_some_and(|t| t.starts_with("java.net.ConnectException")));
        assert_eq!(s.cases[3].message.as_deref(), Some("not ready"));
    }

    #[test]
    fn junit5_nested_suites_each_keep_their_cases() {
        let suites = fixture("junit5-nested.xml");
        let names: Vec<&str> = suites.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["CalculatorTests$Addition", "CalculatorTests"]);
        assert_eq!(suites[0].cases.len(), 2);
        assert_eq!(suites[1].cases.len(), 1);
        assert_eq!(suites[0].cases[1].status, Status::Failed);
    }

    #[test]
    fn pytest_with_unicode_names() {
        let suites = fixture("pytest.xml");
        let s = &suites[0];
        assert_eq!(s.cases.len(), 5);
        assert_eq!(s.cases[1].name, "test_créer_utilisateur[ünïcødé-✓]");
        use Status::*;
        assert_eq!(statuses(s), [Passed, Passed, Failed, Skipped, Error]);
        assert!(s.cases[2]
            .trace
            .as_deref()
            .is_some_and(|t| t.contains("> ") && t.contains("AssertionError")));
        assert_eq!(
            s.cases[4].message.as_deref(),
            Some("failed on setup with \"OperationalError: no such table\"")
        );
    }

    #[test]
    fn jest_failure_without_message() {
        let suites = fixture("jest.xml");
        assert_eq!(suites.len(), 2);
        let failed = &suites[1].cases[0];
        assert_eq!(failed.name, "Form submits 🚀");
        assert_eq!(failed.status, Status::Failed);
        assert_eq!(failed.message, None);
        assert!(failed
            .trace
            .as_deref()
            .is_some_and(|t| t.contains("Object.<anonymous>")));
    }

    #[test]
    fn gotestsum_char_refs_and_skips() {
        let suites = fixture("gotestsum.xml");
        assert_eq!(suites.len(), 2);
        let failed = &suites[0].cases[2];
        assert!(failed
            .trace
            .as_deref()
            .is_some_and(|t| t.contains("store_test.go:88") && t.contains('\n')));
        assert_eq!(suites[1].cases[0].status, Status::Skipped);
        assert_eq!(
            suites[1].cases[0].trace, None,
            "a skip's text is not a stack trace"
        );
    }

    #[test]
    fn rspec_style() {
        let suites = fixture("rspec.xml");
        use Status::*;
        assert_eq!(statuses(&suites[0]), [Passed, Failed, Skipped]);
        assert!(suites[0].cases[1]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("Ada Lovelace")));
    }

    #[test]
    fn malformed_and_foreign_documents_are_errors_not_panics() {
        let path = format!(
            "{}/tests/data/junit/malformed.xml",
            env!("CARGO_MANIFEST_DIR")
        );
        let xml = std::fs::read(path).expect("fixture");
        assert!(parse(&xml).is_err());
        assert!(parse(b"<html><body>nope</body></html>").is_err());
        assert!(parse(b"\xff\xfe garbage").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn missing_time_and_huge_output() {
        let out = "x".repeat(5_000_000);
        let xml = format!(
            "<testsuite name=\"s\"><testcase name=\"t\"><system-out>{out}</system-out></testcase></testsuite>"
        );
        let suites = parse(xml.as_bytes()).expect("parses");
        assert_eq!(suites[0].cases[0].duration_ms, 0);
        assert_eq!(suites[0].duration_ms, 0);
        assert_eq!(suites[0].cases[0].trace, None);
    }
}
