//! Build progress: plain lines (CI logs), the same with timings and emphasis on a
//! terminal, or one JSON event per line for tools (`--progress json`).
//!
//! One reporter per process (the build is one per process); steps of parallel
//! stages report through it from several threads, each line written whole.

use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::json;

mod tty;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plain,
    Tty,
    Json,
    /// `-q` / `--progress quiet`: warnings only; a failing RUN's output is shown.
    Quiet,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(if std::io::stderr().is_terminal() { Mode::Tty } else { Mode::Plain }),
            "plain" => Ok(Mode::Plain),
            "tty" => Ok(Mode::Tty),
            "json" | "rawjson" => Ok(Mode::Json),
            "quiet" => Ok(Mode::Quiet),
            _ => Err(format!("unknown progress mode {s:?} (auto, plain, tty, json, quiet)")),
        }
    }
}

pub struct Reporter {
    mode: Mode,
    start: Instant,
    /// The live view in tty mode on a terminal.
    live: Option<tty::Live>,
    /// `--log-timestamp`: each plain line starts with the UTC time (Kaniko's flag).
    timestamps: bool,
}

static REPORTER: OnceLock<Reporter> = OnceLock::new();

/// Set the mode once, before the build starts (later calls keep the first).
pub fn init(mode: Mode) {
    init_with(mode, false);
}

/// [`init`], with `timestamps` on each plain line.
pub fn init_with(mode: Mode, timestamps: bool) {
    let live = if mode == Mode::Tty { tty::Live::new() } else { None };
    let _ = REPORTER.set(Reporter { mode, start: Instant::now(), live, timestamps });
}

pub fn get() -> &'static Reporter {
    REPORTER.get_or_init(|| Reporter { mode: Mode::Plain, start: Instant::now(), live: None, timestamps: false })
}

/// Where a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Running,
    Cached,
    Done,
}

/// A step's identity in messages: platform prefix, number, total, instruction.
pub struct StepRef<'a> {
    pub platform: &'a str,
    /// BuildKit's step name (`base 3/3`, `linux/arm64 2/4`); empty for a step that
    /// makes no operation (ENV, CMD, ...), which is shown without a number.
    pub name: &'a str,
    pub n: usize,
    pub total: usize,
    pub text: &'a str,
}

impl Reporter {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn json(&self, mut v: serde_json::Value) {
        v["time_ms"] = json!(self.start.elapsed().as_millis() as u64);
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        let _ = std::io::stderr().lock().write_all(&line);
    }

    fn line(&self, s: &str) {
        match &self.live {
            Some(l) => l.println(s),
            None if self.timestamps => {
                let now = crate::timefmt::rfc3339(crate::timefmt::now_secs());
                let _ = writeln!(std::io::stderr().lock(), "{now} {s}");
            }
            None => {
                let _ = writeln!(std::io::stderr().lock(), "{s}");
            }
        }
    }

    /// The byte counter of registry transfers when the live view shows them.
    pub fn transfers(&self) -> Option<std::sync::Arc<kiln_cache::registry::Transferred>> {
        self.live.as_ref().map(|l| l.transferred())
    }

    /// The counter of layer bytes written when the live view shows it.
    pub fn layer_bytes(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicU64>> {
        self.live.as_ref().map(|l| l.layer_bytes())
    }

    /// Whether RUN output comes through [`Reporter::log`] (JSON events, or the
    /// live view that shows it under its step), rather than straight to stderr.
    pub fn captures_run_output(&self) -> bool {
        self.mode == Mode::Json || self.live.is_some()
    }

    /// A RUN step failed: the live view shows its whole output.
    pub fn run_failed(&self, step: usize) {
        if let Some(l) = &self.live {
            l.fail(step);
        }
    }

    pub fn step(&self, s: &StepRef<'_>, state: State, secs: Option<f64>, layer: Option<(&str, u64)>) {
        let head = if s.name.is_empty() { "  ".to_string() } else { format!("[{}] ", s.name) };
        match self.mode {
            Mode::Json => {
                let mut v = json!({"event": "step", "state": match state { State::Running => "running", State::Cached => "cached", State::Done => "done" },
                    "step": s.n, "total": s.total, "name": s.name, "instruction": s.text});
                if !s.platform.is_empty() {
                    v["platform"] = json!(s.platform.trim());
                }
                if let Some(d) = secs {
                    v["duration_ms"] = json!((d * 1000.0) as u64);
                }
                if let Some((digest, size)) = layer {
                    v["layer"] = json!({"digest": digest, "size": size});
                }
                self.json(v);
            }
            Mode::Quiet => {}
            Mode::Tty if self.live.is_some() => {
                let live = self.live.as_ref().expect("checked");
                match state {
                    // FROM has nothing to wait for once its image is there.
                    State::Running if s.text.starts_with("FROM ") => live.finish(s.n, &format!("\x1b[32m✔\x1b[0m {head}{}", s.text)),
                    State::Running => live.start(s.n, &format!("\x1b[1m{head}{}\x1b[0m", s.text)),
                    State::Cached => live.finish(s.n, &format!("\x1b[32m✔\x1b[0m {head}{} \x1b[2mCACHED\x1b[0m", s.text)),
                    State::Done => {
                        let mut t = format!("\x1b[32m✔\x1b[0m {head}{}", s.text);
                        if let Some(d) = secs {
                            t.push_str(&format!(" \x1b[2m{d:.1}s\x1b[0m"));
                        }
                        if let Some((digest, size)) = layer {
                            t.push_str(&format!(" \x1b[2mlayer {} ({size} bytes)\x1b[0m", &digest[7.min(digest.len())..19.min(digest.len())]));
                        }
                        live.finish(s.n, &t);
                    }
                }
            }
            Mode::Plain | Mode::Tty => match state {
                State::Running => {
                    if self.mode == Mode::Tty {
                        self.line(&format!("\x1b[1m{head}{}\x1b[0m", s.text));
                    } else {
                        self.line(&format!("{head}{}", s.text));
                    }
                }
                State::Cached => self.line(&format!("{head}{} (cached)", s.text)),
                State::Done => {
                    let mut t = String::from("  done");
                    if let Some(d) = secs {
                        t.push_str(&format!(" {d:.1}s"));
                    }
                    if let Some((digest, size)) = layer {
                        t.push_str(&format!(", layer {} ({size} bytes)", &digest[7.min(digest.len())..19.min(digest.len())]));
                    }
                    self.line(&t);
                }
            },
        }
    }

    /// Anything else worth a line: pulls, pushes, written outputs.
    pub fn info(&self, kind: &str, message: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": kind, "message": message})),
            Mode::Quiet => {}
            _ => self.line(message),
        }
    }

