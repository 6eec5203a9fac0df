//! The OCI image (`contrib/container/`), built with podman and run from its own filesystem.
//!
//! The image is built from this test run's (debug) binary through the same script and
//! Containerfile as the release image (`contrib/container/build.sh --binary`), in a private
//! podman store on the vfs driver: it works on any filesystem and leaves nothing behind.
//! `IMAGE_BINARY=target/container/kitesync` tests the release image's binary instead.
//!
//! `podman run` is refused on the machines that run these tests (they deny the OCI runtime's
//! `setrlimit`), so the test does what a runtime does by hand: it copies the image's filesystem
//! from `podman image mount` (read-only on overlay storage; a copy also keeps the image's
//! ownership of `/var/lib/kitesync`, as a new named volume does), adds the runtime's
//! `/etc/hosts` and the credential files, and runs the image's entrypoint as the image's user
//! under `chroot`, as PID 1 of a PID namespace of its own with its own `/proc`
//! (`unshare --pid --fork --mount-proc`). Root only; skipped without root or podman unless
//! `CI` is set.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::*;
use kitesync_fakes::data;
use serde_json::Value;

/// The image's user, as its Containerfile sets it.
const USER: &str = "65532:65532";
/// The host name BuildButler has in the container's `/etc/hosts`: name resolution inside
/// the image (glibc without an nsswitch.conf) is part of what is tested.
const BUTLER_HOST: &str = "buildbutler.test";

/// True when this test can build and run the image here: root, with podman and unshare.
fn can_run_images() -> bool {
    if !tool_available("podman", "podman") || !tool_available("unshare", "util-linux") {
        return false;
    }
    // /proc/self belongs to the process's effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root && std::env::var_os("CI").is_some() {
        panic!("tests/container.rs needs root in CI (for chroot and unshare)");
    }
    root
}

/// The full path of the host's `tool` (the container's environment has no PATH of ours).
fn host_tool(tool: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(tool))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{tool} on the PATH"))
}

/// An image built into a private podman store, and a writable copy of its filesystem.
struct Image {
    dir: tempfile::TempDir,
    podman: Vec<String>,
    tag: String,
    /// `podman image inspect`'s `Config`: user, entrypoint, environment, labels...
    config: Value,
}

impl Image {
    /// Builds the image with `contrib/container/build.sh` from the binary under test.
    fn build() -> Image {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path();
        let podman = vec![
            "podman".to_string(),
            format!("--root={}", store.join("storage").display()),
            format!("--runroot={}", store.join("run").display()),
            "--storage-driver=vfs".to_string(),
        ];
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/container/build.sh");
        let out = std::process::Command::new(script)
            .arg("--binary")
            .arg(std::env::var_os("IMAGE_BINARY").unwrap_or(env!("CARGO_BIN_EXE_kitesync").into()))
            .args(["--tag", "localhost/kitesync-test:latest"])
            .env("PODMAN", podman.join(" "))
            .env("STAGE", store.join("stage"))
            .output()
            .expect("build.sh ran");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "build.sh failed: {said}");
        let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(tag, "localhost/kitesync-test:latest", "{said}");
        assert!(said.contains("KiB"), "build.sh reports the size: {said}");
        let mut image = Image {
            dir,
            podman,
            tag,
            config: Value::Null,
        };
        let config = image.podman(&["image", "inspect", "--format", "{{json .Config}}"]);
        image.config = serde_json::from_str(&config).expect("the image's config is JSON");
        image
    }

    /// Runs podman on the private store with `args` and the image's tag; its stdout.
    fn podman(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(&self.podman[0])
            .args(&self.podman[1..])
            .args(args)
            .arg(&self.tag)
            .output()
            .expect("podman ran");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "podman {args:?}: {said}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A writable copy of the image's filesystem (ownership and modes kept), returned.
    fn copy_rootfs(&self) -> PathBuf {
        let mounted = self.podman(&["image", "mount"]);
        let rootfs = self.dir.path().join("rootfs");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{mounted}/."))
            .arg(&rootfs)
            .status()
            .expect("cp ran");
        self.podman(&["image", "unmount"]);
        assert!(status.success(), "copy of {mounted}");
        rootfs
    }

    /// The label `key` of the image.
    fn label(&self, key: &str) -> &str {
        self.config["Labels"][key].as_str().unwrap_or("")
    }
}

