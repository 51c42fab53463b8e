//! Hostile RUN steps and Dockerfiles (issue 19), end to end as the unprivileged
//! build user: what a step can see of the context, what ADD may clone, what a step
//! can do to kiln's own output, and what is left after the user's kiln is killed.
//! Each case failed before its fix.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_integration::registry::seed_base_images;
use kiln_integration::{Registry, Sandbox};

fn busybox(registry: &Registry) -> String {
    format!("{}/base/busybox:latest", registry.host())
}

/// BuildKit never sends `.dockerignore`d files to the solver, so no step sees them;
/// a bind mount of the context in kiln showed them (`.env`, keys) and a RUN could
/// copy them into a layer.
#[test]
fn bind_mounts_of_the_context_do_not_show_ignored_files() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!(
        "FROM {}\n\
         RUN --mount=type=bind,target=/ctx find /ctx | sort > /ro.txt\n\
         RUN --mount=type=bind,target=/c,rw find /c | sort > /rw.txt && cat /c/.env >> /rw.txt 2>&1 || true\n\
         RUN --mount=type=bind,source=sub,target=/s find /s | sort > /sub.txt\n",
        busybox(&registry)
    );
    let ctx = sb
        .new_context("ignored-binds")
        .file("Dockerfile", df)
        .file(".dockerignore", ".env\nkeys\nsub/*.pem\n")
        .file(".env", "TOKEN=hunter2-value\n")
        .file("keys/id_rsa", "PRIVATE KEY hunter2-value\n")
        .file("app.txt", "app\n")
        .file("sub/cert.pem", "hunter2-value\n")
        .file("sub/keep.txt", "keep\n")
        .build();
    let out = sb.out_path("out");
    sb.kiln().build().arg("--output").arg(format!("type=local,dest={}", out.display())).arg(&ctx).timeout(Duration::from_secs(120)).run().assert_success();
    let ro = fs::read_to_string(out.join("ro.txt")).unwrap();
    assert!(ro.contains("/ctx/app.txt") && ro.contains("/ctx/sub/keep.txt") && ro.contains("/ctx/Dockerfile"), "{ro}");
    for (name, text) in [("ro", &ro), ("rw", &fs::read_to_string(out.join("rw.txt")).unwrap()), ("sub", &fs::read_to_string(out.join("sub.txt")).unwrap())] {
        assert!(!text.contains(".env") || name == "rw", "{name}: {text}");
        assert!(!text.contains("keys") && !text.contains("cert.pem") && !text.contains("hunter2"), "{name} saw an ignored file: {text}");
    }
    // The view is gone with the build, and the context is as it was.
    assert_eq!(fs::read_dir(sb.kiln_root().join("tmp")).map(|r| r.count()).unwrap_or(0), 0);
    assert!(ctx.join(".env").is_file() && ctx.join("keys/id_rsa").is_file());
}

fn git(dir: &Path, args: &[&str]) {
    let st = std::process::Command::new("git").args(args).current_dir(dir).env("GIT_CONFIG_GLOBAL", "/dev/null").status().unwrap();
    assert!(st.success(), "git {args:?}");
}

/// A bare repository on the host, readable by everyone, holding `secret.txt`.
fn host_repo(at: &Path) -> PathBuf {
    let work = at.join("work");
    fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "main"]);
    fs::write(work.join("secret.txt"), "host-repo-content\n").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "x"]);
    git(at, &["clone", "-q", "--bare", "work", "repo.git"]);
    std::process::Command::new("chmod").args(["-R", "a+rX"]).arg(at).status().unwrap();
    at.join("repo.git")
}

