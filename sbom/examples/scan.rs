//! `cargo run --release -p kiln-sbom --example scan -- DIR [--format spdx|cyclonedx] [-o FILE]`:
//! scans DIR as kiln does an image's rootfs and writes the document (the benchmark's driver).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: scan DIR [--format spdx|cyclonedx] [-o FILE]");
        std::process::exit(2);
    };
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let format = value("--format").unwrap_or_else(|| "spdx".into());
    let started = std::time::Instant::now();
    let inv = match kiln_sbom::scan(std::path::Path::new(dir)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("scan: {e}");
            std::process::exit(1);
        }
    };
    let scanned = started.elapsed();
    let doc = kiln_sbom::DocumentInfo {
        subject: kiln_sbom::Subject { name: dir.clone(), digest: None, platform: "linux/amd64".into() },
        created: "2023-11-14T22:13:20Z".into(),
        tool: "kiln-bench".into(),
    };
    let bytes = if format == "cyclonedx" { kiln_sbom::cyclonedx_json(&inv, &doc) } else { kiln_sbom::spdx_json(&inv, &doc) };
    let total = started.elapsed();
    match value("-o") {
        Some(f) => {
            if let Err(e) = std::fs::write(&f, &bytes) {
                eprintln!("writing {f}: {e}");
                std::process::exit(1);
            }
        }
        None => {}
    }
    for w in &inv.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{} packages, {} files seen, {} checksummed; scan {:.3}s, with {format} {:.3}s, {} bytes",
        inv.packages.len(),
        inv.files_seen,
        inv.checksums.len(),
        scanned.as_secs_f64(),
        total.as_secs_f64(),
        bytes.len()
    );
}
