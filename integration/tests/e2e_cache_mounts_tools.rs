//! Real package managers with cache mounts that travel with the registry cache
//! (issue 17, part 1): `testdata/cachemounts` runs `pip install`, `npm ci` and
//! `cargo build` (Debian's cargo, crates.io's sparse index), each with a
//! `RUN --mount=type=cache` and its HTTPS through its own counting proxy. Runner A
//! fills the caches from PyPI, npm and crates.io and exports them
//! (`--cache-to …,cache-mounts=true`); runner B (a fresh KILN_ROOT, a changed source
//! file, so every tool step runs again) restores them from `--cache-from` and must
//! download (almost) nothing again — the proxies' byte counts say so, not kiln.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_integration::connectproxy::ConnectProxy;
use kiln_integration::registry::seed_debian_image;
use kiln_integration::{paths, Registry, RunOutput, Sandbox};

const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";

fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap().flatten() {
        let (s, d) = (e.path(), dst.join(e.file_name()));
        if s.is_dir() {
            copy_tree(&s, &d);
        } else {
            fs::copy(&s, &d).unwrap();
        }
    }
}

/// `testdata/cachemounts` in the sandbox, pointed at `registry`, with the host's CAs
/// in certs/ and `rev` in rev.txt.
fn context(sb: &Sandbox, registry: &Registry, rev: &str) -> PathBuf {
    let dst = sb.path().join("ctx").join("cachemounts");
    copy_tree(&paths::testdata_dir().join("cachemounts"), &dst);
    let df = fs::read_to_string(dst.join("Dockerfile")).unwrap();
    fs::write(dst.join("Dockerfile"), df.replace("127.0.0.1:5000", &registry.host())).unwrap();
    fs::write(dst.join("rev.txt"), rev).unwrap();
    fs::create_dir_all(dst.join("certs")).unwrap();
    for e in fs::read_dir(HOST_CA_DIR).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "crt") {
            fs::copy(e.path(), dst.join("certs").join(e.file_name())).unwrap();
        }
    }
    sb.user.chown_tree(sb.path());
    dst
}

struct Proxies {
    pip: ConnectProxy,
    npm: ConnectProxy,
    cargo: ConnectProxy,
}

impl Proxies {
    fn bytes(&self) -> [u64; 3] {
        [self.pip.bytes_down(), self.npm.bytes_down(), self.cargo.bytes_down()]
    }
}

fn build(sb: &Sandbox, registry: &Registry, p: &Proxies, rev: &str, dest: &Path) -> RunOutput {
    let cache = registry.reference("cache/tools:c");
    sb.kiln()
        .build()
        .args(["--progress", "plain"])
        .build_arg("PIP_PROXY", &p.pip.url())
        .build_arg("NPM_PROXY", &p.npm.url())
        .build_arg("CARGO_PROXY", &p.cargo.url())
        .args(["--cache-from", &format!("type=registry,ref={cache}")])
        .args(["--cache-to", &format!("type=registry,ref={cache},mode=max,cache-mounts=true")])
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .arg(context(sb, registry, rev))
        .timeout(Duration::from_secs(1200))
        .run()
}

#[test]
fn pip_npm_and_cargo_download_nothing_again_on_a_fresh_runner() {
    let registry = Registry::start();
    seed_debian_image(&registry);
    let p = Proxies { pip: ConnectProxy::start(), npm: ConnectProxy::start(), cargo: ConnectProxy::start() };

    let a = Sandbox::new();
    let out = build(&a, &registry, &p, "v1", &a.out_path("rootfs"));
    out.assert_success();
    let first = p.bytes();
    eprintln!("runner A downloaded (pip, npm, cargo): {first:?} bytes; tunnels {:?} {:?} {:?}", p.pip.tunnels(), p.npm.tunnels(), p.cargo.tunnels());
    // What the tools fetch (wheels, tarballs, crates and their index entries).
    assert!(first[0] > 300_000 && first[1] > 200_000 && first[2] > 80_000, "the tools did not download through their proxies: {first:?}\n{out}");

    let b = Sandbox::new();
    let dest = b.out_path("rootfs");
    let out = build(&b, &registry, &p, "v2", &dest);
    out.assert_success();
    let text = out.combined();
    for id in ["/root/.cache/pip", "/root/.npm", "/root/.cargo/registry"] {
        assert!(text.contains(&format!("restored cache mount {id:?}")), "{id} not restored:\n{out}");
    }
    let again: Vec<u64> = p.bytes().iter().zip(first).map(|(now, before)| now - before).collect();
    eprintln!("runner B downloaded (pip, npm, cargo): {again:?} bytes");
    for (i, tool) in ["pip", "npm", "cargo"].iter().enumerate() {
        assert!(again[i] * 10 < first[i], "{tool} downloaded {} of its {} bytes again on the fresh runner:\n{out}", again[i], first[i]);
    }
    // And the tools did their work from the restored caches.
    assert!(dest.join("app/node_modules/lodash/package.json").is_file());
    assert!(fs::read_dir(dest.join("opt/venv/lib")).unwrap().flatten().any(|d| d.path().join("site-packages/requests").is_dir()));
    let hello = std::process::Command::new(dest.join("usr/local/bin/hello")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&hello.stdout).trim(), "hello 22", "the crate built on runner B runs");
}
