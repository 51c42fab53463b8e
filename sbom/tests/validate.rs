//! A fixture tree with packages of every ecosystem kiln reads (records written as
//! each format's documentation describes them, and a real Go binary of this
//! machine), scanned; both documents must pass the reference validators
//! (`pyspdxtools` of PyPI `spdx-tools`, `cyclonedx-python-lib`'s JSON schema
//! validator, installed by scripts/setup.sh in /opt/kiln-sbom-venv).

use std::fs;
use std::path::Path;
use std::process::Command;

use kiln_sbom::{DocumentInfo, Ecosystem, Subject};

const VENV: &str = "/opt/kiln-sbom-venv";

fn write(root: &Path, path: &str, text: &str) {
    let p = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, text).unwrap();
}

/// dpkg (with files and a DEP-5 copyright), apk, python, npm, Cargo.lock, Go.
fn fixture(root: &Path) {
    write(root, "/etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n");
    write(
        root,
        "/var/lib/dpkg/status",
        "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nSource: glibc\nVersion: 2.36-9+deb12u4\nMaintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>\nDescription: GNU C Library\n shared libraries\n\n\
         Package: perl-base\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.36.0-7+deb12u1\n\n\
         Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1.0\n",
    );
    write(root, "/var/lib/dpkg/info/libc6:amd64.list", "/.\n/usr\n/usr/lib\n/usr/lib/libc.so.6\n/usr/share/doc/libc6/copyright\n");
    write(root, "/usr/lib/libc.so.6", "not really libc");
    write(root, "/usr/share/doc/libc6/copyright", "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nLicense: LGPL-2.1+\n\nFiles: x\nLicense: GPL-2+ with some exception\n");
    write(root, "/lib/apk/db/installed", "P:musl\nV:1.2.4-r2\nA:x86_64\nL:MIT\nF:lib\nR:ld-musl-x86_64.so.1\n");
    write(root, "/lib/ld-musl-x86_64.so.1", "musl");
    write(root, "/opt/venv/lib/python3.11/site-packages/six-1.16.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: six\nVersion: 1.16.0\nLicense: MIT\n\nlong description\n");
    write(root, "/opt/venv/lib/python3.11/site-packages/six-1.16.0.dist-info/RECORD", "six.py,sha256=abc,34549\nsix-1.16.0.dist-info/METADATA,,\n");
    write(root, "/opt/venv/lib/python3.11/site-packages/six.py", "import sys\n");
    write(root, "/usr/lib/python3/dist-packages/Flask_Thing-2.0.egg-info/PKG-INFO", "Metadata-Version: 1.1\nName: Flask_Thing\nVersion: 2.0\nClassifier: License :: OSI Approved :: BSD License\n");
    write(root, "/app/node_modules/@types/node/package.json", r#"{"name":"@types/node","version":"20.1.0","license":"MIT"}"#);
    write(root, "/app/node_modules/left-pad/package.json", r#"{"name":"left-pad","version":"1.3.0","license":"WTFPL"}"#);
    write(root, "/app/package-lock.json", r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},"node_modules/left-pad":{"version":"1.3.0"},"node_modules/weird":{"version":"0.1.0","license":"SEE LICENSE IN LICENSE.txt"}}}"#);
    write(root, "/src/Cargo.lock", "version = 4\n\n[[package]]\nname = \"anyhow\"\nversion = \"1.0.86\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n");
    // A real Go binary of this machine (scripts/setup.sh installs skopeo; Debian builds
    // it outside module mode, so its build info names only its main package).
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::copy("/usr/bin/skopeo", root.join("usr/bin/skopeo")).expect("/usr/bin/skopeo (installed by scripts/setup.sh)");
    // Java: a Maven-built jar (deflated pom.properties) and one with only a manifest (stored).
    let jars = root.join("opt/app/lib");
    fs::create_dir_all(&jars).unwrap();
    let py = "import sys, zipfile\n\
              with zipfile.ZipFile(sys.argv[1] + '/guava-33.0.0-jre.jar', 'w', zipfile.ZIP_DEFLATED) as z:\n\
              \x20   z.writestr('META-INF/MANIFEST.MF', 'Manifest-Version: 1.0\\n')\n\
              \x20   z.writestr('META-INF/maven/com.google.guava/guava/pom.properties', '#gen\\ngroupId=com.google.guava\\nartifactId=guava\\nversion=33.0.0-jre\\n')\n\
              with zipfile.ZipFile(sys.argv[1] + '/plain.jar', 'w', zipfile.ZIP_STORED) as z:\n\
              \x20   z.writestr('META-INF/MANIFEST.MF', 'Manifest-Version: 1.0\\nImplementation-Title: plain\\nImplementation-Version: 2.1\\nImplementation-Vendor-Id: org.example\\n')\n";
    let st = Command::new("python3").arg("-c").arg(py).arg(&jars).status().expect("python3 (scripts/setup.sh installs it)");
    assert!(st.success());
    rpm_db(root);
    // Symlinks out of the root are never followed.
    std::os::unix::fs::symlink("/var/lib/dpkg", root.join("opt/host-dpkg")).unwrap();
    std::os::unix::fs::symlink("/", root.join("hostroot")).unwrap();
}

