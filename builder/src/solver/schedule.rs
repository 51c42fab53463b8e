//! Running jobs as their inputs finish, up to the machine's parallelism; the first
//! failure stops new jobs from starting (jobs already running finish, and nothing
//! that depends on a failed job ever starts).

use super::*;

/// Run the build's jobs (stage instances) with [`schedule`].
pub(super) fn run_jobs(cx: &Ctx, jobs: &[Job], pulled: &PulledMap) -> Result<BTreeMap<JobId, ImageState>> {
    let parallel = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    // The scheduler works on positions in `jobs`, which is what a JobId is.
    let deps: Vec<Vec<usize>> = jobs.iter().map(|j| j.deps.iter().map(|d| d.0).collect()).collect();
    let results = schedule(&deps, parallel, |id, done: &BTreeMap<usize, ImageState>| {
        let job = &jobs[id];
        let inputs: BTreeMap<StageIdx, ImageState> =
            job.stage_jobs.iter().map(|(stage, j)| (*stage, done[&j.0].clone())).collect();
        run_stage(cx, JobId(id), job, pulled, &inputs)
    })?;
    Ok(results.into_iter().map(|(id, s)| (JobId(id), s)).collect())
}

/// Run job `i` (for every `i` in `deps`) once all of `deps[i]` are done, at most
/// `parallel` at once, each on its own thread; `run` gets the results of the
/// job's dependencies. Returns every job's result, or the first error.
pub(super) fn schedule<T: Clone + Send + Sync>(
    deps: &[Vec<usize>],
    parallel: usize,
    run: impl Fn(usize, &BTreeMap<usize, T>) -> Result<T> + Sync,
) -> Result<BTreeMap<usize, T>> {
    use std::sync::mpsc;
    let mut results: BTreeMap<usize, T> = BTreeMap::new();
    let mut started = vec![false; deps.len()];
    let mut running = 0usize;
    let mut failure: Option<anyhow::Error> = None;
    let run = &run;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Result<T>)>();
        loop {
            if failure.is_none() {
                for (id, d) in deps.iter().enumerate() {
                    if running >= parallel.max(1) {
                        break;
                    }
                    if started[id] || !d.iter().all(|x| results.contains_key(x)) {
                        continue;
                    }
                    started[id] = true;
                    running += 1;
                    let done: BTreeMap<usize, T> = d.iter().map(|x| (*x, results[x].clone())).collect();
                    let tx = tx.clone();
                    scope.spawn(move || {
                        // A panicking job must still report, or the loop below waits
                        // for it forever (the build hung instead of failing).
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(id, &done))).unwrap_or_else(|p| {
                            let what = p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_default();
                            Err(anyhow::anyhow!("internal error: a stage's job panicked: {what}"))
                        });
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
                Ok(v) => {
                    results.insert(id, v);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = failure {
        return Err(e);
    }
    if results.len() != deps.len() {
        bail!("internal error: {} of {} stages ran (dependency cycle?)", results.len(), deps.len());
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    #[test]
    fn a_job_starts_after_its_dependencies_and_sees_their_results() {
        // 0 and 1 are independent; 2 reads both; 3 reads 2.
        let deps = vec![vec![], vec![], vec![0, 1], vec![2]];
        let log = Mutex::new(Vec::new());
        let out = schedule(&deps, 4, |id, done: &BTreeMap<usize, usize>| {
            log.lock().unwrap().push(format!("start {id}"));
            std::thread::sleep(Duration::from_millis(20));
            let sum: usize = done.values().sum();
            log.lock().unwrap().push(format!("end {id}"));
            Ok(id * 10 + sum)
        })
        .unwrap();
        assert_eq!(out[&2], 20 + 10, "2 got the results of 0 and 1");
        assert_eq!(out[&3], 30 + 30);
        let log = log.into_inner().unwrap();
        let at = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(at("start 2") > at("end 0") && at("start 2") > at("end 1"), "{log:?}");
        assert!(at("start 3") > at("end 2"), "{log:?}");
    }

    #[test]
    fn a_panicking_job_fails_the_schedule_instead_of_hanging_it() {
        let deps = vec![vec![], vec![0]];
        let r = schedule(&deps, 2, |id, _: &BTreeMap<usize, ()>| if id == 0 { panic!("bundle reader polled twice") } else { Ok(()) });
        let e = format!("{:#}", r.unwrap_err());
        assert!(e.contains("panicked: bundle reader polled twice"), "{e}");
    }

    #[test]
    fn no_more_than_parallel_jobs_run_at_once() {
        let deps = vec![vec![]; 6];
        let (now, max) = (AtomicUsize::new(0), AtomicUsize::new(0));
        schedule(&deps, 2, |_, _: &BTreeMap<usize, ()>| {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        })
        .unwrap();
        assert_eq!(max.load(Ordering::SeqCst), 2, "independent jobs run two at a time, not one, not more");
    }

    #[test]
    fn a_failure_stops_its_dependants_and_is_the_result() {
        // 1 fails; 2 depends on it; 0 is independent and may finish.
        let deps = vec![vec![], vec![], vec![1]];
        let ran = Mutex::new(Vec::new());
        let err = schedule(&deps, 1, |id, _: &BTreeMap<usize, ()>| {
            ran.lock().unwrap().push(id);
            if id == 1 {
                bail!("step 3 failed");
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "step 3 failed");
        assert!(!ran.lock().unwrap().contains(&2), "a dependant of a failed job never starts");
    }

    #[test]
    fn a_cycle_is_an_internal_error_not_a_hang() {
        let deps = vec![vec![1], vec![0]];
        let err = schedule(&deps, 2, |_, _: &BTreeMap<usize, ()>| Ok(())).unwrap_err();
        assert!(err.to_string().contains("dependency cycle"), "{err}");
    }
}
