//! End-to-end: `RUN --mount` under `--isolation chroot` (issue 14), as uid 0
//! without CAP_SYS_ADMIN (Kaniko's habitat, simulated with setpriv as in
//! e2e_isolation.rs): no mount(2), so kiln copies mounts into the rootfs and takes
//! them out before the layer is made. The same guarantees as with namespaces:
//! nothing of a mount in a layer, targets restored, secrets gone from disk.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_integration::bkcases::load_all;
use kiln_integration::cases::{layout_blobs_text, run_pool, Outcome};
use kiln_integration::{kiln_bin, run_with_timeout, seed_base_images, Image, Registry, RunOutput, Sandbox};

const SECRET: &str = "s3cr3t-value-that-must-never-leak";

/// `kiln ARGS` as root with CAP_SYS_ADMIN dropped, `--isolation chroot`, KILN_ROOT
/// in the sandbox.
fn chroot_kiln(sb: &Sandbox, args: &[String]) -> RunOutput {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--bounding-set=-sys_admin", "--inh-caps=-sys_admin", "--"])
        .arg(kiln_bin())
        .arg(&args[0])
        .args(["--isolation", "chroot"])
        .args(&args[1..])
        .env("KILN_ROOT", kiln_root(sb))
        .env("HOME", sb.path());
    run_with_timeout(&mut cmd, Duration::from_secs(300))
}

fn kiln_root(sb: &Sandbox) -> PathBuf {
    sb.path().join("root-state")
}

fn build(sb: &Sandbox, extra: &[String], layout: &Path, ctx: &Path) -> RunOutput {
    let mut args = vec!["build".to_string()];
    args.extend(extra.iter().cloned());
    args.push("--output".into());
    args.push(format!("type=oci,dest={}", layout.display()));
    args.push(ctx.display().to_string());
    chroot_kiln(sb, &args)
}

fn need_root() {
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test simulates a uid-0 pod: run the suite as root (scripts/test.sh does)");
}

/// Every file below `dir` that holds `needle` (skipping `except`).
fn files_holding(dir: &Path, needle: &[u8], except: &Path) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return hits };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
        if md.is_dir() {
            hits.extend(files_holding(&p, needle, except));
        } else if md.is_file() && p != except {
            if let Ok(b) = std::fs::read(&p) {
                if b.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p);
                }
            }
        }
    }
    hits
}

/// Nothing of the secret anywhere: not in the sandbox (KILN_ROOT, outputs,
/// scratch; the sandbox is in /tmp), nor /dev/shm, nor any blob.
fn assert_secret_gone(sb: &Sandbox, source: &Path) {
    let hits = files_holding(sb.path(), SECRET.as_bytes(), source);
    assert!(hits.is_empty(), "the secret stayed on disk: {hits:?}");
    let shm = files_holding(Path::new("/dev/shm"), SECRET.as_bytes(), source);
    assert!(shm.is_empty(), "the secret stayed in /dev/shm: {shm:?}");
}

/// BuildKit's own frontend tests for run mounts (testdata/buildkit: mount.txt,
/// secrets.txt, ssh.txt, the RUN heredocs, the cache-mount cases of cache.txt),
/// run under chroot isolation; a case's `then` rebuilds run too (their
/// `write`/`remove` edits and expectations; comparisons with earlier builds are
/// the namespace suite's). Left out, as they read /proc, which chroot isolation
/// has not: testMountEnvVar/allFields and testMountTmpfsSize (the mount table),
/// testRunComplexHeredoc (/proc/self/fd) (testdata/KNOWN_DIFFERENCES.md).
#[test]
fn buildkit_run_mount_cases_pass_under_chroot_isolation() {
    need_root();
    let registry = std::sync::Arc::new(Registry::start());
    seed_base_images(&registry);
    let host = registry.host();
    let cases = load_all(&host).unwrap_or_else(|e| panic!("testdata/buildkit: {e}"));
    let needs_proc = ["testMountEnvVar/allFields", "testMountTmpfsSize", "testRunComplexHeredoc"];
    let wanted = |file: &str, name: &str| {
        let all = ["mount.txt", "secrets.txt", "ssh.txt"].contains(&file);
        let some = (file == "heredoc.txt" && name.starts_with("testRun")) || (file == "cache.txt" && name.starts_with("testCacheMount"));
        (all || some) && !needs_proc.contains(&name)
    };
    let selected: Vec<_> = cases.into_iter().filter(|c| wanted(c.origin.split(':').next().unwrap_or(""), &c.name)).collect();
    assert!(selected.len() >= 30, "only {} cases selected", selected.len());
    let jobs = selected
        .into_iter()
        .map(|c| {
            let host = host.clone();
            let name = c.name.clone();
            let job: Box<dyn FnOnce() -> Outcome + Send> = Box::new(move || {
                let errs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&c, &host)))
                    .unwrap_or_else(|p| vec![format!("panicked: {:?}", p.downcast_ref::<String>())]);
                if errs.is_empty() { Outcome::Pass } else { Outcome::Fail(errs) }
            });
            (name, job)
        })
        .collect();
    let (_results, report, bad) = run_pool(jobs);
    println!("{report}");
    assert_eq!(bad, 0, "BuildKit run-mount cases failed under --isolation chroot:\n{report}");
}

