//! Records the git commit the binary is built from, for `callgate --version`.
//! Without git or a `.git` (a source tarball), the commit is "unknown": the
//! build never fails for it.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CALLGATE_GIT_COMMIT");
    let commit = std::env::var("CALLGATE_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: HEAD itself (a worktree has its own) and the refs.
    for dir in ["--git-dir", "--git-common-dir"] {
        if let Some(dir) = git(&["rev-parse", dir]) {
            let dir = PathBuf::from(dir);
            for file in ["HEAD", "packed-refs"] {
                let path = dir.join(file);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
            if let Some(head) = git(&["symbolic-ref", "-q", "HEAD"]) {
                let path = dir.join(head);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
    }
    println!("cargo:rustc-env=CALLGATE_GIT_COMMIT={commit}");
}
