//! JUnit XML, as real runners write it (see `tests/data/junit/real/`): a `<testsuites>` or a
//! bare `<testsuite>` root, nested suites (each suite that holds test cases becomes one
//! result), `<failure>` and `<error>`, `<skipped>` and googletest's `status="notrun"`,
//! Surefire's and nextest's reruns (`flakyFailure`/`flakyError`: passed on a rerun;
//! `rerunFailure`/`rerunError`: failed every run), missing or odd `time`, non-ASCII names and
//! huge `system-out` (read past, never kept). UTF-8 with or without a byte order mark, UTF-16
//! (by its byte order mark or its first bytes), blank lines before the declaration and a
//! DOCTYPE are read; no entity a DOCTYPE declares is ever expanded (an unknown reference stays
//! as written) and nothing external is ever loaded.
//!
//! The file is hostile input: every name, message and trace is capped as it is read, before
//! any copy; an unnamed suite or case shares its parent's (capped) name while the file is
//! read; the names kept, the number of cases per file and the nesting of suites are capped
//! (over: the file is refused), and so are the messages and traces kept per file (over: the
//! rest are dropped). A file cut off before its root element closes is refused, not read in
//! part: a partial suite would show a cut-short run as a complete one.

use std::rc::Rc;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::item::{Case, Suite, TestStatus as Status};

/// The most of a suite's or case's name, or of a class name, kept (bytes).
pub(crate) const MAX_NAME: usize = 1024;
/// The most of a failure's message kept (bytes).
pub(crate) const MAX_MESSAGE: usize = 4 * 1024;
/// The most of a failure's text (stack trace) kept (bytes).
pub(crate) const MAX_TRACE: usize = 64 * 1024;
/// The most test cases one file may hold.
pub(crate) const MAX_CASES: usize = 50_000;
/// The most bytes of names (suites', cases', class names) one file may leave after parsing.
pub(crate) const MAX_NAME_BYTES: usize = 6 * 1024 * 1024;
/// The most bytes of messages and traces kept per file; past it they are dropped.
pub(crate) const MAX_DETAIL_BYTES: usize = 8 * 1024 * 1024;
/// The deepest nesting of suites read (real runners nest a handful deep).
pub(crate) const MAX_DEPTH: usize = 256;

/// Why a file is not read as test results (it is skipped with a warning).
#[derive(Debug, thiserror::Error)]
pub enum JunitError {
    #[error("not well-formed XML at byte {position}: {source}")]
    Malformed {
        position: u64,
        #[source]
        source: quick_xml::Error,
    },
    #[error("cut off: the file ends before its <{root}> element closes")]
    CutOff { root: String },
    #[error("not JUnit XML: the root element is <{root}>")]
    Foreign { root: String },
    #[error("not JUnit XML: no root element")]
    Empty,
    #[error("more than {MAX_CASES} test cases")]
    TooManyCases,
    #[error("its names add up to more than {MAX_NAME_BYTES} bytes")]
    NamesTooLarge,
    #[error("suites nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// A suite being read.
struct Open {
    name: Rc<str>,
    time: Option<i64>,
    cases: Vec<Case>,
}

/// How strongly an element decided a case's status: a later element overrides only a weaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    None,
    Skip,
    Rerun,
    Final,
}

/// A case being read.
struct OpenCase {
    case: Case,
    rank: Rank,
}

/// The outcome element whose text becomes the case's trace, while it is read.
struct Trace {
    depth: usize,
    text: String,
    /// Set while inside a child that is not a `stackTrace` (a rerun's `system-out`).
    muted_at: Option<usize>,
}

/// What one file costs so far, against the per-file caps.
#[derive(Default)]
struct Budget {
    cases: usize,
    names: usize,
    details: usize,
}

impl Budget {
    fn case(&mut self, case: &Case) -> Result<(), JunitError> {
        self.cases += 1;
        if self.cases > MAX_CASES {
            return Err(JunitError::TooManyCases);
        }
        self.name(case.class_name.len() + case.name.len())
    }