fn run_case(c: &kiln_integration::bkcases::BkCase, host: &str) -> Vec<String> {
    let sb = Sandbox::new();
    let dir = sb.path().join("ctx").join(c.name.replace('/', "_"));
    c.materialize(&dir, host, None).unwrap_or_else(|e| panic!("{}: context: {e}", c.origin));
    let mut builds = vec![c.expect.clone()];
    let rebuilds = c.expect.then_builds().unwrap_or_else(|e| panic!("{}: {e}", c.origin));
    let mut errs = Vec::new();
    for (n, expect) in builds.drain(..).chain(rebuilds.iter().map(|r| r.expect.clone())).enumerate() {
        if n > 0 {
            let rb = &rebuilds[n - 1];
            for p in &rb.remove {
                let _ = std::fs::remove_file(dir.join(p));
            }
            for (p, data, _) in &rb.write {
                std::fs::write(dir.join(p), data).unwrap();
            }
        }
        let layout = sb.out_path(&format!("layout-{n}"));
        let out = build(&sb, &expect.kiln_args(&dir), &layout, &dir);
        let combined = out.combined();
        let mut e = expect.check_failure(out.status.success(), &out.stderr);
        e.extend(expect.check_output(&combined));
        if expect.expected_failure().is_none() && out.status.success() {
            e.extend(expect.check_image(&Image::from_layout(&layout, None), &layout, &combined));
        }
        if !e.is_empty() {
            let tail: Vec<&str> = out.stderr.lines().rev().take(12).collect::<Vec<_>>().into_iter().rev().collect();
            e.push(format!("kiln stderr (last lines):\n        {}", tail.join("\n        ")));
        }
        errs.extend(e.into_iter().map(|x| format!("build {n}: {x}")));
    }
    errs
}

