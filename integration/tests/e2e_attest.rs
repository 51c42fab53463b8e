//! SBOM and provenance end to end (issue 15), as the unprivileged build user against
//! the real docker-registry (2.8: no referrers API, so the referrers tag schema).
//!
//! The main test builds `testdata/attest` on the Debian base: packages from Debian's
//! archive with apt, Python packages from PyPI with pip, npm packages from the npm
//! registry. It proves that attestations leave the image untouched (the manifest is
//! byte-identical to a build without them), that the referrers are found through
//! the tag schema, that both SBOM formats pass the reference validators
//! (`pyspdxtools` of PyPI `spdx-tools`, `cyclonedx-python-lib`'s JSON validator,
//! installed by scripts/setup.sh), that the packages match what dpkg-query, pip and
//! node say is installed in the same image, that provenance names the base image's
//! digest and the Dockerfile's digest, that no secret or credential-like build arg
//! reaches any attestation, and that `kiln sbom` / `kiln attestations` print them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kiln_integration::registry::{seed_base_images, seed_debian_image};
use kiln_integration::{http, paths, Image, Registry, RunOutput, Sandbox};
use serde_json::Value;

/// The validators' virtualenv (scripts/setup.sh).
const VENV: &str = "/opt/kiln-sbom-venv";
const HOST_CA_DIR: &str = "/usr/local/share/ca-certificates";
const SECRET: &str = "deploy-key-6b1f0c2e-never-in-an-attestation";
const TOKEN: &str = "npm_tok_93ac11d7_not_for_provenance";

fn sha256_hex(data: &[u8]) -> String {
    Image::digest_of(data).trim_start_matches("sha256:").to_string()
}

/// `testdata/attest` in the sandbox, pointed at `registry`, with the host's CAs in certs/.
fn attest_context(sb: &Sandbox, registry: &Registry) -> PathBuf {
    let dst = sb.path().join("ctx").join("attest");
    fs::create_dir_all(dst.join("certs")).unwrap();
    let text = fs::read_to_string(paths::testdata_dir().join("attest/Dockerfile")).unwrap();
    fs::write(dst.join("Dockerfile"), text.replace("127.0.0.1:5000", &registry.host())).unwrap();
    if let Ok(entries) = fs::read_dir(HOST_CA_DIR) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "crt") && p.is_file() {
                fs::copy(&p, dst.join("certs").join(e.file_name())).unwrap();
            }
        }
    }
    fs::write(sb.path().join("deploy_key"), SECRET).unwrap();
    sb.user.chown_tree(sb.path());
    dst
}

fn build(sb: &Sandbox, ctx: &Path, reference: &str, extra: &[&str]) -> RunOutput {
    let key = sb.path().join("deploy_key");
    sb.kiln()
        .build()
        .arg("--progress")
        .arg("plain")
        .arg("--secret")
        .arg(format!("id=deploy_key,src={}", key.display()))
        .build_arg("NPM_TOKEN", TOKEN)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(extra)
        .tag(reference)
        .push()
        .arg(ctx)
        .timeout(Duration::from_secs(900))
        .run()
}

fn blob(registry: &Registry, repo: &str, digest: &str) -> Vec<u8> {
    let r = http::get(&registry.host(), &format!("/v2/{repo}/blobs/{digest}"), &[]).unwrap();
    assert_eq!(r.status, 200, "GET blob {digest}: {}", r.text());
    r.body
}

#[track_caller]
fn validate_spdx(path: &Path) {
    let bin = Path::new(VENV).join("bin/pyspdxtools");
    assert!(bin.exists(), "{} is missing: run scripts/setup.sh (it installs spdx-tools in {VENV})", bin.display());
    let out = Command::new(&bin).arg("-i").arg(path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.to_lowercase().contains("invalid"), "pyspdxtools rejects {}:\n{text}", path.display());
}

