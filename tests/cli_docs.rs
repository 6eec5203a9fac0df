//! What the .deb installs besides the binary: the shell completions and man pages in
//! `contrib/` are what the CLI generates now (a changed flag without regenerated files fails
//! here; regenerate with `KITESYNC_BLESS=1 cargo test --test cli_docs`), and the package's
//! assets ship every document.

use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib")
}

fn kitesync(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_kitesync"))
        .args(args)
        .output()
        .expect("kitesync ran");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Compares `generated` with the committed `path` (or writes it, when blessing).
fn matches(path: &Path, generated: &[u8]) -> Result<(), String> {
    if std::env::var_os("KITESYNC_BLESS").is_some() {
        std::fs::write(path, generated).expect("write");
        return Ok(());
    }
    match std::fs::read(path) {
        Ok(committed) if committed == generated => Ok(()),
        _ => Err(format!("{} is stale", path.display())),
    }
}

#[test]
fn committed_completions_match_the_cli() {
    let dir = contrib().join("completions");
    let mut stale = Vec::new();
    for (shell, file) in [
        ("bash", "kitesync.bash"),
        ("zsh", "_kitesync"),
        ("fish", "kitesync.fish"),
    ] {
        let generated = kitesync(&["completions", shell]);
        let text = String::from_utf8_lossy(&generated);
        for word in ["--once", "--backfill", "check", "status", "replay"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
        stale.extend(matches(&dir.join(file), &generated).err());
    }
    assert!(
        stale.is_empty(),
        "{stale:?}: regenerate with KITESYNC_BLESS=1 cargo test --test cli_docs"
    );

    // bash itself reads the script.
    let bash = Command::new("bash")
        .arg("-n")
        .arg(dir.join("kitesync.bash"))
        .output()
        .expect("bash ran");
    assert!(
        bash.status.success(),
        "{}",
        String::from_utf8_lossy(&bash.stderr)
    );
}

#[test]
fn committed_man_pages_match_the_cli_and_groff_reads_them_cleanly() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = scratch.path().join("man");
    kitesync(&["manpages", &out.display().to_string()]);
    let committed = contrib().join("man");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("generated")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    assert!(names.contains(&"kitesync.1".to_string()), "{names:?}");
    let mut stale = Vec::new();
    for name in &names {
        let generated = std::fs::read(out.join(name)).expect("read");
        stale.extend(matches(&committed.join(name), &generated).err());
    }
    let mut present: Vec<String> = std::fs::read_dir(&committed)
        .expect("contrib/man")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    present.sort();
    if std::env::var_os("KITESYNC_BLESS").is_none() {
        assert_eq!(
            present, names,
            "contrib/man holds other pages than the CLI makes"
        );
    }
    assert!(
        stale.is_empty(),
        "{stale:?}: regenerate with KITESYNC_BLESS=1 cargo test --test cli_docs"
    );

    let page = std::fs::read_to_string(committed.join("kitesync.1")).expect("kitesync.1");
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH OPTIONS", "Exit status"] {
        assert!(page.contains(section), "kitesync.1 lacks {section}");
    }
    // groff, which man uses, formats every page without a warning.
    if Command::new("groff").arg("-v").output().is_ok() {
        for name in &names {
            let groff = Command::new("groff")
                .args(["-man", "-ww", "-z"])
                .arg(committed.join(name))
                .output()
                .expect("groff ran");
            let said = String::from_utf8_lossy(&groff.stderr);
            assert!(groff.status.success() && said.is_empty(), "{name}: {said}");
        }
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "groff is needed in CI (apt-get install groff-base)"
        );
    }
}

/// The sources the `.deb` installs under `usr/share/doc/kitesync/`, each at its path in the
/// repository (`docs/operating.md` at `usr/share/doc/kitesync/docs/operating.md`), read from Cargo.toml's
/// `[package.metadata.deb] assets` (CI builds no package).
fn documents_the_package_installs() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest: toml_edit::DocumentMut = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("Cargo.toml")
        .parse()
        .expect("Cargo.toml parses");
    let assets = manifest["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets");
    assets
        .iter()
        .filter_map(|asset| {
            let asset = asset.as_array()?;
            let source = asset.get(0)?.as_str()?;
            let target = asset.get(1)?.as_str()?;
            let name = Path::new(source).file_name()?.to_str()?;
            let installed = format!("{target}{name}");
            // Installed as laid out here, so the documents' relative links hold there too.
            (installed.strip_prefix("usr/share/doc/kitesync/") == Some(source))
                .then(|| source.to_string())
        })
        .collect()
}

#[test]
fn the_package_ships_every_document() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = documents_the_package_installs();
    let mut wanted: Vec<String> = ["README.md", "CHANGELOG.md", "config.example.toml"]
        .map(String::from)
        .into();
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let name = entry.expect("docs/ entry").file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".md") {
            wanted.push(format!("docs/{name}"));
        }
    }
    let missing: Vec<&String> = wanted.iter().filter(|w| !shipped.contains(w)).collect();
    assert!(
        missing.is_empty(),
        "Cargo.toml's [package.metadata.deb] assets do not install {missing:?} under usr/share/doc/kitesync/"
    );
    let absent: Vec<&String> = shipped.iter().filter(|s| !root.join(s).is_file()).collect();
    assert!(
        absent.is_empty(),
        "assets name files that do not exist: {absent:?}"
    );
}

/// GitHub's anchor for a heading: lower case, punctuation but `-` and `_` dropped, spaces
/// as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The lines of a Markdown file outside its fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// Every relative link of the README, the changelog, ARCHITECTURE.md and `docs/` reaches a
/// file of the repository, and its `#fragment` a heading there: a document moved or a
/// heading renamed breaks no link, here or where the package installs them.
#[test]
fn every_link_between_the_documents_resolves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut documents: Vec<PathBuf> = ["README.md", "CHANGELOG.md", "ARCHITECTURE.md"]
        .iter()
        .map(|d| root.join(d))
        .collect();
    for entry in std::fs::read_dir(root.join("docs")).expect("docs/") {
        let path = entry.expect("docs/ entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            documents.push(path);
        }
    }
    let mut broken = Vec::new();
    let mut links = 0;
    for document in &documents {
        let text = std::fs::read_to_string(document).expect("document");
        for line in prose(&text) {
            for (at, _) in line.match_indices("](") {
                let rest = &line[at + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = &rest[..end];
                if target.contains("://") || target.starts_with("mailto:") || target.is_empty() {
                    continue;
                }
                links += 1;
                let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
                let file = if path.is_empty() {
                    document.clone()
                } else {
                    document.parent().expect("parent").join(path)
                };
                let shown = format!("{}: {target}", document.display());
                if !file.exists() {
                    broken.push(format!("{shown} (no such file)"));
                    continue;
                }
                if fragment.is_empty() {
                    continue;
                }
                let heads = std::fs::read_to_string(&file).expect("linked document");
                let found = prose(&heads)
                    .iter()
                    .filter_map(|l| l.strip_prefix('#'))
                    .any(|h| anchor(h.trim_start_matches('#')) == fragment);
                if !found {
                    broken.push(format!("{shown} (no such heading)"));
                }
            }
        }
    }
    assert!(
        links > 30,
        "only {links} links found: is the parsing right?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