/// Every mount type under chroot: what it shows the step, and that the image has
/// nothing of it; what a target held is restored (tree and layers); cache
/// content persists across builds (and `--no-cache` empties it); no secret byte
/// on disk afterwards.
#[test]
fn every_mount_type_works_and_leaves_nothing_behind() {
    need_root();
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let secret_sha: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(SECRET.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let dockerfile = format!(
        r#"FROM {base} AS tools
RUN mkdir -p /opt/tool && echo "from the tools stage" > /opt/tool/msg

FROM {base}
RUN mkdir -p /target/dir /var/cache/apt && echo orig > /target/dir/orig && echo origfile > /target/file && echo kept > /var/cache/apt/image-file
RUN --mount=type=bind,source=data,target=/target/dir,rw --mount=type=secret,id=token,target=/target/file sh -c 'cat /target/dir/file > /from-bind && ls /target/dir > /bind-list && echo scribble > /target/dir/new && wc -c < /target/file > /secret-len'
RUN --mount=type=bind,source=data,target=/target/dir sh -c 'echo scribble > /target/dir/ro-write; ls /target/dir > /ro-list'
RUN --mount=type=secret,id=token,env=TOKEN sh -c 'test "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = "{secret_sha}" && test ! -e /run/secrets/token && echo env-ok > /secret-env'
ARG BUST=1
RUN --mount=type=cache,target=/var/cache/apt,sharing=locked sh -c 'test ! -e /var/cache/apt/image-file && echo run >> /var/cache/apt/log; wc -l < /var/cache/apt/log > /cache-count'
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/tool cat /tool/msg > /from-stage
RUN --mount=type=cache,id=seeded,target=/seeded,from=tools,source=/opt/tool cat /seeded/msg > /from-cache-seed
RUN --mount=type=tmpfs,target=/scratch sh -c 'ls -A /scratch | wc -l > /tmpfs-first && echo hi > /scratch/x && stat -c %a /scratch > /tmpfs-mode'
RUN --mount=type=tmpfs,target=/scratch sh -c 'ls -A /scratch | wc -l > /tmpfs-again'
RUN --mount=type=bind,source=data,target=/new/deep/mnt cat /new/deep/mnt/file > /deep
RUN <<EOF
#!/bin/sh
echo "heredoc $((1+1))" > /heredoc-shebang
EOF
"#
    );
    let ctx = sb
        .new_context("mounts")
        .file("Dockerfile", dockerfile)
        .file("data/file", "bound from the context\n")
        .file("secret.txt", SECRET)
        .build();
    let secret_src = ctx.join("secret.txt");
    let secret_arg = vec!["--secret".to_string(), format!("id=token,src={}", secret_src.display())];
    let layout = sb.out_path("layout");
    let out = build(&sb, &secret_arg, &layout, &ctx);
    assert!(out.status.success(), "{out}");
    assert!(!out.combined().contains(SECRET), "the secret was printed\n{out}");

    let img = Image::from_layout(&layout, None);
    let t = &img.tree;
    assert_eq!(t.node("/from-bind").text(), "bound from the context\n");
    assert_eq!(t.node("/bind-list").text(), "file\n");
    assert_eq!(t.node("/ro-list").text(), "file\nro-write\n", "a read-only bind is a copy here (KNOWN_DIFFERENCES)");
    assert_eq!(t.node("/secret-len").text().trim(), SECRET.len().to_string());
    assert_eq!(t.node("/secret-env").text(), "env-ok\n");
    assert_eq!(t.node("/cache-count").text(), "1\n");
    assert_eq!(t.node("/from-stage").text(), "from the tools stage\n");
    assert_eq!(t.node("/from-cache-seed").text(), "from the tools stage\n");
    assert_eq!(t.node("/tmpfs-first").text(), "0\n");
    assert_eq!(t.node("/tmpfs-mode").text(), "1777\n");
    assert_eq!(t.node("/tmpfs-again").text(), "0\n", "a tmpfs starts empty every time");
    assert_eq!(t.node("/deep").text(), "bound from the context\n");
    assert_eq!(t.node("/heredoc-shebang").text(), "heredoc 2\n");

    // The targets hold what they held before, from the layer that made it.
    assert_eq!(t.node("/target/file").text(), "origfile\n");
    assert_eq!(t.children_of("/target/dir"), ["/target/dir/orig"]);
    assert_eq!(t.node("/var/cache/apt/image-file").text(), "kept\n");
    t.assert_absent("/var/cache/apt/log");
    let made = t.node("/target/dir/orig").layer;
    for p in ["/target", "/target/dir", "/target/file", "/var/cache/apt", "/var/cache/apt/image-file"] {
        assert_eq!(t.node(p).layer, made, "{p} comes from the layer that made it");
    }
    for p in ["/run", "/tool", "/seeded", "/scratch", "/new", "/dev/pipes"] {
        t.assert_absent(p);
    }
    // Layer by layer: the RUNs with mounts wrote only their own output files.
    let outputs: BTreeSet<&str> = [
        "/from-bind", "/bind-list", "/ro-list", "/secret-len", "/secret-env", "/cache-count", "/from-stage",
        "/from-cache-seed", "/tmpfs-first", "/tmpfs-mode", "/tmpfs-again", "/deep", "/heredoc-shebang",
    ]
    .into();
    let stray: Vec<(usize, String)> =
        img.all_layer_entries().into_iter().filter(|(i, e)| *i > made && !outputs.contains(e.as_str()) && e != "/").collect();
    assert!(stray.is_empty(), "mount RUNs left more than their outputs in their layers: {stray:?}");
    assert!(!ctx.join("data/new").exists() && !ctx.join("data/ro-write").exists(), "a bind must not write to the context");
    for (blob, text) in layout_blobs_text(&layout) {
        assert!(!text.contains(SECRET), "the secret is in blob {}", blob.display());
    }
    assert_secret_gone(&sb, &secret_src);

    // The cache persists: a rebuild of the cache step sees the first build's line...
    let mut again = secret_arg.clone();
    again.extend(["--build-arg".to_string(), "BUST=2".to_string()]);
    let layout2 = sb.out_path("layout2");
    let out = build(&sb, &again, &layout2, &ctx);
    assert!(out.status.success(), "{out}");
    assert_eq!(Image::from_layout(&layout2, None).tree.node("/cache-count").text(), "2\n", "the cache mount kept the first build's write");
    // ...and --no-cache empties it, as BuildKit (moby/buildkit#5305).
    again.push("--no-cache".into());
    let layout3 = sb.out_path("layout3");
    let out = build(&sb, &again, &layout3, &ctx);
    assert!(out.status.success(), "{out}");
    assert_eq!(Image::from_layout(&layout3, None).tree.node("/cache-count").text(), "1\n");
    assert_secret_gone(&sb, &secret_src);
}

/// A step that fails with mounts: no secret byte left anywhere, the cache keeps
/// what the step wrote (as BuildKit's cache mounts do), no stash or rootfs left in
/// KILN_ROOT, and the next build of the fixed step sees the target as it was.
#[test]
fn a_failing_step_leaves_no_secret_and_keeps_the_target() {
    need_root();
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let step = |fail: &str| {
        format!(
            "FROM {base}\nRUN mkdir -p /target && echo orig > /target/keep\n\
             RUN --mount=type=secret,id=token,target=/target/keep --mount=type=secret,id=token,env=TOKEN \
             --mount=type=cache,id=failcache,target=/c --mount=type=bind,source=.,target=/target/ctx \
             sh -c 'cat /target/keep > /dev/null && echo \"$TOKEN\" > /dev/null && ls /c > /seen && echo partial >> /c/written && cat /target/keep >> /target/ctx/leak; {fail}'\n"
        )
    };
    let ctx = sb.new_context("fail").file("Dockerfile", step("exit 3")).file("secret.txt", SECRET).build();
    let secret_src = ctx.join("secret.txt");
    let secret_arg = vec!["--secret".to_string(), format!("id=token,src={}", secret_src.display())];
    let out = build(&sb, &secret_arg, &sb.out_path("failed"), &ctx);
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("exit code: 3"), "{out}");
    assert!(!out.combined().contains(SECRET), "the secret was printed\n{out}");
    assert_secret_gone(&sb, &secret_src);
    let active = kiln_root(&sb).join("snapshots/active");
    let left: Vec<_> = std::fs::read_dir(&active).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "the failed step's rootfs or stash stayed: {left:?}");

    std::fs::write(ctx.join("Dockerfile"), step("true")).unwrap();
    let layout = sb.out_path("layout");
    let out = build(&sb, &secret_arg, &layout, &ctx);
    assert!(out.status.success(), "{out}");
    let t = Image::from_layout(&layout, None).tree;
    assert_eq!(t.node("/seen").text(), "written\n", "the cache kept the failed step's write");
    assert_eq!(t.node("/target/keep").text(), "orig\n");
    assert_eq!(t.children_of("/target"), ["/target/keep"]);
    assert!(t.node("/target/keep").layer < t.node("/seen").layer, "the secret's target is not in the RUN's layer");
    assert!(!ctx.join("leak").exists());
    assert_secret_gone(&sb, &secret_src);
}

