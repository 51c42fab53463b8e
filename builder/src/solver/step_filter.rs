//! `--cache-repo-steps` (Kaniko's `--cache-run-layers`, `--cache-copy-layers`): the
//! Kaniko-style registry cache wrapped so that it stores and serves only the kinds of
//! step asked for.

use kiln_cache::layercache::{CacheKey, CacheRecord, LayerCache};
use kiln_cache::store::ContentStore;
use kiln_cache::CacheError;

/// The trait's future type (futures-util's `BoxFuture`, which this crate does not need).
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A layer cache that stores and serves only the steps `--cache-repo-steps` admits
/// (Kaniko's `--cache-run-layers`/`--cache-copy-layers`), told apart by the record's
/// history line: a record of another kind of step is a miss.
pub(super) struct StepFilter<C> {
    pub(super) inner: C,
    pub(super) steps: crate::options::CacheRepoSteps,
}

impl<C: LayerCache> LayerCache for StepFilter<C> {
    fn probe<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Result<Option<CacheRecord>, CacheError>> {
        Box::pin(async move { Ok(self.inner.probe(key).await?.filter(|r| self.steps.admits(&r.created_by))) })
    }

    fn probe_many<'a>(&'a self, keys: &'a [CacheKey]) -> BoxFuture<'a, Vec<Option<CacheRecord>>> {
        Box::pin(async move {
            self.inner.probe_many(keys).await.into_iter().map(|r| r.filter(|r| self.steps.admits(&r.created_by))).collect()
        })
    }

    fn fetch_layer<'a>(&'a self, record: &'a CacheRecord, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        self.inner.fetch_layer(record, store)
    }

    fn put<'a>(&'a self, record: &'a CacheRecord, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        if self.steps.admits(&record.created_by) {
            self.inner.put(record, store)
        } else {
            Box::pin(async { Ok(()) })
        }
    }

    fn flush<'a>(&'a self, store: &'a ContentStore) -> BoxFuture<'a, Result<(), CacheError>> {
        self.inner.flush(store)
    }

    fn probe_concurrency(&self) -> usize {
        self.inner.probe_concurrency()
    }

    fn set_image_keys(&self, keys: &[String]) {
        self.inner.set_image_keys(keys)
    }

    fn previous<'a>(&'a self, now: &'a kiln_cache::layercache::StepInputs) -> BoxFuture<'a, Option<CacheRecord>> {
        self.inner.previous(now)
    }

    fn mark_used(&self, record: &CacheRecord, store: &ContentStore) {
        if self.steps.admits(&record.created_by) {
            self.inner.mark_used(record, store)
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::options::CacheRepoSteps;

    #[test]
    fn steps_are_told_apart_by_their_history_line() {
        let kaniko_default = CacheRepoSteps::parse("run").unwrap();
        assert!(kaniko_default.admits("RUN /bin/sh -c make"));
        assert!(!kaniko_default.admits("COPY src/ /app # buildkit"));
        assert!(!kaniko_default.admits("ADD https://x/y /y # buildkit"));
        assert!(kaniko_default.admits("WORKDIR /app"), "config-and-directory steps are not Kaniko's to filter");
        assert!(!kaniko_default.admits("kiln skeleton of sha256:00"), "skeletons go with the COPY layers");
        assert!(CacheRepoSteps::default().admits("kiln skeleton of sha256:00"));
        let none = CacheRepoSteps::parse("none").unwrap();
        assert!(!none.admits("RUN true") && !none.admits("COPY a b"));
        assert_eq!(CacheRepoSteps::parse("run,copy").unwrap(), CacheRepoSteps::default());
        assert!(CacheRepoSteps::parse("run,bogus").unwrap_err().contains("bogus"));
    }
}
