//! End-to-end: what a RUN step sees without it reaching a layer (issue 6):
//! `RUN --mount` of every type, `--secret`, `--ssh`, heredoc scripts and
//! `--network=none`, built as the unprivileged user.

use std::io::Read;
use std::path::Path;

use kiln_integration::{seed_base_images, Image, Registry, Sandbox};

const SECRET: &str = "s3cr3t-value-that-must-never-leak";

/// Every blob of an OCI layout, decompressed when gzip: the secret must be in none.
fn assert_not_in_any_blob(layout: &Path, needle: &str) {
    let blobs = layout.join("blobs/sha256");
    for e in std::fs::read_dir(&blobs).unwrap() {
        let p = e.unwrap().path();
        let raw = std::fs::read(&p).unwrap();
        let mut plain = Vec::new();
        if raw.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut plain).unwrap();
        } else {
            plain = raw;
        }
        let hay = String::from_utf8_lossy(&plain);
        assert!(!hay.contains(needle), "{needle:?} found in blob {}", p.display());
    }
}

#[test]
fn secrets_cache_bind_tmpfs_and_heredocs_stay_out_of_layers() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    // The Dockerfile names only the secret's hash: its text is in the history.
    let secret_sha: String = {
        use sha2::{Digest, Sha256};
        Sha256::digest(SECRET.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    };
    let dockerfile = format!(
        r#"FROM {base} AS tools
RUN mkdir -p /opt/tool && echo "from the tools stage" > /opt/tool/msg

FROM {base}
RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-len
RUN --mount=type=secret,id=token,env=TOKEN sh -c 'test "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = "{secret_sha}" && echo env-ok > /secret-env'
RUN --mount=type=cache,target=/var/cache/thing sh -c 'echo run >> /var/cache/thing/log; wc -l < /var/cache/thing/log > /cache-count'
RUN --mount=type=bind,source=data,target=/mnt cat /mnt/file > /from-bind
RUN --mount=type=bind,source=data,target=/mnt,rw sh -c 'echo scribble > /mnt/new && ls /mnt > /rw-list'
RUN --mount=type=bind,from=tools,source=/opt/tool,target=/tool cat /tool/msg > /from-stage
RUN --mount=type=cache,id=seeded,target=/seeded,from=tools,source=/opt/tool cat /seeded/msg > /from-cache-seed
RUN --mount=type=tmpfs,target=/scratch sh -c 'echo hi > /scratch/x && cat /scratch/x > /tmpfs-ok'
RUN <<EOF
#!/bin/sh
echo "heredoc $((1+1))" > /heredoc-shebang
EOF
RUN <<EOF
echo plain > /heredoc-plain
EOF
RUN --network=none sh -c 'grep -c : /proc/net/dev > /netdev-count'
"#
    );
    let ctx = sb
        .new_context("mounts")
        .file("Dockerfile", dockerfile)
        .file("data/file", "bound from the context\n")
        .file("secret.txt", SECRET)
        .build();
    let layout = sb.out_path("layout");
    let build = |layout: &Path| {
        sb.kiln()
            .build()
            .arg("--secret")
            .arg(format!("id=token,src={}", ctx.join("secret.txt").display()))
            .output_oci(layout)
            .arg(&ctx)
            .run()
    };
    let out = build(&layout);
    out.assert_success();
    assert!(!out.combined().contains(SECRET), "the secret was printed\n{out}");

    let img = Image::from_layout(&layout, None);
    let t = &img.tree;
    assert_eq!(t.node("/secret-len").text().trim(), SECRET.len().to_string());
    assert_eq!(t.node("/secret-env").text(), "env-ok\n");
    assert_eq!(t.node("/cache-count").text(), "1\n");
    assert_eq!(t.node("/from-bind").text(), "bound from the context\n");
    assert_eq!(t.node("/rw-list").text(), "file\nnew\n");
    assert_eq!(t.node("/from-stage").text(), "from the tools stage\n");
    assert_eq!(t.node("/tmpfs-ok").text(), "hi\n");
    assert_eq!(t.node("/from-cache-seed").text(), "from the tools stage\n", "cache mount seeded from a stage");
    assert_eq!(t.node("/heredoc-shebang").text(), "heredoc 2\n");
    assert_eq!(t.node("/heredoc-plain").text(), "plain\n");
    // Only the loopback device in its own network namespace.
    assert_eq!(t.node("/netdev-count").text(), "1\n", "--network=none must leave only lo");
    // Mount points and their contents never reach the image.
    for p in ["/run", "/run/secrets", "/var", "/var/cache/thing", "/mnt", "/tool", "/seeded", "/scratch", "/dev/pipes"] {
        t.assert_absent(p);
    }
    assert!(!ctx.join("data/new").exists(), "a rw bind must not write to the context");
    assert_not_in_any_blob(&layout, SECRET);

    // --no-cache runs the step again on an emptied cache mount, as BuildKit
    // (moby/buildkit#5305); that the mount persists across cached builds is
    // testdata/buildkit/cache.txt testCacheMountModeNoCache/rebuilds.
    let layout2 = sb.out_path("layout2");
    sb.kiln()
        .build()
        .arg("--no-cache")
        .arg("--secret")
        .arg(format!("id=token,src={}", ctx.join("secret.txt").display()))
        .output_oci(&layout2)
        .arg(&ctx)
        .run()
        .assert_success();
    let img2 = Image::from_layout(&layout2, None);
    assert_eq!(img2.tree.node("/cache-count").text(), "1\n", "--no-cache must start the cache mount empty");
}

