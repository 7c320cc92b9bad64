//! The operator's side, through the real binary: `check-config` answers,
//! `--print`, `--version`, and log output to a pipe.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary, with no callgate or log settings inherited from the caller.
fn callgate() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_callgate"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (name, _) in std::env::vars() {
        if name.starts_with("CALLGATE") || name == "RUST_LOG" || name == "NO_COLOR" {
            cmd.env_remove(name);
        }
    }
    cmd
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[test]
fn check_config_reports_a_bad_listen_and_a_bad_log_format_together() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "c.toml",
        "[server]\nlisten = \"not-an-address\"\n[log]\nformat = \"xml\"\n",
    );
    let out = callgate()
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let name = file.display().to_string();
    assert!(text.contains(&format!("{name}: server.listen: ")), "{text}");
    assert!(text.contains(&format!("{name}: log.format: ")), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn check_config_reports_a_short_secret_once() {
    let out = callgate()
        .arg("check-config")
        .env("CALLGATE_JWT_SECRET", "short-but-secret")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert_eq!(
        text.trim(),
        "CALLGATE_JWT_SECRET: auth.jwt_secret: is shorter than 32 bytes; set CALLGATE_JWT_SECRET to at least 32 random bytes"
    );
}

#[test]
fn check_config_names_the_file_of_a_toml_syntax_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "broken.toml", "[server\n");
    let policy = write(dir.path(), "broken-policy.toml", "[calls]\nbusy = \n");
    let out = callgate()
        .args(["check-config", "--config"])
        .arg(&file)
        .arg("--policy")
        .arg(&policy)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for name in [&file, &policy] {
        let start = format!("{}: is not valid TOML at line ", name.display());
        assert!(
            text.lines().any(|l| l.starts_with(&start)),
            "{start}\n{text}"
        );
    }
    assert!(!text.contains("config:"), "{text}");
}

#[test]
fn check_config_refuses_zero_limits_that_would_refuse_everyone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(
        dir.path(),
        "p.toml",
        "[connections]\nmax_per_user = 0\n[rate_limits]\ncall_initiate = { per_minute = 0, burst = 0 }\n",
    );
    let out = callgate()
        .args(["check-config", "--policy"])
        .arg(&policy)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    for key in [
        "connections.max_per_user",
        "rate_limits.call_initiate.per_minute",
        "rate_limits.call_initiate.burst",
    ] {
        assert!(
            text.contains(&format!("{}: {key}: is 0, must be 1 to ", policy.display())),
            "{key}\n{text}"
        );
    }
}

#[test]
fn check_config_print_shows_the_effective_settings_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = write(dir.path(), "p.toml", "[calls]\nring_timeout_secs = 20\n");
    let secret = "a-long-and-very-secret-signing-key-0123456789";
    let out = callgate()
        .args(["check-config", "--print", "--policy"])
        .arg(&policy)
        .env("CALLGATE_JWT_SECRET", secret)
        .env("CALLGATE_MONGODB_URI", "mongodb://user:mongo-password@db")
        .output()
        .expect("runs");
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for want in [
        "ring_timeout_secs = 20",
        "ringing_grace_secs = 5",
        "max_per_user = 10",
        "jwt_secret = \"<redacted>\"",
        "uri = \"<redacted>\"",
        "listen = \"127.0.0.1:4000\"",
        "configuration and policy are valid",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    assert!(
        !text.contains(secret) && !text.contains("mongo-password"),
        "{text}"
    );
    // The printout is TOML: an operator can start from it.
    let body: String = text
        .lines()
        .take_while(|l| !l.starts_with("# effective policy"))
        .collect::<Vec<_>>()
        .join("\n");
    toml::from_str::<toml::Table>(&body).expect("the configuration printout is TOML");
}

#[test]
fn version_prints_the_version_and_the_commit() {
    let out = callgate().arg("--version").output().expect("runs");
    assert!(out.status.success());
    let text = stdout(&out);
    let version = env!("CARGO_PKG_VERSION");
    let commit = text
        .trim()
        .strip_prefix(&format!("callgate {version} (commit "))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("unexpected --version: {text}"));
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "built from this checkout"),
        None => assert_eq!(commit, "unknown", "no git here"),
    }
}

/// Starts the server with `env`, collects its log lines until it listens, stops it.
fn startup_log(env: &[(&str, &str)]) -> Vec<String> {
    let mut child = callgate()
        .args(["--listen", "127.0.0.1:0"])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.contains("callgate listening");
        lines.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        lines.iter().any(|l| l.contains("callgate listening")),
        "the server did not start:\n{}",
        lines.join("\n")
    );
    lines
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let lines = startup_log(&[]);
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{:?}", lines);
    // An explicit setting still colours (so the check above can fail).
    let coloured = startup_log(&[("CALLGATE__LOG__COLOR", "always")]);
    assert!(
        coloured.iter().any(|l| l.contains("\u{1b}[")),
        "{coloured:?}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_without_colour() {
    let lines = startup_log(&[
        ("CALLGATE__LOG__FORMAT", "json"),
        ("CALLGATE__LOG__COLOR", "always"),
    ]);
    for line in &lines {
        assert!(!line.contains('\u{1b}'), "{line}");
        let event: serde_json::Value =
            serde_json::from_str(line).expect("one JSON object per line");
        assert!(
            event["level"].is_string() && event["fields"].is_object(),
            "{line}"
        );
    }
}

#[test]
fn the_build_script_says_unknown_without_git_instead_of_failing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("build-script");
    let built = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--edition", "2024", "-o"])
        .arg(&exe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("build.rs"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("rustc runs");
    assert!(built.success());
    // No git on the PATH, and no repository around it: a source tarball.
    let out = Command::new(&exe)
        .env_clear()
        .env("PATH", dir.path())
        .current_dir(dir.path())
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).contains("cargo:rustc-env=CALLGATE_GIT_COMMIT=unknown"),
        "{}",
        stdout(&out)
    );
}
