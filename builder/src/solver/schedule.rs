//! Running jobs as their inputs finish, up to the machine's parallelism; the first
//! failure stops new jobs from starting.

use super::*;

/// Run the jobs, each as soon as its dependencies are done, up to the machine's
/// parallelism at once. The first failure stops new jobs from starting.
pub(super) fn run_jobs(cx: &Ctx, jobs: &[Job], pulled: &PulledMap) -> Result<BTreeMap<usize, ImageState>> {
    use std::sync::mpsc;
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    let mut results: BTreeMap<usize, ImageState> = BTreeMap::new();
    let mut started = vec![false; jobs.len()];
    let mut running = 0usize;
    let mut failure: Option<anyhow::Error> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<ImageState>)>();
        loop {
            if failure.is_none() {
                for (id, job) in jobs.iter().enumerate() {
                    if running >= parallel {
                        break;
                    }
                    if started[id] || !job.deps.iter().all(|d| results.contains_key(d)) {
                        continue;
                    }
                    started[id] = true;
                    running += 1;
                    let inputs: BTreeMap<usize, ImageState> =
                        job.stage_jobs.iter().map(|(stage, j)| (*stage, results[j].clone())).collect();
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let r = run_stage(cx, id, job, pulled, &inputs);
                        let _ = tx.send((id, r));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let (id, r) = rx.recv().expect("a job thread always reports");
            running -= 1;
            match r {
                Ok(state) => {
                    results.insert(id, state);
                }
                Err(e) => {
                    if failure.is_none() {
                        failure = Some(e);
                    }
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if results.len() != jobs.len() {
        bail!("internal error: {} of {} stages ran (dependency cycle?)", results.len(), jobs.len());
    }
    Ok(results)
}
