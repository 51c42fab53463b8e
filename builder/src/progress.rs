//! Build progress as plain lines on stderr (a TTY renderer and JSON events come later).

pub struct Progress {
    total: usize,
    current: usize,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Progress { total, current: 0 }
    }

    /// Announce the next step; returns its number.
    pub fn step(&mut self, text: &str) -> usize {
        self.current += 1;
        eprintln!("[{}/{}] {}", self.current, self.total, text);
        self.current
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn info(&self, text: &str) {
        eprintln!("  {text}");
    }
}
