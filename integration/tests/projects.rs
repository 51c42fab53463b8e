//! Real-world application builds (`testdata/projects/*`): each project is
//! built end to end by `kiln build --push` as the unprivileged user on the
//! Debian base (`base/debian:bookworm`, mmdebstrap), with apt, pip, npm and
//! cargo reaching this machine's package registries from RUN steps, and its
//! last stage runs the built app (the smoke test). The test then pulls the
//! image back and checks the smoke output and files of the image.
//!
//! HTTPS on this machine may go through an intercepting proxy: its CA
//! certificates (the host's `/usr/local/share/ca-certificates/*.crt`) are
//! copied into each context's `certs/` at test time, and the Dockerfiles
//! install them as a corporate build would. kiln itself knows nothing of them.
//!
//! One `#[test]` per project, so `cargo test` runs two at a time on two
//! cores and a single project can be selected by name.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kiln_integration::registry::seed_debian_image;
use kiln_integration::{paths, Image, Kind, Registry, RunOutput, Sandbox};

/// Where the host keeps locally added CA certificates (Debian's layout).
const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";
/// A cold build downloads toolchains (node, rust, gcc): give it time.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// One project's registry, sandbox and context; every build of it shares the
/// sandbox's KILN_ROOT (so the smoke build reuses the app build's cache).
struct Project {
    name: &'static str,
    registry: Registry,
    sandbox: Sandbox,
    ctx: PathBuf,
}

/// A pushed and pulled-back image with kiln's output.
struct Built {
    image: Image,
    /// kiln's stdout and stderr (plain progress, RUN output included)
    log: String,
}

impl Built {
    #[track_caller]
    fn file(&self, path: &str) -> String {
        let n = self.image.tree.node(path);
        assert!(n.is_file(), "{path} is {n}, not a file");
        n.text()
    }

    /// The configured user, command, env… of the image (`config` of the config JSON).
    fn config(&self) -> &serde_json::Value {
        &self.image.config["config"]
    }

    #[track_caller]
    fn assert_log_contains(&self, s: &str) {
        assert!(self.log.contains(s), "kiln's output lacks {s:?}:\n{}", self.log);
    }

    /// `(ran, cached)` from kiln's summary line `built … (N steps run, M cached)`.
    #[track_caller]
    fn steps(&self) -> (usize, usize) {
        let line = self.log.lines().rev().find(|l| l.starts_with("built ")).unwrap_or_else(|| {
            panic!("no summary line in kiln's output:\n{}", self.log)
        });
        let inner = line.rsplit_once('(').and_then(|(_, r)| r.strip_suffix(')')).unwrap_or("");
        let nums: Vec<usize> =
            inner.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        match nums[..] {
            [ran, cached] => (ran, cached),
            _ => panic!("cannot read the summary line {line:?}"),
        }
    }
}

impl Project {
    #[track_caller]
    fn new(name: &'static str) -> Project {
        let registry = Registry::start();
        seed_debian_image(&registry);
        let sandbox = Sandbox::new();
        let ctx = project_context(&sandbox, name, &registry);
        Project { name, registry, sandbox, ctx }
    }

    /// `kiln build --progress plain [--target T] [--build-arg …] -t REG/projects/NAME:TAG --push`.
    fn build(&self, target: Option<&str>, tag: &str, build_args: &[(&str, String)]) -> RunOutput {
        let mut cmd = self.sandbox.kiln().build().arg("--progress").arg("plain");
        if let Some(t) = target {
            cmd = cmd.arg("--target").arg(t);
        }
        for (k, v) in build_args {
            cmd = cmd.build_arg(k, v);
        }
        let reference = self.registry.reference(&format!("projects/{}:{tag}", self.name));
        let out = cmd.tag(&reference).push().arg(&self.ctx).timeout(BUILD_TIMEOUT).run();
        eprintln!(
            "{}: kiln build --target {} took {:.1?}",
            self.name,
            target.unwrap_or("(last)"),
            out.elapsed
        );
        out
    }

    #[track_caller]
    fn pull(&self, tag: &str, out: &RunOutput) -> Built {
        let image = Image::pull_from(&self.registry, &format!("projects/{}:{tag}", self.name));
        image.assert_consistent();
        Built { image, log: out.combined() }
    }

    /// The production image: the `app` stage.
    #[track_caller]
    fn build_app(&self) -> Built {
        let out = self.build(Some("app"), "app", &[]);
        out.assert_success();
        self.pull("app", &out)
    }