    fn name(&mut self, bytes: usize) -> Result<(), JunitError> {
        self.names = self.names.saturating_add(bytes);
        if self.names > MAX_NAME_BYTES {
            return Err(JunitError::NamesTooLarge);
        }
        Ok(())
    }

    /// Keeps `text` if the file's detail budget still has room for it.
    fn detail(&mut self, text: String) -> Option<String> {
        let total = self.details.saturating_add(text.len());
        (total <= MAX_DETAIL_BYTES).then(|| {
            self.details = total;
            text
        })
    }
}

/// Parses a JUnit XML document into its suites, every one named: a suite without a name takes
/// its parent suite's, else `stem` (the file's stem); a case without a class name takes its
/// suite's name, and a case without a name its class name.
pub fn parse(xml: &[u8], stem: &str) -> Result<Vec<Suite>, JunitError> {
    let doc = decode(xml);
    let mut reader = Reader::from_reader(doc.as_ref());
    let stem = text(stem, MAX_NAME);
    let stem: Rc<str> = Rc::from(if stem.trim().is_empty() {
        "tests"
    } else {
        &stem
    });
    let mut stack: Vec<Open> = Vec::new();
    // Cases outside any suite (directly under `<testsuites>`) get a suite of their own.
    let mut loose: Option<Open> = None;
    let mut done: Vec<Suite> = Vec::new();
    let mut case: Option<OpenCase> = None;
    let mut trace: Option<Trace> = None;
    let mut budget = Budget::default();
    let mut root: Option<String> = None;
    let mut depth = 0usize;
    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(source) => {
                let position = reader.error_position();
                return Err(match &root {
                    Some(root) if reader.buffer_position() >= doc.len() as u64 => {
                        JunitError::CutOff { root: root.clone() }
                    }
                    _ => JunitError::Malformed { position, source },
                });
            }
        };
        let self_closing = matches!(event, Event::Empty(_));
        match &event {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.name();
                let name = name.as_ref();
                if root.is_none() {
                    let tag = String::from_utf8_lossy(name);
                    if !matches!(name, b"testsuites" | b"testsuite" | b"testcase") {
                        return Err(JunitError::Foreign {
                            root: text(&tag, 64),
                        });
                    }
                    root = Some(tag.into_owned());
                }
                if !self_closing {
                    depth += 1;
                }
                if let Some(t) = trace.as_mut() {
                    if t.muted_at.is_none() && name != b"stackTrace" && !self_closing {
                        t.muted_at = Some(depth);
                    }
                }
                match name {
                    b"testsuite" if case.is_none() => {
                        let parent = stack.last().map(|s| &s.name).unwrap_or(&stem);
                        let open = Open {
                            name: attr(e, b"name", MAX_NAME)
                                .filter(|n| !n.trim().is_empty())
                                .map_or_else(|| parent.clone(), Rc::from),
                            time: attr(e, b"time", 64).map(|t| millis(&t)),
                            cases: Vec::new(),
                        };
                        if self_closing {
                            close(open, &mut done, &mut budget)?;
                        } else if stack.len() >= MAX_DEPTH {
                            return Err(JunitError::TooDeep);
                        } else {
                            stack.push(open);
                        }
                    }
                    b"testcase" if case.is_none() => {
                        let suite = match stack.last() {
                            Some(open) => &open.name,
                            None => &loose.get_or_insert_with(|| loose_suite(&stem)).name,
                        };
                        let new = open_case(e, suite);
                        if self_closing {
                            push_case(new.case, &mut stack, &mut loose, &stem, &mut budget)?;
                        } else {
                            case = Some(new);
                        }
                    }
                    _ => {
                        if let Some(open) = case.as_mut() {
                            if let Some(outcome) = Outcome::of(name) {
                                if outcome.decide(e, open, &mut budget) && !self_closing {
                                    trace = Some(Trace {
                                        depth,
                                        text: String::new(),
                                        muted_at: None,
                                    });
                                }
                            }
                        }
                    }
                }
            }
            Event::End(e) => {
                if let Some(t) = trace.as_mut() {
                    if t.muted_at == Some(depth) {
                        t.muted_at = None;
                    } else if t.depth == depth {
                        let body = std::mem::take(&mut t.text);
                        trace = None;
                        if let Some(open) = case.as_mut() {
                            let body = body.trim();
                            if !body.is_empty() && open.case.trace.is_none() {
                                open.case.trace =
                                    budget.detail(capped(body.to_string(), MAX_TRACE));
                            }
                        }
                    }
                }
                depth = depth.saturating_sub(1);
                match e.name().as_ref() {
                    b"testcase" => {
                        if let Some(open) = case.take() {
                            trace = None;
                            push_case(open.case, &mut stack, &mut loose, &stem, &mut budget)?;
                        }
                    }
                    b"testsuite" if case.is_none() => {
                        if let Some(open) = stack.pop() {
                            close(open, &mut done, &mut budget)?;
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(t) => {
                if let Some(tr) = trace.as_mut().filter(|t| t.muted_at.is_none()) {
                    append(&mut tr.text, &t.decode().unwrap_or_default(), MAX_TRACE);
                }
            }
            Event::CData(t) => {
                if let Some(tr) = trace.as_mut().filter(|t| t.muted_at.is_none()) {
                    append(&mut tr.text, &String::from_utf8_lossy(t), MAX_TRACE);
                }
            }
            Event::GeneralRef(r) => {
                if let Some(tr) = trace.as_mut().filter(|t| t.muted_at.is_none()) {
                    let name = r.decode().unwrap_or_default();
                    match r.resolve_char_ref() {
                        Ok(Some(c)) => append(&mut tr.text, c.encode_utf8(&mut [0; 4]), MAX_TRACE),
                        _ => match quick_xml::escape::resolve_predefined_entity(&name) {
                            Some(s) => append(&mut tr.text, s, MAX_TRACE),
                            // Declared in a DOCTYPE or not at all: never expanded.
                            None => append(&mut tr.text, &format!("&{name};"), MAX_TRACE),
                        },
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    match root {
        None => Err(JunitError::Empty),
        Some(root) if depth > 0 => Err(JunitError::CutOff { root }),
        Some(_) => {
            if let Some(open) = loose {
                close(open, &mut done, &mut budget)?;
            }
            Ok(done)
        }
    }
}

/// The document as UTF-8: a UTF-8 byte order mark dropped, UTF-16 (by its byte order mark, or
/// by a NUL in its first two bytes) decoded, and blank lines before the declaration dropped.
fn decode(xml: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let utf16 = |bytes: &[u8], little: bool| -> Vec<u8> {
        let units = bytes.chunks_exact(2).map(|pair| {
            let pair = [pair[0], pair[1]];
            if little {
                u16::from_le_bytes(pair)
            } else {
                u16::from_be_bytes(pair)
            }
        });
        char::decode_utf16(units)
            .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect::<String>()
            .into_bytes()
    };
    let decoded = match xml {
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::borrow::Cow::Borrowed(rest),
        [0xFF, 0xFE, rest @ ..] => std::borrow::Cow::Owned(utf16(rest, true)),
        [0xFE, 0xFF, rest @ ..] => std::borrow::Cow::Owned(utf16(rest, false)),
        [a, 0, ..] if *a != 0 => std::borrow::Cow::Owned(utf16(xml, true)),
        [0, b, ..] if *b != 0 => std::borrow::Cow::Owned(utf16(xml, false)),
        _ => std::borrow::Cow::Borrowed(xml),
    };
    let start = decoded
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(decoded.len());
    match decoded {
        std::borrow::Cow::Borrowed(b) => std::borrow::Cow::Borrowed(&b[start..]),
        std::borrow::Cow::Owned(mut v) => {
            v.drain(..start);
            std::borrow::Cow::Owned(v)
        }
    }
}

fn loose_suite(stem: &Rc<str>) -> Open {
    Open {
        name: stem.clone(),
        time: None,
        cases: Vec::new(),
    }
}

fn open_case(e: &BytesStart<'_>, suite: &Rc<str>) -> OpenCase {
    let class_name = attr(e, b"classname", MAX_NAME)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| suite.to_string());
    let name = attr(e, b"name", MAX_NAME)
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| class_name.clone());
    // googletest marks a DISABLED_ test `status="notrun"` and writes no <skipped>.
    let not_run = attr(e, b"status", 16).is_some_and(|s| {
        ["notrun", "skipped", "disabled"]
            .iter()
            .any(|n| s.eq_ignore_ascii_case(n))
    });
    OpenCase {
        case: Case {
            class_name,
            name,
            status: if not_run {
                Status::Skipped
            } else {
                Status::Passed
            },
            duration_ms: attr(e, b"time", 64).map_or(0, |t| millis(&t)),
            message: None,
            trace: None,
        },
        rank: if not_run { Rank::Skip } else { Rank::None },
    }
}

/// The elements inside a `<testcase>` that tell how it ended.
#[derive(Clone, Copy)]
enum Outcome {
    Failure,
    Error,
    Skipped,
    /// Surefire's and nextest's failed reruns of a case that failed every time.
    RerunFailure,
    RerunError,
    /// A failed run of a case that passed on a rerun: it passed.
    Flaky,
}

impl Outcome {
    fn of(name: &[u8]) -> Option<Outcome> {
        Some(match name {
            b"failure" => Outcome::Failure,
            b"error" => Outcome::Error,
            b"skipped" => Outcome::Skipped,
            b"rerunFailure" => Outcome::RerunFailure,
            b"rerunError" => Outcome::RerunError,
            b"flakyFailure" | b"flakyError" => Outcome::Flaky,
            _ => return None,
        })
    }

    /// Applies this outcome to the case if it outranks what decided it so far; true when its
    /// text is the case's trace.
    fn decide(self, e: &BytesStart<'_>, open: &mut OpenCase, budget: &mut Budget) -> bool {
        let (status, rank) = match self {
            Outcome::Failure => (Status::Failed, Rank::Final),
            Outcome::Error => (Status::Error, Rank::Final),
            Outcome::RerunFailure => (Status::Failed, Rank::Rerun),
            Outcome::RerunError => (Status::Error, Rank::Rerun),
            Outcome::Skipped => (Status::Skipped, Rank::Skip),
            Outcome::Flaky => return false,
        };
        if rank <= open.rank {
            return false;
        }
        open.rank = rank;
        open.case.status = status;
        open.case.message = attr(e, b"message", MAX_MESSAGE).and_then(|m| budget.detail(m));
        open.case.trace = None;
        status != Status::Skipped
    }
}

fn close(open: Open, done: &mut Vec<Suite>, budget: &mut Budget) -> Result<(), JunitError> {
    if open.cases.is_empty() {
        return Ok(());
    }
    budget.name(open.name.len())?;
    let sum = open
        .cases
        .iter()
        .fold(0i64, |total, c| total.saturating_add(c.duration_ms));
    done.push(Suite {
        name: open.name.to_string(),
        duration_ms: open.time.unwrap_or(sum),
        cases: open.cases,
    });
    Ok(())
}

fn push_case(
    case: Case,
    stack: &mut [Open],
    loose: &mut Option<Open>,
    stem: &Rc<str>,
    budget: &mut Budget,
) -> Result<(), JunitError> {
    budget.case(&case)?;
    let suite = match stack.last_mut() {
        Some(top) => top,
        None => loose.get_or_insert_with(|| loose_suite(stem)),
    };
    suite.cases.push(case);
    Ok(())
}

/// An attribute's value, unescaped (an unknown entity stays as written), read as [`text`].
fn attr(e: &BytesStart<'_>, key: &[u8], max: usize) -> Option<String> {
    let a = e
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| a.key.as_ref() == key)?;
    let value = a
        .unescape_value()
        .unwrap_or_else(|_| String::from_utf8_lossy(&a.value).into_owned().into());
    Some(text(&value, max))
}

/// At most `max` bytes of `s` (marked ` [...]` where cut), control characters other than line
/// breaks and tabs replaced: never more than `max` bytes are copied, however long `s` is.
fn text(s: &str, max: usize) -> String {
    let mut out = String::new();
    append(&mut out, s, max);
    capped(out, max)
}

/// Appends to `out` up to a little past `max` bytes (so that [`capped`] marks the cut).
fn append(out: &mut String, s: &str, max: usize) {
    for c in s.chars() {
        let c = if c.is_control() && !matches!(c, '\n' | '\r' | '\t') {
            char::REPLACEMENT_CHARACTER
        } else {
            c
        };
        if out.len() + c.len_utf8() > max + 4 {
            break;
        }
        out.push(c);
    }
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
        parse(&xml, "stem").unwrap_or_else(|e| panic!("{name}: {e}"))
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
        assert!(parse(&xml, "s").is_err());
        assert!(matches!(
            parse(b"<html><body>nope</body></html>", "s"),
            Err(JunitError::Foreign { root }) if root == "html"
        ));
        assert!(parse(b"\xff\xfe garbage", "s").is_err());
        assert!(matches!(parse(b"", "s"), Err(JunitError::Empty)));
    }

    #[test]
    fn missing_time_and_huge_output() {
        let out = "x".repeat(5_000_000);
        let xml = format!(
            "<testsuite name=\"s\"><testcase name=\"t\"><system-out>{out}</system-out></testcase></testsuite>"
        );
        let suites = parse(xml.as_bytes(), "s").expect("parses");
        assert_eq!(suites[0].cases[0].duration_ms, 0);
        assert_eq!(suites[0].duration_ms, 0);
        assert_eq!(suites[0].cases[0].trace, None);
    }

    #[test]
    fn empty_names_get_sensible_ones() {
        let xml = r#"<testsuites><testsuite name=" ">
            <testcase classname="" name="adds"/>
            <testcase classname="com.acme.CartTest" name=""/>
            <testcase/>
            </testsuite></testsuites>"#;
        let suites = parse(xml.as_bytes(), "junit-web").expect("parses");
        assert_eq!(suites[0].name, "junit-web", "the file's stem");
        let names: Vec<(&str, &str)> = suites[0]
            .cases
            .iter()
            .map(|c| (c.class_name.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("junit-web", "adds"),
                ("com.acme.CartTest", "com.acme.CartTest"),
                ("junit-web", "junit-web")
            ]
        );
        let nested =
            r#"<testsuite name="outer"><testsuite><testcase name="t"/></testsuite></testsuite>"#;
        let suites = parse(nested.as_bytes(), "file").expect("parses");
        assert_eq!(
            suites[0].name, "outer",
            "an unnamed suite takes its parent's name"
        );
        assert_eq!(suites[0].cases[0].class_name, "outer");
    }

    #[test]
    fn reruns_flaky_passes_and_not_run() {
        let xml = r#"<testsuite name="s">
            <testcase name="flaky"><flakyFailure message="first"><stackTrace>at A</stackTrace>
              <system-out>noise</system-out></flakyFailure></testcase>
            <testcase name="always"><rerunFailure message="again"><stackTrace>at B</stackTrace>
              <system-out>noise</system-out></rerunFailure></testcase>
            <testcase name="both"><failure message="first">at C</failure>
              <rerunError message="later">at D</rerunError></testcase>
            <testcase name="disabled" status="notrun"/>
            </testsuite>"#;
        let suites = parse(xml.as_bytes(), "s").expect("parses");
        let cases = &suites[0].cases;
        use Status::*;
        assert_eq!(statuses(&suites[0]), [Passed, Failed, Failed, Skipped]);
        assert_eq!(cases[0].trace, None, "a flaky run's trace is not kept");
        assert_eq!(cases[1].message.as_deref(), Some("again"));
        assert_eq!(
            cases[1].trace.as_deref(),
            Some("at B"),
            "system-out is not the trace"
        );
        assert_eq!(cases[2].message.as_deref(), Some("first"));
        assert_eq!(cases[2].trace.as_deref(), Some("at C"));
    }

    #[test]
    fn encodings_prologs_and_entities() {
        let doc = "<?xml version=\"1.0\" encoding=\"UTF-16\"?>\n<testsuite name=\"Zoë\"><testcase name=\"日本\"/></testsuite>";
        let utf16le: Vec<u8> = [0xFF, 0xFE]
            .into_iter()
            .chain(doc.encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        let utf16be: Vec<u8> = doc.encode_utf16().flat_map(u16::to_be_bytes).collect();
        let bom = [b"\xEF\xBB\xBF\n\n".as_slice(), doc.as_bytes()].concat();
        for bytes in [utf16le, utf16be, bom] {
            let suites = parse(&bytes, "s").expect("parses");
            assert_eq!(suites[0].name, "Zoë");
            assert_eq!(suites[0].cases[0].name, "日本");
        }
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>
            <testsuite name="a&x;"><testcase name="c"><failure>see &x; &lt;</failure></testcase></testsuite>"#;
        let suites = parse(xxe.as_bytes(), "s").expect("parses");
        assert_eq!(suites[0].name, "a&x;", "never expanded");
        assert_eq!(suites[0].cases[0].trace.as_deref(), Some("see &x; <"));
    }

    #[test]
    fn a_cut_off_file_is_refused() {
        let whole = r#"<testsuite name="s"><testcase name="a"/><testcase name="b"/></testsuite>"#;
        for cut in [whole.len() - 5, 35, 25] {
            let err = parse(&whole.as_bytes()[..cut], "s").expect_err("cut off");
            assert!(matches!(err, JunitError::CutOff { .. }), "{cut}: {err}");
        }
    }

    #[test]
    fn names_messages_and_traces_are_capped() {
        let long = "n".repeat(100_000);
        let xml = format!(
            r#"<testsuite name="{long}"><testcase classname="{long}" name="{long}"><failure message="{long}">{long}{long}</failure></testcase></testsuite>"#
        );
        let suites = parse(xml.as_bytes(), "s").expect("parses");
        let case = &suites[0].cases[0];
        assert!(suites[0].name.len() <= MAX_NAME + 6);
        assert!(case.class_name.len() <= MAX_NAME + 6 && case.name.len() <= MAX_NAME + 6);
        assert!(case.name.ends_with(" [...]"));
        assert!(case
            .message
            .as_ref()
            .is_some_and(|m| m.len() <= MAX_MESSAGE + 6));
        assert!(case
            .trace
            .as_ref()
            .is_some_and(|t| t.len() <= MAX_TRACE + 6));
    }

    #[test]
    fn too_many_cases_or_names_refuse_the_file() {
        let many = format!(
            "<testsuite name=\"s\">{}</testsuite>",
            "<testcase name=\"t\"/>".repeat(MAX_CASES + 1)
        );
        assert!(matches!(
            parse(many.as_bytes(), "s"),
            Err(JunitError::TooManyCases)
        ));
        // A long name over many unnamed suites: each would copy it.
        let bomb = format!(
            "<testsuite name=\"{}\">{}</testsuite>",
            "b".repeat(1 << 20),
            "<testsuite><testcase/></testsuite>".repeat(20_000)
        );
        assert!(matches!(
            parse(bomb.as_bytes(), "s"),
            Err(JunitError::NamesTooLarge)
        ));
        let deep = format!(
            "{}<testcase/>{}",
            "<testsuite>".repeat(MAX_DEPTH + 1),
            "</testsuite>".repeat(MAX_DEPTH + 1)
        );
        assert!(matches!(
            parse(deep.as_bytes(), "s"),
            Err(JunitError::TooDeep)
        ));
    }
}