/// The image's entrypoint with `args`, as its user, chrooted into `rootfs`, PID 1 of its own
/// PID namespace; the environment is the image's and `env` only.
fn container(
    image: &Image,
    rootfs: &Path,
    env: &[(&str, String)],
    args: &[&str],
) -> tokio::process::Command {
    let user = image.config["User"]
        .as_str()
        .expect("the image names a user");
    let entrypoint: Vec<&str> = image.config["Entrypoint"]
        .as_array()
        .expect("an entrypoint")
        .iter()
        .map(|a| a.as_str().expect("a word"))
        .collect();
    let mut cmd = tokio::process::Command::new(host_tool("unshare"));
    cmd.arg("--pid")
        .arg("--fork")
        .arg(format!("--mount-proc={}", rootfs.join("proc").display()))
        .arg(host_tool("chroot"))
        .arg(format!("--userspec={user}"))
        .arg(rootfs)
        .args(entrypoint)
        .args(args)
        .env_clear();
    for var in image.config["Env"].as_array().into_iter().flatten() {
        let (key, value) = var.as_str().and_then(|v| v.split_once('=')).expect("K=V");
        cmd.env(key, value);
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs [`container`] to its end, which must be exit 0.
async fn run_ok(image: &Image, rootfs: &Path, env: &[(&str, String)], args: &[&str]) -> Run {
    let out = container(image, rootfs, env, args).output();
    let run = Run::from(
        tokio::time::timeout(DEADLINE, out)
            .await
            .expect("ended")
            .expect("ran"),
    );
    assert_eq!(run.code, 0, "{args:?}:\n{}", run.output());
    run
}

/// What the test's runtime sets: the fakes' addresses (BuildButler by host name), a fast
/// pace, the metrics on a port of the system's choosing on loopback (tests bind nothing
/// else), and the daemon polling every second.
fn environment(h: &Harness) -> Vec<(&'static str, String)> {
    let butler = h.bb.url.replace("127.0.0.1", BUTLER_HOST);
    assert_ne!(butler, h.bb.url, "BuildButler's fake is on 127.0.0.1");
    vec![
        ("KITESYNC_BUILDKITE__ORGANIZATION", ORG.to_string()),
        ("KITESYNC_BUILDKITE__API_URL", h.bk.url.to_string()),
        (
            "KITESYNC_BUILDKITE__REQUESTS_PER_MINUTE",
            "6000".to_string(),
        ),
        ("KITESYNC_BUILDBUTLER__URL", butler),
        (
            "KITESYNC_BUILDBUTLER__RETRY_WINDOW_SECONDS",
            "5".to_string(),
        ),
        ("KITESYNC_METRICS__LISTEN", "127.0.0.1:0".to_string()),
        ("KITESYNC_SCHEDULE__AGENTS", String::new()),
        ("KITESYNC_SCHEDULE__BUILDS", "* * * * * *".to_string()),
        ("RUST_LOG", "info".to_string()),
    ]
}

/// The host PID of `child`'s own child (the container's PID 1) once it runs kitesync.
async fn pid_one(child: &tokio::process::Child) -> u32 {
    let unshare = child.id().expect("running");
    let children = format!("/proc/{unshare}/task/{unshare}/children");
    until_some(|| {
        let pid = std::fs::read_to_string(&children)
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "kitesync")
            });
        std::future::ready(pid)
    })
    .await
}