    /// The last stage, which runs the app (the smoke test), on top of the
    /// cached `app` stage.
    ///
    /// `known_bug`: a kiln bug makes this build fail with a message containing
    /// this text. The test then insists on that failure, so that fixing the
    /// bug shows up here (remove the mark then).
    #[track_caller]
    fn build_smoke(&self, build_args: &[(&str, String)], known_bug: Option<&str>) -> Option<Built> {
        let out = self.build(None, "smoke", build_args);
        if let Some(needle) = known_bug {
            assert!(
                !out.status.success(),
                "{}: the known kiln bug ({needle:?}) no longer happens: the smoke build passed. \
                 Remove the KNOWN_BUG mark in integration/tests/projects.rs.\n{out}",
                self.name
            );
            out.assert_failure_containing(needle);
            eprintln!("{}: the smoke build fails as the known kiln bug says ({needle:?})", self.name);
            return None;
        }
        out.assert_success();
        Some(self.pull("smoke", &out))
    }
}

/// The smoke stage adds one layer per RUN on the app image, and only its
/// steps ran: the app stage came from the cache.
#[track_caller]
fn assert_smoke_on_top_of_app(app: &Built, smoke: &Built, smoke_steps: usize) {
    let (ran, cached) = smoke.steps();
    assert_eq!(ran, smoke_steps, "the smoke build re-ran app steps:\n{}", smoke.log);
    assert!(cached > 0, "{}", smoke.log);
    let a = app.image.layer_digests();
    let s = smoke.image.layer_digests();
    assert!(s.len() > a.len() && s[..a.len()] == a[..], "smoke layers {s:?} do not start with app layers {a:?}");
}

/// A free port on the host's loopback for a RUN that serves (RUN steps share
/// the host's network); racy only against another process binding it meanwhile.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

fn copy_tree(src: &Path, dst: &Path) {
    let md = fs::symlink_metadata(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    if md.is_dir() {
        fs::create_dir_all(dst).unwrap();
        let mut entries: Vec<PathBuf> =
            fs::read_dir(src).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for e in entries {
            copy_tree(&e, &dst.join(e.file_name().unwrap()));
        }
    } else if md.file_type().is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(src).unwrap(), dst).unwrap();
    } else {
        fs::copy(src, dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
    }
}

/// `testdata/projects/NAME` copied into the sandbox, its Dockerfile pointed at
/// `registry`, and the host's extra CA certificates in `certs/`.
fn project_context(sb: &Sandbox, name: &str, registry: &Registry) -> PathBuf {
    let src = paths::testdata_dir().join("projects").join(name);
    let dst = sb.path().join("ctx").join(name);
    copy_tree(&src, &dst);
    let dockerfile = dst.join("Dockerfile");
    let text = fs::read_to_string(&dockerfile).unwrap();
    fs::write(&dockerfile, text.replace("127.0.0.1:5000", &registry.host())).unwrap();
    let certs = dst.join("certs");
    fs::create_dir_all(&certs).unwrap();
    if let Ok(entries) = fs::read_dir(HOST_CA_DIR) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "crt") && p.is_file() {
                fs::copy(&p, certs.join(e.file_name())).unwrap();
            }
        }
    }
    sb.user.chown_tree(&dst);
    dst
}


