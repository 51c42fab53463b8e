//! Running a process in its own namespaces: the user namespace kiln enters,
//! id maps, the RUN sandbox, its stdio relay, and binfmt emulators.

pub mod binfmt;
pub mod idmap;
pub mod sandbox;
pub mod stdio;
pub mod sys;
pub mod userns;

/// Makes the calling process die (SIGKILL) when its parent does, and fails if the
/// parent is already gone (`expected_parent` differs from `getppid()`). kiln's
/// process chain is user's kiln → namespaced kiln → sandbox → step: a CI system
/// that SIGKILLs the first (a cancelled job) must end them all, so that nothing is
/// built or pushed after it. Async-signal-safe: callable between fork and exec.
/// The setting is lost when credentials change, so a step sets it after dropping
/// to its user.
pub(crate) fn die_with_parent(expected_parent: Option<u32>) -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments; getppid cannot fail.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if expected_parent.is_some_and(|p| libc::getppid() as u32 != p) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}
