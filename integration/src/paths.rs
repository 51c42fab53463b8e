//! Where things are: the repository, test data, the kiln binary, shared tools.

use std::path::{Path, PathBuf};

/// The workspace root (parent of `integration/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration/ has a parent")
        .to_path_buf()
}

pub fn testdata_dir() -> PathBuf {
    repo_root().join("testdata")
}

/// `testdata/cases/NAME`, which must exist.
#[track_caller]
pub fn case_dir(name: &str) -> PathBuf {
    let d = testdata_dir().join("cases").join(name);
    assert!(d.is_dir(), "test case directory {} does not exist", d.display());
    d
}


/// The cargo target dir's profile dir (`target/debug`) this test binary was
/// built into, else `$CARGO_TARGET_DIR/debug`, else `<repo>/target/debug`.
fn profile_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        // target/debug/deps/e2e_hello-HASH
        if let Some(deps) = exe.parent() {
            if let Some(profile) = deps.parent() {
                dirs.push(profile.to_path_buf());
            }
        }
    }
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        let t = if t.is_absolute() { t } else { repo_root().join(t) };
        dirs.push(t.join("debug"));
    }
    dirs.push(repo_root().join("target").join("debug"));
    dirs
}

/// The `kiln` binary (`KILN_BIN` overrides). Fails loudly when missing.
#[track_caller]
pub fn kiln_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_BIN") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "KILN_BIN={} does not exist", p.display());
        return p;
    }
    let candidates: Vec<PathBuf> = profile_dirs().into_iter().map(|d| d.join("kiln")).collect();
    for c in &candidates {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "\n\nthe kiln binary was not found (looked at {:?});\nrun `cargo build -p kiln-builder` first \
         (scripts/setup.sh and scripts/test.sh do it)\n",
        candidates
    )
}

/// Find an executable: absolute/relative path as is, else search PATH and the
/// usual system dirs (PATH under sudo/CI may be minimal).
pub fn which(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exe(&p).then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .filter(|s| !s.is_empty())
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
        .map(|d| Path::new(d).join(program))
        .find(|p| is_exe(p));
    found
}
