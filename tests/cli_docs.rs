//! The shell completions and man pages in `contrib/` (which the .deb installs) are what the
//! CLI generates now: a changed flag without regenerated files fails here. Regenerate with
//! `KITESYNC_BLESS=1 cargo test --test cli_docs`.

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
