//! End-to-end: COPY and ADD semantics (issue 6): .dockerignore, --exclude, heredoc
//! COPY, --chown/--chmod, ADD of local archives and of URLs with --checksum.

use std::io::{Read, Write};
use std::net::TcpListener;

use kiln_integration::gitdaemon::{git, GitDaemon};
use kiln_integration::{seed_base_images, Image, Kind, Registry, Sandbox};

/// Serve `body` to every GET on a free loopback port, in a thread, for the test.
fn serve(body: &'static [u8]) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming().take(16) {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: Tue, 14 Nov 2023 22:13:20 GMT\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(body);
        }
    });
    format!("http://{addr}")
}

fn sha256(b: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A small tar.gz with one file and one directory, made in the test.
fn tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path("pkg/").unwrap();
    h.set_mode(0o755);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, &[][..]).unwrap();
    let data = b"from the archive\n";
    let mut h = tar::Header::new_ustar();
    h.set_path("pkg/file.txt").unwrap();
    h.set_mode(0o640);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn copy_and_add_semantics() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    static PAYLOAD: &[u8] = b"downloaded payload\n";
    let url = format!("{}/files/payload.txt", serve(PAYLOAD));
    let dockerfile = format!(
        r#"FROM {base}
ARG NAME=kiln
COPY . /ctx/
COPY --exclude=*.log logs/ /logs/
COPY <<EOF /etc/greeting
hello $NAME
EOF
COPY --chown=app:app --chmod=0750 a.txt /owned/a.txt
ADD pkg.tar.gz /unpacked/
ADD a.txt /added/
ADD --checksum=sha256:{sum} {url} /downloads/
COPY --parents src/a/f.txt src/b /p/
COPY --chmod=u+x,go-w a.txt /sym/a.txt
"#,
        sum = sha256(PAYLOAD)
    );
    let ctx = sb
        .new_context("copyadd")
        .file("Dockerfile", dockerfile)
        .file(".dockerignore", "*.md\nsecret\n!secret/keep\npkg.tar.gz.unused\n")
        .file("a.txt", "a\n")
        .file("b.md", "ignored\n")
        .file("docs/x.md", "kept: *.md matches only at the top\n")
        .file("secret/keep", "re-included\n")
        .file("secret/other", "excluded\n")
        .file("logs/app.log", "excluded by --exclude\n")
        .file("logs/readme", "kept\n")
        .file("pkg.tar.gz", tarball())
        .file("src/a/f.txt", "fa\n")
        .file("src/b/g.txt", "gb\n")
        .build();
    let layout = sb.out_path("layout");
    let out = sb.kiln().build().output_oci(&layout).arg(&ctx).run();
    out.assert_success();
    let img = Image::from_layout(&layout, None);
    let t = &img.tree;
    // .dockerignore
    t.assert_file("/ctx/a.txt", 0o644, 0, 0, "a\n");
    t.assert_absent("/ctx/b.md");
    t.assert_file("/ctx/docs/x.md", 0o644, 0, 0, "kept: *.md matches only at the top\n");
    t.assert_file("/ctx/secret/keep", 0o644, 0, 0, "re-included\n");
    t.assert_absent("/ctx/secret/other");
    // --exclude
    t.assert_file("/logs/readme", 0o644, 0, 0, "kept\n");
    t.assert_absent("/logs/app.log");
    // heredoc COPY, expanded with the ARG
    t.assert_file("/etc/greeting", 0o644, 0, 0, "hello kiln\n");
    // --chown with names from the image's /etc/passwd, --chmod
    t.assert_file("/owned/a.txt", 0o750, 1000, 1000, "a\n");
    // ADD: a local archive is extracted, keeping its owners; a plain file is copied
    t.assert_entry("/unpacked/pkg", Kind::Dir, 0o755, 1000, 1000);
    t.assert_file("/unpacked/pkg/file.txt", 0o640, 1000, 1000, "from the archive\n");
    t.assert_absent("/unpacked/pkg.tar.gz");
    t.assert_file("/added/a.txt", 0o644, 0, 0, "a\n");
    // ADD from a URL: named after the URL's last segment, mode 0600
    t.assert_file("/downloads/payload.txt", 0o600, 0, 0, "downloaded payload\n");
    // --parents keeps the source paths; symbolic --chmod applies to the file's mode
    t.assert_file("/p/src/a/f.txt", 0o644, 0, 0, "fa\n");
    t.assert_file("/p/src/b/g.txt", 0o644, 0, 0, "gb\n");
    t.assert_file("/sym/a.txt", 0o744, 0, 0, "a\n");
}

#[test]
fn add_url_with_wrong_checksum_fails() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    static PAYLOAD: &[u8] = b"tampered\n";
    let url = format!("{}/x.bin", serve(PAYLOAD));
    let wrong = "0".repeat(64);
    let ctx = sb
        .new_context("badsum")
        .file("Dockerfile", format!("FROM {base}\nADD --checksum=sha256:{wrong} {url} /x.bin\n"))
        .build();
    let out = sb.kiln().build().arg(&ctx).run();
    out.assert_failure_containing("checksum mismatch");
    out.assert_stderr_contains("step 2/2");
}

#[test]
fn missing_and_ignored_sources_are_clear_errors() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("missing")
        .file("Dockerfile", format!("FROM {base}\nCOPY nothere.txt /\n"))
        .build();
    sb.kiln().build().arg(&ctx).run().assert_failure_containing("\"nothere.txt\" not found in the build context");
    let ctx = sb
        .new_context("ignored")
        .file("Dockerfile", format!("FROM {base}\nCOPY hidden.txt /\n"))
        .file(".dockerignore", "hidden.txt\n")
        .file("hidden.txt", "x")
        .build();
    sb.kiln().build().arg(&ctx).run().assert_failure_containing("excluded by .dockerignore");
}

/// The repository ADD reads: `README` in two versions (tag `v1` on the first), `sub/`.
fn git_daemon() -> GitDaemon {
    let d = GitDaemon::start();
    let work = d.work_tree("repo", &[("README", "version one\n"), ("sub/inner.txt", "inner\n")]);
    git(&work, &["tag", "v1"]);
    std::fs::write(work.join("README"), "version two\n").unwrap();
    git(&work, &["commit", "-q", "-am", "two"]);
    d.publish("repo");
    d
}

#[test]
fn add_from_a_git_repository() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let daemon = git_daemon();
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let repo = format!("git://127.0.0.1:{}/repo.git", daemon.port);
    let ctx = sb
        .new_context("git")
        .file("Dockerfile", format!("FROM {base}\nADD {repo}#v1 /tagged/\nADD {repo}#main:sub /sub/\nADD --keep-git-dir=true {repo} /full/\n"))
        .build();
    let layout = sb.out_path("layout");
    let out = sb.kiln().build().output_oci(&layout).arg(&ctx).run();
    out.assert_success();
    let t = Image::from_layout(&layout, None).tree;
    t.assert_file("/tagged/README", 0o644, 0, 0, "version one\n");
    t.assert_absent("/tagged/.git");
    t.assert_file("/sub/inner.txt", 0o644, 0, 0, "inner\n");
    t.assert_absent("/sub/README");
    t.assert_file("/full/README", 0o644, 0, 0, "version two\n");
    assert!(t.contains("/full/.git/HEAD"), "--keep-git-dir keeps .git");

    // An unreachable repository is an error naming it.
    let ctx = sb.new_context("gitbad").file("Dockerfile", format!("FROM {base}\nADD git://127.0.0.1:1/nothing.git /x/\n")).build();
    sb.kiln().build().arg(&ctx).run().assert_failure_containing("git clone failed");
}