/// BuildKit's ParseGitRef takes only remote forms as git; everything else is a
/// context path. kiln cloned `/abs/repo.git` and `file://` URLs from the host.
#[test]
fn add_never_clones_a_repository_of_the_host() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let hostdir = sb.path().join("hostgit");
    let repo = host_repo(&hostdir);
    for src in [repo.display().to_string(), format!("file://{}", repo.display()), format!("{}#main", repo.display())] {
        let df = format!("FROM {}\nADD {src} /r/\n", busybox(&registry));
        let ctx = sb.new_context(&format!("hostgit-{}", src.len())).file("Dockerfile", df).build();
        let out = sb.out_path(&format!("hostgit-{}", src.len()));
        let run = sb.kiln().build().arg("--output").arg(format!("type=local,dest={}", out.display())).arg(&ctx).run();
        run.assert_failure();
        assert!(!run.combined().contains("panicked"), "{run}");
        assert!(!out.join("r/secret.txt").exists(), "ADD {src} cloned the host's repository");
    }
    // A directory named *.git inside the context is a directory like any other.
    let df = format!("FROM {}\nADD vendored.git /v/\n", busybox(&registry));
    let ctx = sb.new_context("vendored").file("Dockerfile", df).file("vendored.git/HEAD.txt", "in-context\n").build();
    let out = sb.out_path("vendored");
    sb.kiln().build().arg("--output").arg(format!("type=local,dest={}", out.display())).arg(&ctx).run().assert_success();
    assert_eq!(fs::read_to_string(out.join("v/HEAD.txt")).unwrap(), "in-context\n");
}

/// With kiln's output going to a file (a CI log), a step that opened
/// `/proc/self/fd/1` with O_TRUNC truncated that host file. A step writes to its
/// own pipes; the log keeps every line.
#[test]
fn a_step_cannot_truncate_the_log_kiln_writes_to() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!(
        "FROM {}\nRUN echo first-step-line-aaa\nRUN : > /proc/self/fd/1; : > /proc/self/fd/2; : > /dev/stdout; echo second-step-line-bbb\n",
        busybox(&registry)
    );
    let ctx = sb.new_context("trunc").file("Dockerfile", df).build();
    let log = sb.path().join("ci.log");
    let file = fs::File::create(&log).unwrap();
    let mut cmd = sb.kiln().build().arg("--progress").arg("plain").arg(&ctx).into_command();
    cmd.stdout(file.try_clone().unwrap()).stderr(file);
    let st = cmd.status().unwrap();
    let text = fs::read(&log).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(st.success(), "{text}");
    assert!(!text.contains('\0'), "the log was truncated under kiln (NUL-filled hole):\n{text}");
    let first = text.find("first-step-line-aaa").unwrap_or_else(|| panic!("the first step's line is gone:\n{text}"));
    let second = text.find("second-step-line-bbb").unwrap_or_else(|| panic!("{text}"));
    assert!(first < second, "{text}");
}

fn shm_dirs_holding(value: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in fs::read_dir("/dev/shm").unwrap().flatten() {
        if !e.file_name().to_string_lossy().starts_with("kiln-secrets-") {
            continue;
        }
        let holds = fs::read_dir(e.path()).into_iter().flatten().flatten().any(|f| fs::read_to_string(f.path()).is_ok_and(|t| t.contains(value)));
        if holds {
            found.push(e.path());
        }
    }
    found
}

fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

/// A cancelled CI job SIGKILLs the kiln it started. Its namespaced child went on,
/// finished the build and pushed. Now everything kiln started dies with it, nothing
/// is pushed, and the secret staged for the step (left by the kill) is removed by
/// `kiln prune`, as the rest of the killed build's scratch.
#[test]
fn a_killed_kiln_stops_building_and_its_secrets_are_cleaned_up() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let marker = format!("pdeathsig-marker-{}", std::process::id());
    let secret_value = format!("secret-value-{}", std::process::id());
    let secret_file = sb.path().join("secret.txt");
    fs::write(&secret_file, &secret_value).unwrap();
    sb.user.chown_tree(&secret_file);
    let df = format!("FROM {}\nRUN --mount=type=secret,id=tok sh -c 'echo started-$((40+2)); sleep 6; echo {marker} > /done'\n", busybox(&registry));
    let ctx = sb.new_context("killed").file("Dockerfile", df).build();
    let reference = format!("{}/killed/app:1", registry.host());
    let seen = sb
        .kiln()
        .build()
        .arg("--progress")
        .arg("plain")
        .arg("--secret")
        .arg(format!("id=tok,src={}", secret_file.display()))
        .tag(&reference)
        .push()
        .arg(&ctx)
        .spawn()
                // Only the step's output has 42 (its command line shows the sum).
        .kill_only_kiln_when_stderr_contains("started-42", Duration::from_secs(120));
    assert!(seen, "the step never started");
    // The secret was staged (in a 0700 directory) when the kill came.
    let staged = shm_dirs_holding(&secret_value);
    assert_eq!(staged.len(), 1, "{staged:?}");
    assert_eq!(fs::metadata(&staged[0]).unwrap().mode() & 0o777, 0o700);
    let mut left = Vec::new();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(250));
        left = processes_with(&marker);
        if left.is_empty() {
            break;
        }
    }
    assert!(left.is_empty(), "the step outlived the killed kiln: {left:?}");
    // Past the step's end: nothing was pushed.
    std::thread::sleep(Duration::from_secs(7));
    assert!(registry.tags("killed/app").is_empty(), "a killed build pushed: {:?}", registry.tags("killed/app"));
    sb.kiln().arg("prune").run().assert_success();
    assert!(shm_dirs_holding(&secret_value).is_empty(), "kiln prune left the killed build's secret in /dev/shm");
    for d in ["tmp", "snapshots/active"] {
        let left: Vec<_> = fs::read_dir(sb.kiln_root().join(d)).into_iter().flatten().flatten().map(|e| e.path()).collect();
        assert!(left.is_empty(), "kiln prune left {left:?}");
    }
}

