//! The `kiln` binary: everything is in the `kiln_builder` library.

fn main() -> std::process::ExitCode {
    kiln_builder::cmd::run()
}