/// pip: Flask + gunicorn from PyPI into a virtualenv (pip cache mount), a
/// runtime stage as user `app`; the smoke stage starts gunicorn and queries
/// it over the loopback of a `RUN --network=none` step.
#[test]
fn pip_flask_app() {
    // This project found that `RUN --network=none` left `lo` down (nothing could
    // serve on 127.0.0.1); the sandbox now brings it up, as runc does.
    const KNOWN_BUG: Option<&str> = None;
    let p = Project::new("pip-flask");
    let app = p.build_app();
    let cfg = app.config();
    assert_eq!(cfg["User"], "app");
    assert_eq!(cfg["WorkingDir"], "/app");
    assert_eq!(cfg["Cmd"][0], "gunicorn", "{cfg}");
    assert!(cfg["ExposedPorts"].get("8000/tcp").is_some(), "{cfg}");
    assert!(
        app.image.env().iter().any(|e| e.starts_with("PATH=/opt/venv/bin:/usr/local/sbin:")),
        "{:?}",
        app.image.env()
    );
    let t = &app.image.tree;
    assert!(t.node("/opt/venv/bin/gunicorn").is_file());
    assert!(t.node("/opt/venv/lib/python3.11/site-packages/flask/__init__.py").is_file());
    assert!(t.contains("/opt/venv/lib/python3.11/site-packages/flask-3.0.3.dist-info"), "Flask 3.0.3 as pinned");
    // The venv's interpreter is the runtime stage's python3 (bookworm's 3.11).
    assert_eq!(t.node("/opt/venv/bin/python3").kind, Kind::Symlink);
    assert!(t.node("/usr/bin/python3.11").is_file());
    assert_eq!(t.node("/home/app").uid, 999, "useradd --system: the first system uid");
    // Cache mounts kept pip's and apt's caches out of the image; the build
    // stage's tools stayed there.
    assert!(!t.contains("/root/.cache/pip"), "pip's cache leaked into the image");
    assert!(t.children_of("/var/cache/apt/archives").iter().all(|p| !p.ends_with(".deb")));
    assert!(!t.contains("/usr/lib/python3.11/ensurepip"), "python3-venv belongs to the build stage only");
    assert!(t.contains("/etc/ssl/certs/ca-certificates.crt"));

    let Some(smoke) = p.build_smoke(&[], KNOWN_BUG) else { return };
    let reply: serde_json::Value = serde_json::from_str(&smoke.file("/tmp/smoke.json"))
        .unwrap_or_else(|e| panic!("smoke.json: {e}"));
    assert_eq!(reply["message"], "hello from kiln", "{reply}");
    assert_eq!(reply["flask"], "3.0.3", "{reply}");
    assert!(reply["python"].as_str().is_some_and(|v| v.starts_with("3.11.")), "{reply}");
    smoke.assert_log_contains("smoke: {\"flask\": \"3.0.3\"");
    assert_smoke_on_top_of_app(&app, &smoke, 1);
}

/// npm: `npm ci` from the lockfile (npm cache mount), an esbuild bundle that
/// is run in node at build time, served by Debian's nginx as www-data
/// (`nginx -t` as that user, logging to the step's stdout/stderr); the smoke
/// stage serves the site and fetches its pages.
#[test]
fn npm_esbuild_nginx_site() {
    const KNOWN_BUG: Option<&str> = None;
    let p = Project::new("npm-nginx");
    let app = p.build_app();
    app.assert_log_contains("nginx: configuration file /etc/nginx/nginx.conf test is successful");
    app.assert_log_contains("prerendered");
    let cfg = app.config();
    assert_eq!(cfg["User"], "www-data");
    assert_eq!(cfg["Cmd"][0], "nginx", "{cfg}");
    let t = &app.image.tree;
    let bundle = t.node("/var/www/app/app.js");
    assert!(bundle.is_file() && bundle.size > 10_000, "the bundle holds marked: {bundle}");
    assert!(app.file("/var/www/app/prerendered.html").contains("<h1>Hello from kiln</h1>"));
    assert!(app.file("/var/www/app/index.html").contains("<script src=\"/app.js\"></script>"));
    assert!(t.node("/usr/sbin/nginx").is_file());
    // The build stage's node, npm and node_modules are not in the image.
    for p in ["/usr/bin/node", "/usr/bin/npm", "/src/node_modules", "/root/.npm"] {
        assert!(!t.contains(p), "{p} leaked from the build stage");
    }

    let port = free_port();
    let Some(smoke) = p.build_smoke(&[("SMOKE_PORT", port.to_string())], KNOWN_BUG) else { return };
    let index = smoke.file("/tmp/smoke-index.http");
    assert!(index.starts_with("HTTP/1.1 200 OK"), "{index}");
    assert!(index.contains("<div id=\"app\"></div>"), "{index}");
    let js = smoke.file("/tmp/smoke-app.http");
    assert!(js.starts_with("HTTP/1.1 200 OK"), "{}", &js[..js.len().min(300)]);
    assert!(js.contains("Content-Type: application/javascript"), "{}", &js[..js.len().min(300)]);
    let pre = smoke.file("/tmp/smoke-prerendered.http");
    assert!(pre.contains("<h1>Hello from kiln</h1>"), "{pre}");
    // nginx's access log went to the step's stdout.
    smoke.assert_log_contains("\"GET /app.js HTTP/1.0\" 200");
    assert_smoke_on_top_of_app(&app, &smoke, 1);
}