/// The value of the unlabelled sample `name` in a Prometheus scrape.
fn sample(scrape: &str, name: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_delivers_once_then_as_a_daemon_from_its_own_filesystem_as_its_user() {
    if !can_run_images() {
        return;
    }
    // Blocking calls here and below: no fake runs yet, or they run on the other workers.
    let image = Image::build();

    // What `podman run` would take from the image.
    let config = &image.config;
    assert_eq!(config["User"], USER, "{config}");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!([
            "/usr/bin/kitesync",
            "--config",
            "/etc/kitesync/kitesync.toml"
        ])
    );
    assert!(config["ExposedPorts"].get("9187/tcp").is_some(), "{config}");
    assert!(
        config["Volumes"].get("/var/lib/kitesync").is_some(),
        "{config}"
    );
    assert_eq!(
        image.label("org.opencontainers.image.version"),
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        image.label("org.opencontainers.image.licenses"),
        env!("CARGO_PKG_LICENSE")
    );
    assert_eq!(image.label("org.opencontainers.image.title"), "kitesync");
    assert!(!image.label("org.opencontainers.image.revision").is_empty());
    let source = image.label("org.opencontainers.image.source");
    if !env!("CARGO_PKG_REPOSITORY").is_empty() {
        assert_eq!(source, env!("CARGO_PKG_REPOSITORY"));
    }

    let rootfs = image.copy_rootfs();
    // Only what kitesync needs: no shell, no package manager.
    assert!(!rootfs.join("bin/sh").exists() && !rootfs.join("usr/bin/sh").exists());
    let volume = rootfs.join("var/lib/kitesync");
    let meta = std::fs::metadata(&volume).expect("the volume's directory");
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65532, 65532),
        "owned by the user"
    );
    assert_eq!(meta.mode() & 0o7777, 0o700);
    let tmp = std::fs::metadata(rootfs.join("tmp")).expect("/tmp");
    assert_eq!(tmp.mode() & 0o7777, 0o1777, "/tmp for check's scratch copy");

    // The metrics are on for the port the image exposes, on every interface (the test
    // overrides that: it binds only 127.0.0.1).
    let shipped = std::fs::read_to_string(rootfs.join("etc/kitesync/kitesync.toml"))
        .expect("the image's config");
    let shipped: toml_edit::DocumentMut = shipped.parse().expect("TOML");
    assert_eq!(shipped["metrics"]["enabled"].as_bool(), Some(true));
    assert_eq!(shipped["metrics"]["listen"].as_str(), Some("0.0.0.0:9187"));

    // The runtime's part: mount points, /etc/hosts, and the credentials as the docs say
    // (files readable by the image's user).
    std::fs::create_dir(rootfs.join("proc")).expect("/proc");
    std::fs::write(
        rootfs.join("etc/hosts"),
        format!("127.0.0.1 localhost {BUTLER_HOST}\n"),
    )
    .expect("/etc/hosts");
    for (file, secret) in [("buildkite-token", TOKEN), ("buildbutler-key", API_KEY)] {
        let path = rootfs.join("etc/kitesync").join(file);
        std::fs::write(&path, format!("{secret}\n")).expect("credential");
        std::os::unix::fs::chown(&path, Some(65532), Some(65532)).expect("chown");
    }

    let h = Harness::start().await;
    h.bk.set_builds(recent_builds(3));
    let env = environment(&h);

    // `check` (its scratch database in /tmp): the config the image ships, the environment
    // and the credential files are all it needs. That any run gets this far shows that the
    // image's CA bundle is found: without a CA store kitesync cannot build a client.
    let check = run_ok(&image, &rootfs, &env, &["check"]).await;

    // From here on /tmp is not the user's to write, as under `--read-only`: the daemon and
    // `--once` write to the volume alone.
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod /tmp");

    // `--once` delivers every build; the state is in the volume.
    let once = run_ok(&image, &rootfs, &env, &["--once"]).await;
    assert_eq!(h.bb.builds().len(), 3);
    let db = std::fs::metadata(volume.join("kitesync.db")).expect("the state in the volume");
    assert_eq!(db.uid(), 65532);
    assert_eq!(db.mode() & 0o777, 0o600);

    // The daemon (the entrypoint without arguments) continues where --once stopped:
    // only the two new builds are sent.
    h.bk.add_builds(data::finished_builds(
        ORG,
        4,
        2,
        chrono::Utc::now(),
        chrono::Duration::seconds(1),
    ));
    let mut daemon = container(&image, &rootfs, &env, &[])
        .spawn()
        .expect("daemon started");
    let stderr = capture_stderr(&mut daemon);
    let base = metrics_base(&stderr).await;
    until(|| h.bb.builds().len() == 5).await;
    assert_eq!(h.bb.build_posts(), 5, "no build sent twice");
    healthz_until(&base, 200).await;
    let metrics = format!("{base}/metrics");
    let scrape = until_some(|| async {
        get(&metrics).await.and_then(|(status, text)| {
            (status == 200 && sample(&text, "kitesync_builds_queued_total") == Some(2.0))
                .then_some(text)
        })
    })
    .await;
    assert!(
        scrape.contains("kitesync_items_delivered_total"),
        "{scrape}"
    );

    // SIGTERM to the container's PID 1 (what `podman stop` sends) stops it cleanly.
    let pid = pid_one(&daemon).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill ran");
    assert!(status.success());
    let end = tokio::time::timeout(DEADLINE, daemon.wait())
        .await
        .expect("stopped after SIGTERM")
        .expect("reaped");
    let log = log_text(&stderr);
    assert_eq!(end.code(), Some(0), "{log}");
    for output in [log.as_str(), &once.output(), &check.output()] {
        assert!(!output.contains(TOKEN) && !output.contains(API_KEY));
    }
}