/// A real rpm ≥ 4.16 SQLite database: a package built by rpmbuild, recorded by
/// `rpm -i --justdb` (Debian's `rpm`, installed by scripts/setup.sh).
fn rpm_db(root: &Path) {
    let t = tempfile::tempdir().unwrap();
    let spec = t.path().join("demo.spec");
    fs::write(&spec, "Name: kiln-demo\nVersion: 1.2\nRelease: 3\nEpoch: 2\nSummary: demo\nLicense: MIT\nBuildArch: noarch\n%description\ndemo\n\
        %install\nmkdir -p %{buildroot}/usr/share/kiln-demo\necho hi > %{buildroot}/usr/share/kiln-demo/README\n%files\n/usr/share/kiln-demo/README\n").unwrap();
    let run = |c: &mut Command| {
        let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e} (scripts/setup.sh installs rpm)"));
        assert!(out.status.success(), "{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(Command::new("rpmbuild").arg("-bb").arg("--quiet").arg("--define").arg(format!("_topdir {}", t.path().join("top").display())).arg(&spec));
    let db = root.join("var/lib/rpm");
    fs::create_dir_all(&db).unwrap();
    let rpm = |c: &mut Command| {
        c.arg("--define").arg("_db_backend sqlite").arg("--dbpath").arg(&db);
    };
    let mut init = Command::new("rpm");
    rpm(&mut init);
    run(init.arg("--initdb"));
    let mut install = Command::new("rpm");
    rpm(&mut install);
    run(install.args(["-i", "--nodeps", "--justdb", "--noscripts"]).arg(t.path().join("top/RPMS/noarch/kiln-demo-1.2-3.noarch.rpm")));
    write(root, "/usr/share/kiln-demo/README", "hi\n");
}

fn doc() -> DocumentInfo {
    DocumentInfo {
        subject: Subject { name: "registry:5000/app:1".into(), digest: Some(format!("sha256:{}", "ab".repeat(32))), platform: "linux/amd64".into() },
        created: "2023-11-14T22:13:20Z".into(),
        tool: "kiln-0.1.0".into(),
    }
}

#[test]
fn every_ecosystem_is_found() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let inv = kiln_sbom::scan(d.path()).unwrap();
    let has = |e: Ecosystem, purl: &str| inv.packages.iter().any(|p| p.ecosystem == e && p.purl == purl);
    assert!(has(Ecosystem::Deb, "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc"), "{:#?}", inv.packages);
    assert!(has(Ecosystem::Deb, "pkg:deb/debian/perl-base@5.36.0-7%2Bdeb12u1?arch=amd64&distro=debian-12"));
    assert!(!inv.packages.iter().any(|p| p.name == "gone"), "a removed package is not installed");
    assert!(has(Ecosystem::Apk, "pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12"));
    assert!(has(Ecosystem::Python, "pkg:pypi/six@1.16.0"));
    assert!(has(Ecosystem::Python, "pkg:pypi/flask-thing@2.0"));
    assert!(has(Ecosystem::Npm, "pkg:npm/%40types/node@20.1.0"));
    assert!(has(Ecosystem::Npm, "pkg:npm/weird@0.1.0"));
    assert_eq!(inv.packages.iter().filter(|p| p.name == "left-pad").count(), 1, "installed and locked: listed once");
    assert!(has(Ecosystem::Cargo, "pkg:cargo/anyhow@1.0.86"));
    assert!(has(Ecosystem::Maven, "pkg:maven/com.google.guava/guava@33.0.0-jre"), "{:?}", inv.packages.iter().filter(|p| p.ecosystem == Ecosystem::Maven).collect::<Vec<_>>());
    assert!(has(Ecosystem::Maven, "pkg:maven/org.example/plain@2.1"));
    assert!(has(Ecosystem::Rpm, "pkg:rpm/debian/kiln-demo@1.2-3?arch=noarch&distro=debian-12&epoch=2"), "{:?}", inv.packages.iter().filter(|p| p.ecosystem == Ecosystem::Rpm).collect::<Vec<_>>());
    let demo = inv.packages.iter().find(|p| p.name == "kiln-demo").unwrap();
    assert_eq!(demo.files, ["/usr/share/kiln-demo/README"]);
    assert_eq!(demo.licenses, ["MIT"]);
    assert!(
        inv.packages.iter().any(|p| p.ecosystem == Ecosystem::Go && p.name == "github.com/containers/skopeo/cmd/skopeo"),
        "skopeo's Go modules: {:?}",
        inv.packages.iter().filter(|p| p.ecosystem == Ecosystem::Go).map(|p| &p.name).collect::<Vec<_>>()
    );
    let libc = inv.packages.iter().find(|p| p.name == "libc6").unwrap();
    assert_eq!(libc.files, ["/usr/lib/libc.so.6", "/usr/share/doc/libc6/copyright"]);
    assert_eq!(libc.licenses, ["LGPL-2.1+", "GPL-2+ with some exception"]);
    assert!(inv.checksums.contains_key("/usr/lib/libc.so.6"));
    let six = inv.packages.iter().find(|p| p.name == "six").unwrap();
    assert!(six.files.contains(&"/opt/venv/lib/python3.11/site-packages/six.py".to_string()), "{:?}", six.files);
    // Nothing came from the host through the symlinks.
    let host_packages = fs::read_to_string("/var/lib/dpkg/status").unwrap_or_default();
    assert!(host_packages.contains("Package: bash") && !inv.packages.iter().any(|p| p.name == "bash"), "the host's packages leaked in");
}

