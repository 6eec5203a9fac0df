//! The config file's text, kept to word each error with the file, the key and its line.

use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::Env;
use figment::Provider;

use super::schema::ENV_PREFIX;

/// A configuration problem, worded for the operator. Its `Display` is the whole message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// A message, with the password of any URL in it (`scheme://user:password@host`) hidden.
    pub(super) fn new(message: String) -> ConfigError {
        let mut shown = String::with_capacity(message.len());
        let mut rest = message.as_str();
        while let Some(at) = rest.find("://") {
            let (head, tail) = rest.split_at(at + 3);
            shown.push_str(head);
            rest = tail;
            let authority_end = tail.find(['/', '"', '`', ' ', '\'']).unwrap_or(tail.len());
            if let Some(userinfo_end) = tail[..authority_end].rfind('@') {
                let user = tail[..userinfo_end].split(':').next().unwrap_or_default();
                shown.push_str(&format!("{user}:***"));
                rest = &tail[userinfo_end..];
            }
        }
        shown.push_str(rest);
        ConfigError(shown)
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    }
}

/// The config file's text, kept to point errors at a line; its methods word those errors.
pub(super) struct ConfigFile {
    path: PathBuf,
    doc: toml_edit::ImDocument<String>,
}

impl ConfigFile {
    pub(super) fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let shown = path.display();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let why = io_reason(&e);
            ConfigError::new(format!("cannot read config file {shown}: {why}"))
        })?;
        let doc = toml_edit::ImDocument::parse(text.clone()).map_err(|e| {
            let at = e.span().map_or(1, |s| line_of(&text, s.start));
            let reason = e.message().trim().trim_end_matches('.').replace('\n', "; ");
            ConfigError::new(format!("{shown} line {at}: TOML syntax error: {reason}"))
        })?;
        let path = path.to_path_buf();
        Ok(ConfigFile { path, doc })
    }

    /// "FILE line N: [section] key <problem>", or without the line when the key is not in the file.
    pub(super) fn error(&self, section: &str, key: &str, problem: &str) -> ConfigError {
        let whence = self.locate(&[section, key]);
        ConfigError::new(format!("{whence}: [{section}] {key} {problem}"))
    }

    /// The error for a file that `[section] key` names and that cannot be read.
    pub(super) fn unreadable(
        &self,
        section: &str,
        key: &str,
        path: &Path,
        e: &std::io::Error,
    ) -> ConfigError {
        let (shown, why) = (path.display(), io_reason(e));
        let problem = format!("names {shown}, which cannot be read: {why}");
        self.error(section, key, &problem)
    }

    /// The error for a secret file that cannot be read. Its path is shown only when it names
    /// a file that exists or one in an existing directory (other than `/`): anything else may
    /// be the secret itself, pasted where its path belongs.
    pub(super) fn unreadable_secret_file(
        &self,
        section: &str,
        key: &str,
        path: &Path,
        e: &std::io::Error,
    ) -> ConfigError {
        let in_a_directory = path
            .parent()
            .is_some_and(|dir| dir.parent().is_some() && dir.is_dir());
        if path.exists() || in_a_directory {
            return self.unreadable(section, key, path, e);
        }
        let why = io_reason(e);
        let problem = format!(
            "names a file that cannot be read ({why}), in no directory that exists; the value is not shown, \
             as it may be the secret itself: put the secret in a file and its path here"
        );
        self.error(section, key, &problem)
    }

    /// The file, and the line of `path` in it when the key is written there.
    fn locate(&self, path: &[&str]) -> String {
        let file = self.path.display();
        self.line_of_key(path)
            .map_or(file.to_string(), |line| format!("{file} line {line}"))
    }

    fn line_of_key(&self, path: &[&str]) -> Option<usize> {
        let mut item = self.doc.as_item();
        let mut span = None;
        for part in path {
            let (key, value) = item.as_table_like()?.get_key_value(part)?;
            span = key.span().or_else(|| value.span());
            item = value;
        }
        span.map(|s| line_of(self.doc.raw(), s.start))
    }

    /// Rewords a figment error: what is wrong, with which key, where.
    pub(super) fn explain(&self, e: &figment::Error) -> ConfigError {
        let path: Vec<&str> = e.path.iter().map(String::as_str).collect();
        let key = match path.split_last() {
            None => String::new(),
            Some((last, [])) => format!("{last} "),
            Some((last, parents)) => format!("[{}] {last} ", parents.join(".")),
        };
        // The environment provider's values carry its metadata, named by its prefix alone.
        let env = Env::prefixed(ENV_PREFIX).metadata();
        let whence = if e.metadata.as_ref().is_some_and(|m| m.name == env.name) {
            let var = path.join("__").to_uppercase();
            format!("environment variable {ENV_PREFIX}{var}")
        } else {
            self.locate(&path)
        };
        let kind = match &e.kind {
            Kind::MissingField(field) if path.is_empty() => {
                format!("the [{field}] section is missing")
            }
            Kind::MissingField(field) => format!("`{field}` is missing"),
            kind => kind.to_string(),
        };
        ConfigError::new(format!("{whence}: {key}{}", kind.trim_end_matches('.')))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.bytes().take(offset).filter(|&b| b == b'\n').count() + 1
}