    /// Output of a RUN step when [`Reporter::captures_run_output`]; otherwise it
    /// streams straight through.
    /// One line (or, for a line longer than `MAX_LOG_LINE`, one piece of it:
    /// `partial`) of a step's output as it came. JSON carries text in `data`; bytes
    /// that are not UTF-8 appear there replaced (U+FFFD) and exactly in
    /// `data_base64`, so nothing is lost and no later line is dropped.
    pub fn log_bytes(&self, step: usize, stream: &str, bytes: &[u8], partial: bool) {
        let text = String::from_utf8_lossy(bytes);
        match &self.live {
            Some(l) => l.log(step, &text),
            None => {
                let mut ev = json!({"event": "log", "step": step, "stream": stream, "data": text});
                if matches!(text, std::borrow::Cow::Owned(_)) {
                    use base64::Engine;
                    ev["data_base64"] = base64::engine::general_purpose::STANDARD.encode(bytes).into();
                }
                if partial {
                    ev["partial"] = true.into();
                }
                self.json(ev)
            }
        }
    }

    pub fn summary(&self, digest: &str, ran: usize, cached: usize) {
        if let Some(l) = &self.live {
            l.clear();
        }
        let secs = self.start.elapsed().as_secs_f64();
        match self.mode {
            Mode::Json => self.json(json!({"event": "done", "digest": digest, "steps_run": ran, "steps_cached": cached, "duration_ms": (secs * 1000.0) as u64})),
            Mode::Quiet => {}
            _ => self.line(&format!("built {digest} in {secs:.1}s ({ran} steps run, {cached} cached)")),
        }
    }

    /// A step that runs although a record existed for its place: what changed
    /// (`changes`: input kind, name, sentence), and with `--explain` every part.
    pub fn cache_miss(&self, s: &StepRef<'_>, changes: &[(&str, &str, &str)], full: Option<&str>) {
        match self.mode {
            Mode::Json => {
                let list: Vec<serde_json::Value> = changes.iter().map(|(i, n, d)| json!({"input": i, "name": n, "detail": d})).collect();
                let mut v = json!({"event": "cache_miss", "step": s.n, "name": s.name, "instruction": s.text, "changes": list});
                if let Some(f) = full {
                    v["comparison"] = json!(f);
                }
                self.json(v);
            }
            Mode::Quiet => {}
            _ => {
                let what: Vec<&str> = changes.iter().map(|(_, _, d)| *d).collect();
                let head = if s.name.is_empty() { String::new() } else { format!("[{}] ", s.name) };
                let mut line = format!("cache miss: {head}{}: {}", s.text, what.join("; "));
                if let Some(f) = full {
                    line.push('\n');
                    line.push_str(f.trim_end());
                }
                self.line(&line);
            }
        }
    }

    /// Something the user should know that does not stop the build.
    pub fn warn(&self, message: &str) {
        match self.mode {
            Mode::Json => self.json(json!({"event": "warning", "message": message})),
            _ => self.line(&format!("warning: {message}")),
        }
    }

    /// The build's final error (an event in JSON mode; the text mode prints it in
    /// `cmd::fail`, after this clears the live view);
    /// `run`: the failed RUN's step number and exit code, when that is what failed.
    pub fn error(&self, message: &str, run: Option<(usize, i32)>) {
        if let Some(l) = &self.live {
            l.clear();
        }
        if self.mode == Mode::Json {
            let mut ev = json!({"event": "error", "message": message});
            if let Some((step, code)) = run {
                ev["step"] = json!(step);
                ev["exit_code"] = json!(code);
            }
            self.json(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modes() {
        assert_eq!("plain".parse::<Mode>().unwrap(), Mode::Plain);
        assert_eq!("json".parse::<Mode>().unwrap(), Mode::Json);
        assert!("fancy".parse::<Mode>().is_err());
    }
}