#[test]
fn missing_required_secret_is_a_clear_error() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("req")
        .file("Dockerfile", format!("FROM {base}\nRUN --mount=type=secret,id=npmrc,required=true cat /run/secrets/npmrc\n"))
        .build();
    let out = sb.kiln().build().arg(&ctx).run();
    out.assert_failure_containing("secret \"npmrc\" is required");
    out.assert_stderr_contains("step 2/2");
}

/// A registry with the base, a sandbox, and a listening socket standing in for an
/// ssh agent (owned by the build user): (registry, sandbox, base ref, socket, listener).
fn ssh_setup() -> (Registry, Sandbox, String, std::path::PathBuf, std::os::unix::net::UnixListener) {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let sock = sb.path().join("agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    sb.user.chown_tree(&sock);
    (registry, sb, base, sock, listener)
}

#[test]
fn ssh_agent_socket_is_forwarded() {
    // The registry and the listener live until the test ends.
    let (_registry, sb, base, sock, _listener) = ssh_setup();
    let ctx = sb
        .new_context("ssh")
        .file("Dockerfile", format!("FROM {base}\nRUN --mount=type=ssh sh -c 'test -S \"$SSH_AUTH_SOCK\" && echo \"$SSH_AUTH_SOCK\" > /ssh-ok'\n"))
        .build();
    let layout = sb.out_path("layout");
    let out = sb.kiln().build().arg("--ssh").arg(format!("default={}", sock.display())).output_oci(&layout).arg(&ctx).run();
    out.assert_success();
    let img = Image::from_layout(&layout, None);
    assert_eq!(img.tree.node("/ssh-ok").text(), "/run/buildkit/ssh_agent.0\n");
    img.tree.assert_absent("/run");
}

/// BuildKit's testSSHSocketParams: an ssh mount's socket is the step's own, with
/// the mount's mode, uid and gid (0600 0:0 by default), relayed to the agent.
#[test]
fn ssh_mount_socket_has_its_mode_uid_and_gid() {
    // The registry and the listener live until the test ends.
    let (_registry, sb, base, sock, _listener) = ssh_setup();
    let ctx = sb
        .new_context("sshparams")
        .file(
            "Dockerfile",
            format!(
                "FROM {base}\n\
                 RUN --mount=type=ssh,mode=741,uid=100,gid=102 stat -c '%a %u %g %F' $SSH_AUTH_SOCK > /params\n\
                 RUN --mount=type=ssh stat -c '%a %u %g %F' $SSH_AUTH_SOCK > /defaults\n"
            ),
        )
        .build();
    let layout = sb.out_path("layout");
    let out = sb.kiln().build().arg("--ssh").arg(format!("default={}", sock.display())).output_oci(&layout).arg(&ctx).run();
    out.assert_success();
    let img = Image::from_layout(&layout, None);
    assert_eq!(img.tree.node("/params").text(), "741 100 102 socket\n");
    assert_eq!(img.tree.node("/defaults").text(), "600 0 0 socket\n");
}

/// `--shm-size`, `--ulimit` and `--add-host NAME:host-gateway` shape what a RUN
/// step sees, as with `docker build`.
#[test]
fn shm_size_ulimits_and_host_gateway() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let base = registry.reference("base/busybox:latest");
    let ctx = sb
        .new_context("limits")
        .file(
            "Dockerfile",
            format!("FROM {base}\nRUN df -k /dev/shm | tail -n 1 | awk '{{print $2}}' > /shm && ulimit -n > /nofile && ulimit -Hn > /nofile-hard && grep gw.test /etc/hosts > /hosts\n"),
        )
        .build();
    let out = sb.out_path("limits");
    sb.kiln()
        .build()
        .args(["--shm-size", "128m", "--ulimit", "nofile=1000:1500", "--add-host", "gw.test:host-gateway"])
        .output_oci(&out)
        .arg(&ctx)
        .run()
        .assert_success();
    let t = Image::from_layout(&out, None).tree;
    assert_eq!(t.node("/shm").text().trim(), (128 * 1024).to_string());
    assert_eq!(t.node("/nofile").text().trim(), "1000");
    assert_eq!(t.node("/nofile-hard").text().trim(), "1500");
    assert_eq!(t.node("/hosts").text().split_whitespace().collect::<Vec<_>>(), ["127.0.0.1", "gw.test"]);
    sb.kiln().build().args(["--ulimit", "nofiles=1"]).arg(&ctx).run().assert_failure_containing("did you mean nofile");
}