#[track_caller]
fn validate_cyclonedx(path: &Path) {
    let py = Path::new(VENV).join("bin/python3");
    assert!(py.exists(), "{} is missing: run scripts/setup.sh (it installs cyclonedx-python-lib in {VENV})", py.display());
    let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\n\
                  e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
                  print(e) if e else print('valid')\nsys.exit(1 if e else 0)\n";
    let out = Command::new(&py).arg("-c").arg(script).arg(path).output().unwrap();
    assert!(out.status.success(), "cyclonedx-python-lib rejects {}:\n{}{}", path.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// (name, version) of every SPDX package whose purl starts with `prefix`.
fn spdx_packages(doc: &Value, prefix: &str) -> BTreeSet<(String, String)> {
    doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["externalRefs"].as_array().into_iter().flatten().any(|r| r["referenceType"] == "purl" && r["referenceLocator"].as_str().unwrap_or("").starts_with(prefix))
        })
        .map(|p| (p["name"].as_str().unwrap().to_string(), p["versionInfo"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn cdx_packages(doc: &Value, prefix: &str) -> BTreeSet<(String, String)> {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["purl"].as_str().unwrap_or("").starts_with(prefix))
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["version"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn pairs(text: &str, sep: &str) -> BTreeSet<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(sep))
        .map(|(n, v)| (n.trim().to_string(), v.split_whitespace().next().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn sbom_and_provenance_of_a_real_debian_python_npm_image() {
    let registry = Registry::start();
    let base = seed_debian_image(&registry);
    let sb = Sandbox::new();
    let ctx = attest_context(&sb, &registry);

    // Without attestations first, then the same build (all cached) with them.
    let plain = registry.reference("attest/app:plain");
    build(&sb, &ctx, &plain, &[]).assert_success();
    let tagged = registry.reference("attest/app:1");
    let out = build(&sb, &ctx, &tagged, &["--sbom", "--attest", "type=sbom,format=cyclonedx", "--provenance=mode=max"]);
    out.assert_success();
    let manifest_plain = registry.manifest_raw("attest/app", "plain");
    let manifest = registry.manifest_raw("attest/app", "1");
    assert_eq!(manifest, manifest_plain, "attestations changed the image manifest");
    let subject = Image::digest_of(&manifest);

    // The referrers tag schema: sha256-<hex> is an index of the three referrers.
    let tag = format!("sha256-{}", subject.trim_start_matches("sha256:"));
    assert!(registry.tags("attest/app").contains(&tag), "no referrers tag {tag}: {:?}\n{out}", registry.tags("attest/app"));
    let index = registry.manifest("attest/app", &tag);
    let types: BTreeSet<&str> = index["manifests"].as_array().unwrap().iter().map(|m| m["artifactType"].as_str().unwrap_or("")).collect();
    assert_eq!(types, BTreeSet::from(["application/spdx+json", "application/vnd.cyclonedx+json", "application/vnd.in-toto+json"]), "{index}");
    for m in index["manifests"].as_array().unwrap() {
        let r = registry.manifest("attest/app", m["digest"].as_str().unwrap());
        assert_eq!(r["subject"]["digest"], subject.as_str(), "{r}");
        assert_eq!(r["config"]["mediaType"], "application/vnd.oci.empty.v1+json", "{r}");
    }

    // kiln sbom prints the documents; both validate with the reference tools.
    let spdx_out = sb.kiln().arg("sbom").arg(&tagged).arg("--format").arg("json").arg("--type").arg("spdx").arg("--insecure-registry").arg(registry.host()).run();
    spdx_out.assert_success();
    let spdx_path = sb.path().join("sbom.spdx.json");
    fs::write(&spdx_path, &spdx_out.stdout).unwrap();
    validate_spdx(&spdx_path);
    let cdx_out = sb.kiln().arg("sbom").arg(&tagged).arg("--format").arg("json").arg("--type").arg("cyclonedx").arg("--insecure-registry").arg(registry.host()).run();
    cdx_out.assert_success();
    let cdx_path = sb.path().join("sbom.cdx.json");
    fs::write(&cdx_path, &cdx_out.stdout).unwrap();
    validate_cyclonedx(&cdx_path);
    let spdx: Value = serde_json::from_str(&spdx_out.stdout).unwrap();
    let cdx: Value = serde_json::from_str(&cdx_out.stdout).unwrap();

    // What the package managers say is installed, read from the same image.
    let image = Image::pull_from(&registry, "attest/app:1");
    let dpkg = pairs(&image.tree.node("/dpkg-query.txt").text(), " ");
    let pip = pairs(&image.tree.node("/pip-freeze.txt").text(), "==");
    let npm = pairs(&image.tree.node("/npm-ls.txt").text(), " ");
    assert!(dpkg.len() > 80 && dpkg.iter().any(|(n, _)| n == "nodejs"), "{dpkg:?}");
    assert_eq!(spdx_packages(&spdx, "pkg:deb/"), dpkg, "the SBOM's Debian packages are not dpkg-query's");
    assert_eq!(cdx_packages(&cdx, "pkg:deb/"), dpkg, "the CycloneDX Debian packages are not dpkg-query's");
    let py = spdx_packages(&spdx, "pkg:pypi/");
    for p in [("six", "1.16.0"), ("idna", "3.7")] {
        assert!(pip.contains(&(p.0.to_string(), p.1.to_string())), "pip freeze lacks {p:?}: {pip:?}");
    }
    for p in &pip {
        assert!(py.iter().any(|(n, v)| n.eq_ignore_ascii_case(&p.0) && v == &p.1), "pip has {p:?}, the SBOM's Python packages {py:?} do not");
    }
    let js = spdx_packages(&spdx, "pkg:npm/");
    assert!(npm.contains(&("is-number".to_string(), "7.0.0".to_string())) && npm.len() == 2, "{npm:?}");
    for p in &npm {
        assert!(js.contains(p), "npm installed {p:?}, the SBOM's npm packages {js:?} do not");
    }
    // The described element is the image.
    let text = spdx_out.stdout.clone();
    assert!(text.contains(subject.trim_start_matches("sha256:")), "the SPDX document does not name the image digest");

    // Provenance: the base image and the Dockerfile by digest; max mode's args.
    let list = sb.kiln().arg("attestations").arg(&tagged).arg("--format").arg("json").arg("--payload").arg("--insecure-registry").arg(registry.host()).run();
    list.assert_success();
    let found: Vec<Value> = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(found.len(), 3, "{found:?}");
    let prov = found.iter().find(|f| f["kind"] == "provenance").expect("a provenance attestation")["payload"].clone();
    assert_eq!(prov["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(prov["subject"][0]["digest"]["sha256"], subject.trim_start_matches("sha256:"));
    let base_digest = Image::digest_of(&registry.manifest_raw("base/debian", "bookworm"));
    let deps = prov["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert!(
        deps.iter().any(|d| d["uri"].as_str().unwrap_or("").contains("base/debian") && d["digest"]["sha256"] == base_digest.trim_start_matches("sha256:")),
        "provenance lacks the base image {base} {base_digest}: {deps:?}"
    );
    let df_digest = sha256_hex(&fs::read(ctx.join("Dockerfile")).unwrap());
    assert_eq!(prov["predicate"]["buildDefinition"]["externalParameters"]["configSource"]["digest"]["sha256"], df_digest.as_str());
    let req = &prov["predicate"]["buildDefinition"]["externalParameters"]["request"];
    assert_eq!(req["secrets"][0]["id"], "deploy_key", "{req}");
    assert_eq!(req["args"]["build-arg:NPM_TOKEN"], "****", "{req}");

    // No secret value, no credential-like build arg, in any attestation blob.
    for m in index["manifests"].as_array().unwrap() {
        let r = registry.manifest("attest/app", m["digest"].as_str().unwrap());
        let payload = blob(&registry, "attest/app", r["layers"][0]["digest"].as_str().unwrap());
        let body = String::from_utf8_lossy(&payload);
        assert!(!body.contains(SECRET) && !body.contains(TOKEN), "an attestation carries a secret: {}", m["artifactType"]);
    }

    // The table form a user reads.
    let table = sb.kiln().arg("sbom").arg(&tagged).arg("--insecure-registry").arg(registry.host()).run();
    table.assert_success();
    let t = table.stdout.clone();
    for needle in ["six", "1.16.0", "pkg:pypi/six@1.16.0", "pkg:npm/is-number@7.0.0", "pkg:deb/debian/nodejs@"] {
        assert!(t.contains(needle), "kiln sbom's table lacks {needle:?}:\n{t}");
    }
}

/// The busybox base: fast cases of the other outputs and styles.
fn small_context(sb: &Sandbox, registry: &Registry, name: &str) -> PathBuf {
    seed_base_images(registry);
    let df = format!(
        "FROM {}/base/busybox:latest AS tools\nRUN mkdir -p /usr/lib/python3/dist-packages/demo-1.0.dist-info && printf 'Metadata-Version: 2.1\\nName: demo\\nVersion: 1.0\\nLicense: MIT\\n' > /usr/lib/python3/dist-packages/demo-1.0.dist-info/METADATA\nFROM {}/base/busybox:latest\nCOPY --from=tools /usr/lib/python3 /usr/lib/python3\nCOPY package-lock.json /srv/\n",
        registry.host(),
        registry.host()
    );
    let lock = r#"{"name":"ctx","lockfileVersion":3,"packages":{"":{"name":"ctx"},"node_modules/left-pad":{"version":"1.3.0","license":"WTFPL"}}}"#;
    sb.new_context(name).file("Dockerfile", df).file("package-lock.json", lock).build()
}

#[test]
fn attestations_in_layouts_local_outputs_and_buildkit_style() {
    let registry = Registry::start();
    let sb = Sandbox::new();
    let ctx = small_context(&sb, &registry, "small");

    // -o type=oci: the layout holds the referrers (listed with artifactType).
    let layout = sb.out_path("layout");
    sb.kiln().build().arg("--sbom").arg("--provenance").arg("--output").arg(format!("type=oci,dest={}", layout.display())).arg(&ctx).run().assert_success();
    let idx: Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let arts: BTreeSet<&str> = idx["manifests"].as_array().unwrap().iter().filter_map(|m| m["artifactType"].as_str()).collect();
    assert_eq!(arts, BTreeSet::from(["application/spdx+json", "application/vnd.in-toto+json"]), "{idx}");

    // -o type=local: the documents beside the rootfs; the SBOM sees the python and npm records.
    let dir = sb.out_path("rootfs");
    sb.kiln().build().arg("--sbom").arg("--attest").arg("type=sbom,format=cyclonedx,scan-context=true,scan-stage=true").arg("--provenance").arg("--output").arg(format!("type=local,dest={}", dir.display())).arg(&ctx).run().assert_success();
    let spdx: Value = serde_json::from_slice(&fs::read(dir.join("sbom.spdx.json")).unwrap()).unwrap();
    assert!(spdx_packages(&spdx, "pkg:pypi/").contains(&("demo".to_string(), "1.0".to_string())), "{spdx}");
    assert!(dir.join("sbom.cdx.json").is_file() && dir.join("provenance.json").is_file() && dir.join("bin/busybox").exists());
    let context_sbom: Value = serde_json::from_slice(&fs::read(dir.join("sbom-context.spdx.json")).unwrap()).unwrap();
    assert!(spdx_packages(&context_sbom, "pkg:npm/").contains(&("left-pad".to_string(), "1.3.0".to_string())), "{context_sbom}");
    // scan-stage: the intermediate stage's own document.
    let stage: Value = serde_json::from_slice(&fs::read(dir.join("sbom-tools.cdx.json")).unwrap()).unwrap();
    assert!(cdx_packages(&stage, "pkg:pypi/").contains(&("demo".to_string(), "1.0".to_string())), "{stage}");
    validate_spdx(&dir.join("sbom.spdx.json"));
    validate_cyclonedx(&dir.join("sbom.cdx.json"));

    // --attest-style=buildkit: attestation manifests in the index, read back by kiln sbom.
    let r = registry.reference("attest/bk:1");
    sb.kiln().build().arg("--sbom").arg("--provenance").arg("--attest-style=buildkit").tag(&r).push().arg(&ctx).run().assert_success();
    let index = registry.manifest("attest/bk", "1");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    assert_eq!(entries[1]["platform"]["os"], "unknown");
    assert_eq!(entries[1]["annotations"]["vnd.docker.reference.type"], "attestation-manifest");
    assert_eq!(entries[1]["annotations"]["vnd.docker.reference.digest"], entries[0]["digest"]);
    let att = registry.manifest("attest/bk", entries[1]["digest"].as_str().unwrap());
    let preds: BTreeSet<&str> = att["layers"].as_array().unwrap().iter().map(|l| l["annotations"]["in-toto.io/predicate-type"].as_str().unwrap()).collect();
    assert_eq!(preds, BTreeSet::from(["https://spdx.dev/Document", "https://slsa.dev/provenance/v1"]));
    let table = sb.kiln().arg("sbom").arg(&r).arg("--insecure-registry").arg(registry.host()).run();
    table.assert_success();
    table.assert_stdout_contains("pkg:pypi/demo@1.0");
}

#[test]
fn attestation_flags_are_checked_before_any_work() {
    let sb = Sandbox::new();
    let ctx = sb.new_context("flags").file("Dockerfile", "FROM scratch\n").build();
    let rows: &[(&[&str], &str)] = &[
        (&["--attest", "type=sbom,scan-contxt=true"], "unknown option \"scan-contxt\" (did you mean scan-context?)"),
        (&["--attest", "type=sbmo"], "unknown attestation type \"sbmo\" (did you mean sbom?)"),
        (&["--provenance=mode=maximal"], "mode=maximal: expected min or max"),
        (&["--sbom=generator=anchore/syft:latest"], "kiln runs no scanner image"),
        (&["--sbom", "--attest-style=buildkt"], "(did you mean buildkit?)"),
    ];
    for (flags, want) in rows {
        let out = sb.kiln().build().args(*flags).arg(&ctx).run();
        out.assert_failure_containing(want);
    }
}

/// A registry that refuses artifact manifests: the build fails naming it, unless the
/// attestation says ignore-error=true; the image itself was pushed first either way.
#[test]
fn refused_referrer_fails_the_build_unless_ignored() {
    use kiln_integration::faultproxy::{Fault, FaultProxy, Rule};
    let registry = Registry::start();
    let sb = Sandbox::new();
    let ctx = small_context(&sb, &registry, "refused");
    let proxy = FaultProxy::start(&registry.host());
    let refuse = || {
        proxy.clear_rules();
        // Referrers are pushed by digest (the image, one platform, by tag).
        let body = r#"{"errors":[{"code":"MANIFEST_INVALID","message":"artifact manifests are not accepted here"}]}"#;
        proxy.add_rule(Rule::new("PUT", "/manifests/sha256:", Fault::Respond(400, body.to_string()), 100));
    };
    refuse();
    let r = format!("{}/attest/refused:1", proxy.host());
    let out = sb.kiln().build().arg("--sbom").arg("--insecure-registry").arg(proxy.host()).tag(&r).push().arg(&ctx).run();
    out.assert_failure_containing("ignore-error=true");
    out.assert_failure_containing(&proxy.host());
    assert!(registry.tags("attest/refused").contains(&"1".to_string()), "the image was not pushed before its attestation");
    refuse();
    let r2 = format!("{}/attest/refused:2", proxy.host());
    let ok = sb.kiln().build().arg("--sbom=ignore-error=true").arg("--insecure-registry").arg(proxy.host()).tag(&r2).push().arg(&ctx).run();
    ok.assert_success();
    ok.assert_stderr_contains("ignore-error=true: the build goes on");
    assert!(proxy.injected() >= 2, "the proxy refused nothing: {:?}", proxy.log());
}

/// Every platform of a multi-platform image gets its own attestations (subject: that
/// platform's manifest); the index stays that of a build without them.
#[test]
fn each_platform_has_its_own_referrers() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!("FROM {}/base/busybox:multi\nCOPY hello /hello\n", registry.host());
    let ctx = sb.new_context("multi").file("Dockerfile", df).file("hello", "hi\n").build();
    let plain = registry.reference("attest/multi:plain");
    let r = registry.reference("attest/multi:1");
    let build = |reference: &str, extra: &[&str]| {
        sb.kiln().build().arg("--platform").arg("linux/amd64,linux/arm64").env("SOURCE_DATE_EPOCH", "1700000000").args(extra).tag(reference).push().arg(&ctx).run()
    };
    build(&plain, &[]).assert_success();
    build(&r, &["--sbom", "--provenance=mode=max"]).assert_success();
    assert_eq!(registry.manifest_raw("attest/multi", "1"), registry.manifest_raw("attest/multi", "plain"), "attestations changed the index");
    let index = registry.manifest("attest/multi", "1");
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    for e in entries {
        let d = e["digest"].as_str().unwrap();
        let refs = registry.manifest("attest/multi", &d.replace(':', "-"));
        let arch = e["platform"]["architecture"].as_str().unwrap();
        assert_eq!(refs["manifests"].as_array().unwrap().len(), 2, "{arch}: {refs}");
        for m in refs["manifests"].as_array().unwrap() {
            let a = registry.manifest("attest/multi", m["digest"].as_str().unwrap());
            assert_eq!(a["subject"]["digest"], d);
            if a["artifactType"] == "application/vnd.in-toto+json" {
                let st: Value = serde_json::from_slice(&blob(&registry, "attest/multi", a["layers"][0]["digest"].as_str().unwrap())).unwrap();
                let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"].to_string();
                assert!(deps.contains(&format!("platform=linux%2F{arch}")), "{arch}: {deps}");
            }
        }
    }
    let out = sb.kiln().arg("attestations").arg(&r).arg("--platform").arg("linux/arm64").arg("--format").arg("json").arg("--insecure-registry").arg(registry.host()).run();
    out.assert_success();
    let found: Vec<Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|f| f["platform"] == "linux/arm64/v8" || f["platform"] == "linux/arm64"), "{found:?}");
}

/// A context that is a git work tree: provenance names its commit and origin
/// (without the credentials in the remote URL).
#[test]
fn provenance_names_the_git_commit_of_the_context() {
    let registry = Registry::start();
    seed_base_images(&registry);
    let sb = Sandbox::new();
    let df = format!("FROM {}/base/busybox:latest\nCOPY a /a\n", registry.host());
    let ctx = sb.new_context("gitctx").file("Dockerfile", df).file("a", "a\n").build();
    let git = |args: &[&str]| {
        let out = kiln_integration::run_with_timeout(sb.user_command("git").args(args).current_dir(&ctx), Duration::from_secs(60));
        assert!(out.status.success(), "git {args:?}: {out}");
        out.stdout.trim().to_string()
    };
    git(&["init", "-q"]);
    git(&["-c", "user.email=t@example.com", "-c", "user.name=t", "add", "."]);
    git(&["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-q", "-m", "one"]);
    git(&["remote", "add", "origin", "https://ci-bot:s3cret-pat@git.example.com/team/app.git"]);
    let commit = git(&["rev-parse", "HEAD"]);
    let dir = sb.out_path("out");
    sb.kiln().build().arg("--provenance").arg("--output").arg(format!("type=local,dest={}", dir.display())).arg(&ctx).run().assert_success();
    let text = fs::read_to_string(dir.join("provenance.json")).unwrap();
    assert!(!text.contains("s3cret-pat"), "credentials of the remote reached provenance: {text}");
    let st: Value = serde_json::from_str(&text).unwrap();
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert!(deps.iter().any(|d| d["uri"] == "https://git.example.com/team/app.git" && d["digest"]["sha1"] == commit.as_str()), "{deps:?}");
    assert_eq!(st["predicate"]["buildDefinition"]["externalParameters"]["configSource"]["uri"], "https://git.example.com/team/app.git");
}