/// `kiln prune --all` beside a running build gave its exclusive lock back before it
/// deleted the snapshots the build was using. It now waits for the build, which
/// finishes on intact data.
#[test]
fn prune_beside_a_running_build_waits_for_it() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!("FROM {}\nRUN sleep 3 && ls /bin/sh > /ok\nRUN cat /ok > /ok2\n", busybox(&registry));
    let ctx = sb.new_context("prune-race").file("Dockerfile", df).build();
    let out = sb.out_path("prune-race");
    // A first build, so that there is something for prune to delete.
    sb.kiln().build().arg(&ctx).run().assert_success();
    let sb2 = &sb;
    let out2 = out.clone();
    let ctx2 = ctx.clone();
    std::thread::scope(|s| {
        let build = s.spawn(move || {
            sb2.kiln().build().arg("--no-cache").arg("--output").arg(format!("type=local,dest={}", out2.display())).arg(&ctx2).timeout(Duration::from_secs(120)).run()
        });
        std::thread::sleep(Duration::from_millis(1500));
        let prune = sb2.kiln().arg("prune").arg("--all").run();
        prune.assert_success();
        let b = build.join().unwrap();
        b.assert_success();
    });
    assert_eq!(fs::read_to_string(out.join("ok2")).unwrap(), "/bin/sh\n");
}

/// `RUN --mount=type=bind,from=<image reference>` reads the image as `COPY --from`
/// does ("image … was not pulled" before).
#[test]
fn a_bind_mount_from_an_image_reference_works() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!(
        "FROM {b}\nRUN --mount=type=bind,from={m},target=/m ls /m/bin/busybox > /listed\nCOPY --from={m} /bin/busybox /copied\n",
        b = busybox(&registry),
        m = format!("{}/base/busybox:multi", registry.host())
    );
    let ctx = sb.new_context("mount-image").file("Dockerfile", df).build();
    let out = sb.out_path("mount-image");
    sb.kiln().build().arg("--output").arg(format!("type=local,dest={}", out.display())).arg(&ctx).run().assert_success();
    assert_eq!(fs::read_to_string(out.join("listed")).unwrap(), "/m/bin/busybox\n");
    assert!(out.join("copied").is_file());
}

/// A store blob whose bytes no longer match its digest reached `-o type=oci` (exit
/// 0, a layout holding the corrupt blob). Now the build names the blob and fails,
/// and the next build restores it.
#[test]
fn a_corrupt_store_blob_never_reaches_an_output() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!("FROM {}\nRUN echo payload > /payload\n", busybox(&registry));
    let ctx = sb.new_context("corrupt").file("Dockerfile", df).build();
    let first = sb.out_path("corrupt-1.tar");
    sb.kiln().build().arg("--output").arg(format!("type=oci,dest={}", first.display())).arg(&ctx).run().assert_success();
    // Every layer blob in the store (not JSON), flipped in its last byte.
    let blobs = sb.kiln_root().join("content/blobs/sha256");
    let mut flipped = 0;
    for e in fs::read_dir(&blobs).unwrap().flatten() {
        let mut bytes = fs::read(e.path()).unwrap();
        if bytes.len() < 20 || bytes[0] == b'{' {
            continue;
        }
        let n = bytes.len() - 1;
        bytes[n] ^= 0xff;
        let mut perm = fs::metadata(e.path()).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o644);
        fs::set_permissions(e.path(), perm).unwrap();
        fs::write(e.path(), &bytes).unwrap();
        flipped += 1;
    }
    assert!(flipped >= 2, "base and RUN layers expected, flipped {flipped}");
    let second = sb.out_path("corrupt-2.tar");
    let out = sb.kiln().build().arg("--output").arg(format!("type=oci,dest={}", second.display())).arg(&ctx).run();
    out.assert_failure_containing("is corrupt");
    assert!(!out.combined().contains("panicked"), "{out}");
    // The next build fetches or rebuilds what was removed.
    let third = sb.out_path("corrupt-3.tar");
    let again = sb.kiln().build().arg("--output").arg(format!("type=oci,dest={}", third.display())).arg(&ctx).run();
    again.assert_success();
}

