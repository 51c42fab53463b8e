//! Layer write throughput: `layer_write DIR gzip|zstd|none [LEVEL] [REPEAT]`.
//! Writes DIR (treated as an upperdir) as a layer to /dev/null-like sink and
//! prints input bytes, output bytes, seconds and MiB/s (of uncompressed tar); then
//! applies one such layer into a temporary directory and prints the apply time.
//! Run by bench/layer-write.sh.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use kiln_snapshotter::{apply_layer, write_layer, Compression, DiffOptions};

struct Count(u64);
impl Write for Count {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(args.get(1).expect("usage: layer_write DIR gzip|zstd|none [LEVEL] [REPEAT]"));
    let compression: Compression = match args.get(2).map(|s| s.parse()) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            eprintln!("layer_write: {e}");
            std::process::exit(2);
        }
        None => Compression::default(),
    };
    let level: Option<i32> = args.get(3).and_then(|s| s.parse().ok());
    let repeat: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(3);
    let opts = DiffOptions {
        compression,
        gzip_level: level.map(|l| l as u32),
        zstd_level: level,
        source_date_epoch: Some(0),
        ..Default::default()
    };
    let mut counter = Count(0);
    write_layer(&dir, &DiffOptions { compression: Compression::None, ..opts.clone() }, &mut counter).expect("tar pass");
    let tar_bytes = counter.0;
    let mut best = f64::MAX;
    let mut out_bytes = 0u64;
    for _ in 0..repeat {
        let mut sink = Count(0);
        let t = Instant::now();
        write_layer(&dir, &opts, &mut sink).expect("write_layer");
        best = best.min(t.elapsed().as_secs_f64());
        out_bytes = sink.0;
    }
    let mib = tar_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "{:?} level={} tar={:.1}MiB out={:.1}MiB ratio={:.3} best={:.2}s throughput={:.0}MiB/s",
        compression,
        level.map(|l| l.to_string()).unwrap_or_else(|| "default".into()),
        mib,
        out_bytes as f64 / (1024.0 * 1024.0),
        out_bytes as f64 / tar_bytes.max(1) as f64,
        best,
        mib / best
    );

    // The way back: apply the layer just written (the round trip the tests check for
    // correctness), timed.
    let tmp = tempfile::tempdir().expect("temp dir");
    let blob = tmp.path().join("layer");
    let d = write_layer(&dir, &opts, std::fs::File::create(&blob).expect("layer file")).expect("write_layer");
    let back = tmp.path().join("back");
    std::fs::create_dir(&back).expect("apply target");
    let media = match compression {
        Compression::Gzip | Compression::Estargz => kiln_oci::media::LayerCompression::Gzip,
        Compression::Zstd | Compression::ZstdChunked => kiln_oci::media::LayerCompression::Zstd,
        Compression::None => kiln_oci::media::LayerCompression::None,
    };
    let t = Instant::now();
    let a = apply_layer(std::fs::File::open(&blob).expect("layer file"), media, &back).expect("apply_layer");
    assert_eq!(a.diff_id, d.diff_id, "the applied layer's diffID differs from the written one");
    let secs = t.elapsed().as_secs_f64();
    println!("apply {} entries in {secs:.2}s ({:.0}MiB/s of tar), {} skipped", a.entries, mib / secs, a.skipped.len());
}
