//! Inflate speed of the decoders kiln could use, on one gzip file (bench/inflate.sh):
//! `cargo run --release -p kiln-snapshotter --example inflate -- FILE.gz [RUNS]`.
//! Prints, per decoder, the best of RUNS wall times and the bytes out; the outputs
//! must agree (a decoder that disagrees is an error, not a result).

use std::io::Read;
use std::time::{Duration, Instant};

fn drain(mut r: impl Read) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf)? {
            0 => return Ok(n),
            k => n += k as u64,
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: inflate FILE.gz [RUNS]")?;
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(3);
    let open = || std::fs::File::open(&path).map(|f| std::io::BufReader::with_capacity(256 * 1024, f));
    let decoders: [(&str, &dyn Fn() -> std::io::Result<u64>); 2] = [
        ("isa-l (kiln_snapshotter::gunzip)", &|| drain(kiln_snapshotter::gunzip::MultiGzDecoder::new(open()?))),
        ("zlib-rs (flate2 MultiGzDecoder)", &|| drain(flate2::read::MultiGzDecoder::new(open()?))),
    ];
    let mut sizes = Vec::new();
    for (name, run) in decoders {
        let mut best = Duration::MAX;
        let mut out = 0;
        for _ in 0..runs {
            let t = Instant::now();
            out = run()?;
            best = best.min(t.elapsed());
        }
        println!("{name}: {:.3} s, {out} bytes out", best.as_secs_f64());
        sizes.push(out);
    }
    if sizes.windows(2).any(|w| w[0] != w[1]) {
        return Err(format!("the decoders disagree on the size: {sizes:?}").into());
    }
    Ok(())
}
