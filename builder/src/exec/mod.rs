//! Running a process in its own namespaces: the user namespace kiln enters,
//! id maps, the RUN sandbox, its stdio relay, and binfmt emulators.

pub mod binfmt;
pub mod idmap;
pub mod sandbox;
pub mod stdio;
pub mod sys;
pub mod userns;
