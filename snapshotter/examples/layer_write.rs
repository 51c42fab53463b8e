//! Layer write throughput: `layer_write DIR gzip|zstd|none [LEVEL] [REPEAT]`.
//! Writes DIR (treated as an upperdir) as a layer to /dev/null-like sink and
//! prints input bytes, output bytes, seconds and MiB/s (of uncompressed tar).
//! Run by bench/layer-write.sh.

use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Instant;

use kiln_snapshotter::{write_layer, Compression, DiffOptions};

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
    let compression: Compression = args.get(2).map(|s| s.parse().unwrap()).unwrap_or_default();
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
}

