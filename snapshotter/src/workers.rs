//! A small fixed pool of threads taking jobs from one queue and answering on
//! another, used by parallel gzip (`pgzip`) and by unpack (`unpack_pool`). Each
//! user keeps its own accounting (order, bounds); this holds the threads.
//!
//! A job that panics answers with [`Lost`] instead of leaving the caller waiting
//! for an answer that would never come. Dropping the pool closes the queue, lets
//! the threads finish what they hold, and joins them.

use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

/// A worker died (a job panicked) or the pool was shut: no answer will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lost;

pub(crate) struct Workers<J, R> {
    jobs: Option<mpsc::SyncSender<J>>,
    done: mpsc::Receiver<Option<R>>,
    threads: Vec<JoinHandle<()>>,
}

impl<J: Send + 'static, R: Send + 'static> Workers<J, R> {
    /// `n` threads (at least one), each with its own state from `init`, running
    /// `work` on each job. At most `queue` jobs wait unclaimed; `send` blocks beyond.
    pub(crate) fn start<S, I, F>(n: usize, queue: usize, init: I, work: F) -> Self
    where
        I: Fn() -> S + Send + Sync + 'static,
        F: Fn(&mut S, J) -> R + Send + Sync + 'static,
    {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<J>(queue.max(1));
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let (done_tx, done) = mpsc::channel::<Option<R>>();
        let init = Arc::new(init);
        let work = Arc::new(work);
        let threads = (0..n.max(1))
            .map(|_| {
                let (rx, tx, init, work) = (Arc::clone(&jobs_rx), done_tx.clone(), Arc::clone(&init), Arc::clone(&work));
                std::thread::spawn(move || {
                    let mut state = init();
                    loop {
                        // A poisoned lock only means another worker panicked: stop.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&mut state, job)));
                        let failed = r.is_err();
                        if tx.send(r.ok()).is_err() || failed {
                            return;
                        }
                    }
                })
            })
            .collect();
        Workers { jobs: Some(jobs_tx), done, threads }
    }

    pub(crate) fn send(&self, job: J) -> Result<(), Lost> {
        self.jobs.as_ref().ok_or(Lost)?.send(job).map_err(|_| Lost)
    }

    /// The next answer, in the order they finish.
    pub(crate) fn recv(&self) -> Result<R, Lost> {
        self.done.recv().map_err(|_| Lost)?.ok_or(Lost)
    }
}

impl<J, R> Drop for Workers<J, R> {
    fn drop(&mut self) {
        self.jobs = None;
        while self.done.recv().is_ok() {}
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_every_job_with_per_thread_state() {
        let w = Workers::start(3, 4, || 0u32, |count: &mut u32, j: u64| {
            *count += 1;
            j * 2
        });
        for j in 0..4 {
            w.send(j).unwrap();
        }
        let mut got: Vec<u64> = (0..4).map(|_| w.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, [0, 2, 4, 6]);
    }

    #[test]
    fn a_panicking_job_is_reported_not_waited_for() {
        let w = Workers::start(1, 2, || (), |_: &mut (), j: u32| {
            if j == 1 {
                panic!("job {j} fails on purpose");
            }
            j
        });
        w.send(0).unwrap();
        w.send(1).unwrap();
        assert_eq!(w.recv(), Ok(0));
        assert_eq!(w.recv(), Err(Lost));
    }
}