/// cargo: a crates.io dependency with the registry and target dir as cache
/// mounts, the binary copied out in the same step; it runs as nobody.
#[test]
fn cargo_cli() {
    const KNOWN_BUG: Option<&str> = None;
    let p = Project::new("cargo-cli");
    let app = p.build_app();
    app.assert_log_contains("Compiling serde_json");
    let cfg = app.config();
    assert_eq!(cfg["User"], "nobody");
    assert_eq!(cfg["Entrypoint"][0], "wordcount", "{cfg}");
    let t = &app.image.tree;
    let bin = t.node("/usr/local/bin/wordcount");
    assert!(bin.is_file() && bin.mode == 0o755, "{bin}");
    for p in ["/usr/bin/cargo", "/root/.cargo", "/src/target", "/out"] {
        assert!(!t.contains(p), "{p} leaked from the build stage");
    }

    let Some(smoke) = p.build_smoke(&[], KNOWN_BUG) else { return };
    let report: serde_json::Value = serde_json::from_str(smoke.file("/tmp/smoke.json").trim())
        .unwrap_or_else(|e| panic!("smoke.json: {e}"));
    assert_eq!(report, serde_json::json!({"lines": 2, "words": 5, "bytes": 24, "tool": "wordcount 0.1.0"}));
    assert_smoke_on_top_of_app(&app, &smoke, 1);
}

/// C: make with gcc against zlib in the build stage (`make check` there),
/// `make install DESTDIR=` into a runtime stage with only the library.
#[test]
fn c_make_tool() {
    const KNOWN_BUG: Option<&str> = None;
    let p = Project::new("c-make");
    let app = p.build_app();
    let t = &app.image.tree;
    assert!(t.node("/usr/local/bin/kgz").is_file());
    assert_eq!(app.config()["Entrypoint"][0], "kgz");
    for p in ["/usr/bin/gcc", "/usr/include/zlib.h", "/src", "/out"] {
        assert!(!t.contains(p), "{p} leaked from the build stage");
    }
    let Some(smoke) = p.build_smoke(&[], KNOWN_BUG) else { return };
    let version = smoke.file("/tmp/smoke-version.txt");
    assert!(version.starts_with("kgz 1.2.0 (zlib 1.2.13"), "{version}");
    // `seq 1 1000`: 3893 bytes, CRC-32 as gzip computes it.
    assert_eq!(smoke.file("/tmp/smoke-crc.txt"), "kgz: 3893 bytes, crc32 8dc4565d\n");
    assert_eq!(smoke.file("/tmp/smoke-last.txt"), "1000\n");
    smoke.assert_log_contains("kgz 1.2.0");
    assert_smoke_on_top_of_app(&app, &smoke, 1);
}

/// apt: a CI tooling image, a dozen packages in one layer with the lists
/// removed in the same step; the tools run as user ci, curl over HTTPS.
#[test]
fn apt_tooling_image() {
    const KNOWN_BUG: Option<&str> = None;
    let p = Project::new("apt-tools");
    let app = p.build_app();
    let t = &app.image.tree;
    for bin in ["git", "curl", "jq", "make", "ssh", "patch", "unzip", "zip", "xz", "file", "less"] {
        assert!(t.contains(&format!("/usr/bin/{bin}")), "/usr/bin/{bin} missing");
    }
    let lists: Vec<&String> =
        t.children_of("/var/lib/apt/lists").into_iter().filter(|p| !p.ends_with("/partial") && !p.ends_with("/lock")).collect();
    assert!(lists.is_empty(), "apt lists left in the image: {lists:?}");
    // The lists never reached any layer (removed in the step that made them).
    let leaked: Vec<String> = app
        .image
        .all_layer_entries()
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p.contains("var/lib/apt/lists/") && p.ends_with("_Packages"))
        .collect();
    assert!(leaked.is_empty(), "{leaked:?}");
    let ci = t.node("/home/ci");
    assert_eq!((ci.uid, ci.gid), (1001, 1001), "{ci}");
    assert_eq!(app.config()["User"], "ci");
    assert_eq!(app.config()["WorkingDir"], "/home/ci");

    let Some(smoke) = p.build_smoke(&[], KNOWN_BUG) else { return };
    let out = smoke.file("/tmp/smoke.txt");
    let expect = [
        "git: 1 commit, file now a B ",
        "jq: git,jq,curl",
        "zip: a B",
        "make: ok",
        "xz: hello",
        "file: application/zip",
        "curl: 200",
        "ssh: OpenSSH",
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, expect, "smoke output:\n{out}");
    assert_eq!(smoke.image.tree.node("/home/ci/check.sh").uid, 1001);
    assert_smoke_on_top_of_app(&app, &smoke, 2);
}
