//! The shape of the code, as ARCHITECTURE.md states it: no import circle in any
//! crate, imports in the builder pointing down its layer list, and no product
//! source file over 700 lines (`scripts/import-graph.py`, `scripts/code-size.py`).

use std::process::Command;

use kiln_integration::paths::repo_root;

fn run(script: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo_root().join("scripts").join(script))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("python3 runs (scripts/setup.sh installs it)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn no_import_circle_in_any_crate() {
    for krate in ["oci", "frontend", "snapshotter", "cache", "builder", "integration"] {
        let (ok, out) = run("import-graph.py", &[&format!("{krate}/src")]);
        assert!(ok, "{krate}:\n{out}");
    }
}

#[test]
fn builder_imports_point_down_its_layers() {
    let layers = "cmd,cli,solver,plan,export,attest,steps,exec|context,image,options,progress|fsutil,timefmt";
    let (ok, out) = run("import-graph.py", &["builder/src", "--layers", layers]);
    assert!(ok, "{out}");
}

#[test]
fn no_product_file_over_700_lines() {
    let (ok, out) = run("code-size.py", &["--fn-max", "100000", "oci/src", "frontend/src", "snapshotter/src", "cache/src", "builder/src"]);
    assert!(ok, "{out}");
}

#[test]
fn the_checker_finds_a_circle() {
    // The test above means something only if the script can fail.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a.rs"), "use crate::b::X;\n").unwrap();
    std::fs::write(d.path().join("b.rs"), "pub fn f() { crate::a::g() }\n").unwrap();
    let (ok, out) = run("import-graph.py", &[d.path().to_str().unwrap()]);
    assert!(!ok && out.contains("circle"), "{out}");
}
