//! What one step does to a rootfs: RUN mounts (copied in and out under
//! `--isolation chroot`: chroot_mounts), COPY/ADD (local, archives,
//! downloads, git), `--chmod` modes, `--parents`, the ssh agent relay.

pub mod archive;
pub mod chroot_mounts;
pub mod copy;
pub mod fetch;
pub mod parents;
pub mod runmounts;
pub mod sshrelay;
pub mod urlcache;