#[test]
fn same_tree_same_bytes() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let a = kiln_sbom::scan(d.path()).unwrap();
    let b = kiln_sbom::scan(d.path()).unwrap();
    assert_eq!(kiln_sbom::spdx_json(&a, &doc()), kiln_sbom::spdx_json(&b, &doc()));
    assert_eq!(kiln_sbom::cyclonedx_json(&a, &doc()), kiln_sbom::cyclonedx_json(&b, &doc()));
}

#[test]
fn documents_pass_the_reference_validators() {
    let d = tempfile::tempdir().unwrap();
    fixture(d.path());
    let inv = kiln_sbom::scan(d.path()).unwrap();
    let spdx = d.path().join("out.spdx.json");
    let cdx = d.path().join("out.cdx.json");
    fs::write(&spdx, kiln_sbom::spdx_json(&inv, &doc())).unwrap();
    fs::write(&cdx, kiln_sbom::cyclonedx_json(&inv, &doc())).unwrap();
    let bin = Path::new(VENV).join("bin/pyspdxtools");
    assert!(bin.exists(), "{} is missing: run scripts/setup.sh", bin.display());
    let out = Command::new(&bin).arg("-i").arg(&spdx).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "pyspdxtools:\n{text}");
    let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\n\
                  e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\nprint(e or '')\nsys.exit(1 if e else 0)\n";
    let out = Command::new(Path::new(VENV).join("bin/python3")).arg("-c").arg(script).arg(&cdx).output().unwrap();
    assert!(out.status.success(), "cyclonedx-python-lib: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // A broken document is rejected (the validators do validate).
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&spdx).unwrap()).unwrap();
    v["packages"][1]["licenseDeclared"] = "NOT A LICENSE (".into();
    fs::write(&spdx, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(!Command::new(&bin).arg("-i").arg(&spdx).output().unwrap().status.success());
}