/// `RUN --mount=type=ssh` under chroot: the relay socket is at the target in the
/// rootfs, with the mount's mode and owner, and gone after the step.
#[test]
fn an_ssh_agent_is_relayed_into_the_chroot() {
    need_root();
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let sock = sb.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let ctx = sb
        .new_context("ssh")
        .file(
            "Dockerfile",
            format!("FROM {base}\nRUN --mount=type=ssh,mode=741,uid=100,gid=102 stat -c '%a %u %g %F' $SSH_AUTH_SOCK > /params && echo $SSH_AUTH_SOCK > /where\n"),
        )
        .build();
    let layout = sb.out_path("layout");
    let out = build(&sb, &["--ssh".into(), format!("default={}", sock.display())], &layout, &ctx);
    assert!(out.status.success(), "{out}");
    let t = Image::from_layout(&layout, None).tree;
    assert_eq!(t.node("/params").text(), "741 100 102 socket\n");
    assert_eq!(t.node("/where").text(), "/run/buildkit/ssh_agent.0\n");
    t.assert_absent("/run");
}

/// Two stages that may run at once use one cache: under chroot the cache
/// directory is moved into one step's rootfs at a time, so `locked` and `shared`
/// steps take turns (never both inside), and no write is lost.
#[test]
fn steps_sharing_a_cache_take_turns_and_lose_nothing() {
    need_root();
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let writer = |name: &str, sharing: &str| {
        format!(
            "FROM {base} AS {name}\n\
             RUN --mount=type=cache,id=par,target=/c{sharing} sh -c 'test ! -e /c/busy && touch /c/busy && \
             for i in 1 2 3 4 5 6 7 8 9 10; do echo {name}$i >> /c/log; sleep 0.05; done; rm /c/busy'\n"
        )
    };
    let dockerfile = format!(
        "{}{}{}FROM {base}\nCOPY --from=a /etc/passwd /a\nCOPY --from=b /etc/passwd /b\nCOPY --from=c /etc/passwd /c\n\
         RUN --mount=type=cache,id=par,target=/cache,sharing=private sort /cache/log | tr '\\n' ' ' > /lines\n",
        writer("a", ",sharing=locked"),
        writer("b", ""),
        writer("c", ",sharing=locked"),
    );
    let ctx = sb.new_context("par").file("Dockerfile", dockerfile).build();
    let layout = sb.out_path("layout");
    let out = build(&sb, &[], &layout, &ctx);
    assert!(out.status.success(), "{out}");
    let lines = Image::from_layout(&layout, None).tree.node("/lines").text();
    let mut want: Vec<String> = ["a", "b", "c"].iter().flat_map(|n| (1..=10).map(move |i| format!("{n}{i}"))).collect();
    want.sort();
    assert_eq!(lines, format!("{} ", want.join(" ")));
}
