//! What a build will do, decided before any work: the step cache keys.

pub mod keys;