/// Four clean builds of one Dockerfile with SOURCE_DATE_EPOCH gave four gzip
/// RUN-layer digests (zstd and none were stable). A multi-megabyte layer of text,
/// noise and already-compressed data, built on fresh state directories with each
/// compression: one digest per compression.
#[test]
fn clean_builds_give_the_same_layer_bytes_with_every_compression() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let df = format!(
        "FROM {}\nRUN seq 1 400000 > /text && awk 'BEGIN{{srand(7); for(i=0;i<1500000;i++) printf \"%c\", 1+int(rand()*255)}}' > /noise \
         && gzip -c /text > /text.gz && mkdir -p /d/e && touch /d/e/f\n",
        busybox(&registry)
    );
    for compression in ["gzip", "zstd", "uncompressed"] {
        let mut digests = Vec::new();
        for run in 0..4 {
            let sb = Sandbox::new();
            let ctx = sb.new_context("repro").file("Dockerfile", &df).build();
            let dest = sb.out_path("repro-layout");
            sb.kiln()
                .build()
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .arg("--compression")
                .arg(compression)
                .output_oci(&dest)
                .arg(&ctx)
                .timeout(Duration::from_secs(180))
                .run()
                .assert_success();
            let img = kiln_integration::Image::from_layout(&dest, None);
            let top = img.layers.last().unwrap();
            assert!(top.size > 1_000_000 || compression != "uncompressed", "{compression} run {run}: layer of {} bytes", top.size);
            digests.push(format!("{} (diff_id {})", top.digest, top.diff_id));
        }
        digests.sort();
        digests.dedup();
        assert_eq!(digests.len(), 1, "{compression}: clean builds gave different RUN layers: {digests:?}");
    }
}

/// `--progress json`: after one line of invalid UTF-8 no further line of the step
/// was forwarded (and the step got EPIPE); a long line without a newline was held
/// whole in memory. Now every line arrives (bytes exact in `data_base64`), and a
/// long line comes in bounded pieces.
#[test]
fn json_progress_forwards_every_byte_of_a_step_in_bounded_pieces() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!(
        "FROM {}\nRUN printf '\\377\\376bad\\n' && seq 1 20000 && head -c 300000 /dev/zero | tr '\\0' x && echo && echo last-line\n",
        busybox(&registry)
    );
    let ctx = sb.new_context("json-bytes").file("Dockerfile", df).build();
    let out = sb.kiln().build().args(["--progress", "json"]).arg(&ctx).timeout(Duration::from_secs(120)).run();
    out.assert_success();
    let logs: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "log" && e["stream"] == "stdout")
        .collect();
    let bad = logs.iter().find(|e| e.get("data_base64").is_some()).unwrap_or_else(|| panic!("no event carries the raw bytes"));
    assert_eq!(bad["data_base64"], "//5iYWQ=", "{bad}");
    assert_eq!(bad["data"], "\u{fffd}\u{fffd}bad");
    let numbers: Vec<&str> = logs.iter().filter_map(|e| e["data"].as_str()).filter(|d| d.bytes().all(|b| b.is_ascii_digit()) && !d.is_empty()).collect();
    assert_eq!(numbers.len(), 20000, "lines after the invalid one were lost");
    assert_eq!(numbers[19999], "20000");
    let pieces: Vec<&str> = logs.iter().filter_map(|e| e["data"].as_str()).filter(|d| d.starts_with('x')).collect();
    assert!(pieces.iter().all(|p| p.len() <= 64 * 1024), "a piece over the bound: {:?}", pieces.iter().map(|p| p.len()).collect::<Vec<_>>());
    assert_eq!(pieces.concat().len(), 300_000);
    assert!(logs.iter().any(|e| e["data"] == "last-line"));
}
