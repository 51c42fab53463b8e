//! The solver driven in-process, without the CLI or a user namespace: a
//! `FROM scratch` build with COPY and config instructions through
//! [`super::build`], checked in the OCI layout it writes, then rebuilt from the
//! cache into the same digest.

use std::path::Path;

use crate::options::{BuildOptions, Isolation, Output};

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout.join("blobs/sha256").join(digest.trim_start_matches("sha256:"))
}

/// Builds into `out` and returns the manifest digest from the layout's index.
fn build_into(ctx: &Path, state: &Path, out: &Path) -> String {
    let mut opts = BuildOptions::new(ctx.to_path_buf(), ctx.join("Dockerfile"), state.to_path_buf());
    // What `kiln build` chooses where no namespace can be made: no mounts, a
    // materialised rootfs.
    opts.isolation = Isolation::Chroot;
    opts.snapshotter = Some(kiln_snapshotter::SnapshotterKind::Native);
    opts.outputs = vec![Output::OciLayout { dest: out.to_path_buf() }];
    opts.source_date_epoch = Some(1_700_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(super::build(opts)).expect("build");
    let index = read_json(&out.join("index.json"));
    index["manifests"][0]["digest"].as_str().expect("manifest digest").to_string()
}

#[test]
fn scratch_copy_build_in_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ctx = dir.path().join("ctx");
    std::fs::create_dir_all(ctx.join("src/nested")).expect("mkdir");
    std::fs::write(ctx.join("src/a.txt"), "alpha\n").expect("write");
    std::fs::write(ctx.join("src/nested/b.txt"), "beta\n").expect("write");
    std::fs::write(ctx.join("src/skip.log"), "ignored\n").expect("write");
    std::fs::write(ctx.join(".dockerignore"), "**/*.log\n").expect("write");
    // Outside a user namespace only root may give files away: the files are
    // copied as the user running the test, which the layer must then record.
    let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nARG GREETING=hi\nENV GREETING=$GREETING\nWORKDIR /app\nCOPY --chown={uid}:{gid} src/ ./\nLABEL stage=in-process\nCMD [\"/app/a.txt\"]\n"
        ),
    )
    .expect("write");
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    let digest = build_into(&ctx, &state, &out);

    let manifest = read_json(&blob(&out, &digest));
    let config = read_json(&blob(&out, manifest["config"]["digest"].as_str().expect("config")));
    // BuildKit's default PATH first, as on any scratch image it configures.
    assert_eq!(
        config["config"]["Env"],
        serde_json::json!(["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hi"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/app");
    assert_eq!(config["config"]["Labels"]["stage"], "in-process");
    assert_eq!(config["config"]["Cmd"][0], "/app/a.txt");

    // Every file the layers hold, with its content: .dockerignore kept skip.log out.
    let mut files = std::collections::BTreeMap::new();
    for layer in manifest["layers"].as_array().expect("layers") {
        let f = std::fs::File::open(blob(&out, layer["digest"].as_str().expect("digest"))).expect("layer");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for e in tar.entries().expect("entries") {
            let mut e = e.expect("entry");
            if e.header().entry_type().is_file() {
                let name = e.path().expect("path").to_string_lossy().into_owned();
                let h = e.header();
                assert_eq!((h.uid().expect("uid"), h.gid().expect("gid")), (uid as u64, gid as u64), "{name}");
                let mut body = String::new();
                std::io::Read::read_to_string(&mut e, &mut body).expect("body");
                files.insert(name, body);
            }
        }
    }
    let expected: std::collections::BTreeMap<String, String> =
        [("app/a.txt", "alpha\n"), ("app/nested/b.txt", "beta\n")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(files, expected);

    // Same inputs, same state: every step from the cache, the same image.
    let again = build_into(&ctx, &state, &dir.path().join("out2"));
    assert_eq!(again, digest);
    // A changed context file changes the image.
    std::fs::write(ctx.join("src/a.txt"), "changed\n").expect("write");
    let changed = build_into(&ctx, &state, &dir.path().join("out3"));
    assert_ne!(changed, digest);
}
