//! The live terminal view of `--progress tty` (buildx's manner), drawn with
//! indicatif: one line per running step with its timer, steps of parallel stages
//! one under the other, the last lines of a RUN's output under its step while it
//! runs (collapsed when it ends), and on failure that step's whole output.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kiln_cache::registry::Transferred;

/// Output lines shown under a running step.
const TAIL: usize = 6;
/// Output lines kept per step for the failure report.
const KEEP: usize = 5000;

struct StepBar {
    bar: ProgressBar,
    head: String,
    tail: VecDeque<String>,
    all: VecDeque<String>,
}

pub struct Live {
    multi: MultiProgress,
    bars: Mutex<HashMap<usize, StepBar>>,
    /// Registry bytes pulled and pushed, shown on a line of their own once nonzero.
    transferred: Arc<Transferred>,
    stop: Arc<AtomicBool>,
    transfer_bar: Arc<Mutex<Option<ProgressBar>>>,
    /// Bytes of layers written by this build.
    layers: Arc<std::sync::atomic::AtomicU64>,
}

fn running_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner:.cyan} {msg} {elapsed:.dim}").unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Live {
    /// `None` when stderr is no terminal (the caller then prints plain lines).
    pub fn new() -> Option<Live> {
        let target = ProgressDrawTarget::stderr_with_hz(10);
        if target.is_hidden() {
            return None;
        }
        let live = Live {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(HashMap::new()),
            transferred: Arc::new(Transferred::default()),
            stop: Arc::new(AtomicBool::new(false)),
            transfer_bar: Arc::new(Mutex::new(None)),
            layers: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        live.watch_transfers();
        Some(live)
    }

    /// The counter the registry client adds blob bytes to.
    pub fn transferred(&self) -> Arc<Transferred> {
        self.transferred.clone()
    }

    /// The counter layer writers add their compressed bytes to.
    pub fn layer_bytes(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.layers.clone()
    }

    /// A line `⇣ pulled 12.3 MiB  ⇡ pushed 1.0 MiB  ✎ layers written 40 MiB`, kept current
    /// while the build runs.
    fn watch_transfers(&self) {
        let (multi, t, stop, slot) = (self.multi.clone(), self.transferred.clone(), self.stop.clone(), self.transfer_bar.clone());
        let layers = self.layers.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (down, up) = (t.pulled.load(Ordering::Relaxed), t.pushed.load(Ordering::Relaxed));
                let written = layers.load(Ordering::Relaxed);
                let mut bar = slot.lock().unwrap_or_else(|p| p.into_inner());
                if down + up + written > 0 && !stop.load(Ordering::Relaxed) {
                    let b = bar.get_or_insert_with(|| {
                        let b = multi.add(ProgressBar::new_spinner());
                        b.set_style(running_style());
                        b.enable_steady_tick(Duration::from_millis(100));
                        b
                    });
                    b.set_message(format!("⇣ pulled {}  ⇡ pushed {}  ✎ layers written {}", HumanBytes(down), HumanBytes(up), HumanBytes(written)));
                }
                drop(bar);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }

    pub fn start(&self, n: usize, head: &str) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(running_style());
        bar.set_message(head.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = bars.insert(n, StepBar { bar, head: head.to_string(), tail: VecDeque::new(), all: VecDeque::new() }) {
            old.bar.finish_and_clear();
        }
    }

    /// One line of a running step's output.
    pub fn log(&self, n: usize, line: &str) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = bars.get_mut(&n) else {
            drop(bars);
            self.println(line);
            return;
        };
        b.tail.push_back(line.to_string());
        if b.tail.len() > TAIL {
            b.tail.pop_front();
        }
        b.all.push_back(line.to_string());
        if b.all.len() > KEEP {
            b.all.pop_front();
        }
        let shown: Vec<String> = b.tail.iter().map(|l| format!("\x1b[2m  │ {l}\x1b[0m")).collect();
        b.bar.set_message(format!("{}\n{}", b.head, shown.join("\n")));
    }

    /// The step ended: one line, its output collapsed.
    pub fn finish(&self, n: usize, line: &str) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        match bars.remove(&n) {
            // Finished steps scroll up above the live ones, as in buildx.
            Some(b) => {
                b.bar.finish_and_clear();
                self.multi.remove(&b.bar);
                let _ = self.multi.println(line);
            }
            None => {
                drop(bars);
                let _ = self.multi.println(line);
            }
        }
    }

    /// The step failed: its line marked, then every line of its output.
    pub fn fail(&self, n: usize) {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = bars.remove(&n) {
            b.bar.finish_and_clear();
            self.multi.remove(&b.bar);
            let _ = self.multi.println(format!("\x1b[31m✗\x1b[0m {}", b.head));
            for l in &b.all {
                let _ = self.multi.println(format!("  │ {l}"));
            }
        }
    }

    /// The build ended: no step is running any more.
    pub fn clear(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(b) = self.transfer_bar.lock().unwrap_or_else(|p| p.into_inner()).take() {
            b.finish_and_clear();
            self.multi.remove(&b);
        }
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        for (_, b) in bars.drain() {
            b.bar.finish_and_clear();
            self.multi.remove(&b.bar);
        }
    }

    /// A line above the live view.
    pub fn println(&self, s: &str) {
        let _ = self.multi.println(s);
    }
}
