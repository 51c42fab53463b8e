#!/usr/bin/env python3
"""A warm cargo build inside RUN with its target directory on a cache mount (issue 18
part 4: "a warm `cargo build` 19.3 s vs 14.6 s under BuildKit"), kiln beside Buildah
and Docker's BuildKit, against the same cargo on the host.

    sudo python3 bench/run-cargo.py [--runs 3] [--port 5094] [--tools kiln,buildah,docker]

The base `base/rust` (bench/compare/bases.py `make_rust`: bookworm minbase + Debian's
cargo 1.65 / rustc 1.63) is pushed to a registry of its own. The context is a generated
workspace: a path dependency `lib` (120 modules of 40 functions, unchanged, so its
build is what target/ keeps) and the binary crate (60 modules that all read src/rev.rs).
The step:

    RUN --mount=type=cache,target=/app/target  write src/rev.rs from a build arg && cargo build --release

Each tool builds once on its fresh ext4 state (cold, not counted), then each run changes
the build arg, so the RUN runs again: cargo finds `lib` built in target/ on the cache
mount and recompiles the binary crate in release mode. The whole build is timed (medians). The floor is
the same cargo in a chroot of the base's rootfs, with the same target directory kept
between its runs.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "compare"))
import bases  # noqa: E402
from run import chown_tree, timed  # noqa: E402

spec = importlib.util.spec_from_file_location("runcompile", os.path.join(HERE, "run-compile.py"))
runcompile = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runcompile)
bigbase = runcompile.bigbase

DF = """FROM {REG}/base/rust:latest
ARG REV=0
WORKDIR /app
COPY . /app
RUN --mount=type=cache,target=/app/target echo "pub const REV: u32 = $REV;" > src/rev.rs \\
 && cargo build --release --offline -q && ./target/release/app > /out
"""


def module(i, n, rev):
    body = "".join(
        f"pub fn f{j}(x: u64) -> u64 {{ let mut s = {rev}u64; for k in 0..x {{ s = s.wrapping_add((k * {j + 1}) ^ (s >> 3)); }} s }}\n"
        for j in range(n))
    return body + "pub fn all(x: u64) -> u64 { " + " + ".join(f"f{j}(x)" for j in range(n)) + " }\n"


def write_crate(d):
    """A workspace: `lib` (120 modules, never changes: its build stays in target/) and
    the binary `app` (60 modules that all read `rev.rs`: a new REV recompiles the whole
    app crate in release mode, as a change to an application's code does)."""
    open(os.path.join(d, "Cargo.toml"), "w").write(
        '[package]\nname = "app"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\nlib = { path = "lib" }\n\n[workspace]\n')
    lib = os.path.join(d, "lib", "src")
    os.makedirs(lib, exist_ok=True)
    open(os.path.join(d, "lib", "Cargo.toml"), "w").write('[package]\nname = "lib"\nversion = "0.1.0"\nedition = "2021"\n')
    for i in range(120):
        open(os.path.join(lib, f"m{i}.rs"), "w").write(module(i, 40, 0))
    open(os.path.join(lib, "lib.rs"), "w").write("".join(f"pub mod m{i};\n" for i in range(120)))
    src = os.path.join(d, "src")
    os.makedirs(src, exist_ok=True)
    for i in range(60):
        open(os.path.join(src, f"a{i}.rs"), "w").write(module(i, 40, "crate::rev::REV as ").replace("u64u64", "u64"))
    main = "mod rev;\n" + "".join(f"mod a{i};\n" for i in range(60))
    main += "fn main() {\n    let mut t = 0u64;\n" + "".join(f"    t = t.wrapping_add(a{i}::all(3)).wrapping_add(lib::m{i}::all(2));\n" for i in range(60))
    main += '    println!("{t}");\n}\n'
    open(os.path.join(src, "main.rs"), "w").write(main)
    open(os.path.join(src, "rev.rs"), "w").write("pub const REV: u32 = 0;\n")


class Bench(runcompile.Bench):
    def setup(self):
        bigbase.Bench.setup(self)
        bases.push(bases.make_rust(self.a.bases), "base/rust:latest", self.reg)
        d = os.path.join(self.w, "ctx", "compile")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "Dockerfile"), "w").write(DF.replace("{REG}", self.reg))
        write_crate(d)
        chown_tree(os.path.join(self.w, "ctx"))

    def host_floor(self, k):
        root = os.path.join(self.a.bases, "rust-rootfs")

        def in_root(cmd):
            # rustc needs /proc (its own path): a private mount namespace with one.
            subprocess.run(["unshare", "--mount", "--fork", "sh", "-c",
                            f"mount -t proc proc '{root}/proc' && chroot '{root}' sh -c 'cd /w && {cmd}'"], check=True)

        w = os.path.join(root, "w")
        if k == 1:
            shutil.rmtree(w, ignore_errors=True)
            shutil.copytree(os.path.join(self.w, "ctx", "compile"), w)
            in_root("cargo build --release --offline -q")
        open(os.path.join(w, "src", "rev.rs"), "w").write(f"pub const REV: u32 = {k};\n")
        t0 = time.monotonic()
        in_root("cargo build --release --offline -q && ./target/release/app > /dev/null")
        return time.monotonic() - t0

    def run_all(self):
        rows = runcompile.Bench.run_all(self)
        # Same rows, named for this workload.
        out = {}
        for (case, tool), xs in rows.items():
            case = ("warm cargo build --release (lib kept in target/ on a cache mount, the app crate recompiled) in a RUN, whole build" if tool != "GNU"
                    else "floor: the same cargo build in a chroot of the base, target/ kept")
            out[(case, tool)] = xs
        return out


if __name__ == "__main__":
    bigbase.run_main(Bench, __doc__, "run-cargo.py", 5094, "/var/tmp/kiln-bigbase/cargo")
