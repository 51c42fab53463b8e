//! What one step does to a rootfs: RUN mounts, COPY/ADD (local, archives,
//! downloads, git), `--chmod` modes, `--parents`, the ssh agent relay.

pub mod archive;
pub mod copy;
pub mod fetch;
pub mod parents;
pub mod runmounts;
pub mod sshrelay;
pub mod urlcache;
