#!/usr/bin/env python3
"""Compiles inside RUN (issue 18 part 4): how much slower a compiler runs in a build step
than on the host, kiln beside Buildah and Docker's BuildKit.

    sudo python3 bench/run-compile.py [--runs 3] [--port 5091] [--tools kiln,buildah,docker]

The workload: `make -j2` of 240 generated C files (each a few hundred lines, gcc -O2),
in a RUN on `base/big` (bench/big-base.py's base, which has build-essential), the
sources bind-mounted from the context and the objects written inside the step. Every
tool first builds once on its state (base pulled and unpacked, nothing measured); then
each run changes a build arg that only the RUN uses, so exactly that step runs again,
and the whole build (no push, the image kept by the tool) is timed. The floor is the
same `make -j2` on the host, in a fresh directory of the same filesystem.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "compare"))
from run import chown_tree, timed  # noqa: E402

spec = importlib.util.spec_from_file_location("bigbase", os.path.join(HERE, "big-base.py"))
bigbase = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bigbase)

DF = """FROM {REG}/base/big:latest
ARG REV=0
RUN --mount=type=bind,source=src,target=/src cp -r /src /tmp/w && echo $REV > /tmp/w/rev \\
 && make -s -C /tmp/w -j2 && ls /tmp/w/*.o | wc -l > /objects && rm -rf /tmp/w
"""


def write_sources(d):
    src = os.path.join(d, "src")
    os.makedirs(src, exist_ok=True)
    objs = []
    for i in range(240):
        body = "".join(
            f"static int f{i}_{j}(int x) {{ int s = 0; for (int k = 0; k < x; k++) s += (k * {j + 1}) ^ (s >> 3); return s; }}\n"
            for j in range(120))
        body += f"int entry{i}(int x) {{ return " + " + ".join(f"f{i}_{j}(x)" for j in range(120)) + "; }\n"
        open(os.path.join(src, f"u{i}.c"), "w").write(body)
        objs.append(f"u{i}.o")
    open(os.path.join(src, "Makefile"), "w").write(
        "CFLAGS=-O2\nall: " + " ".join(objs) + "\n%.o: %.c\n\t$(CC) $(CFLAGS) -c $< -o $@\n")


class Bench(bigbase.Bench):
    def setup(self):
        super().setup()
        d = os.path.join(self.w, "ctx", "compile")
        os.makedirs(d, exist_ok=True)
        open(os.path.join(d, "Dockerfile"), "w").write(DF.replace("{REG}", self.reg))
        write_sources(d)
        chown_tree(os.path.join(self.w, "ctx"))

    def cmds(self, tool, state, case, ref, flags=(), env=None):
        ctx = os.path.join(self.w, "ctx", case)
        if tool == "kiln":
            return [self.as_user("KILN_ROOT=" + os.path.join(state, "root"), self.kiln, "build", "--progress", "plain",
                                 "-t", ref, *flags, ctx)]
        if tool == "buildah":
            b = ["buildah", "--root", os.path.join(state, "root"), "--runroot", os.path.join(state, "runroot"),
                 "--storage-driver", "overlay"]
            return [self.as_user(*b, "bud", "--layers", "--isolation", "chroot", "--tls-verify=false", *flags, "-t", ref, ctx)]
        d = ["/usr/bin/docker", "-H", f"unix://{self.dockerd_sock}"]
        return [["env", "DOCKER_BUILDKIT=1"] + d + ["build", "--network", "host", *flags, "-t", ref, ctx]]

    def host_floor(self, k):
        st = self.state_fs("host")
        w = os.path.join(st, "w")
        shutil.copytree(os.path.join(self.w, "ctx", "compile", "src"), w)
        t0 = time.monotonic()
        subprocess.run(["make", "-s", "-C", w, "-j2"], check=True)
        secs = time.monotonic() - t0
        self.drop_state("host")
        return secs

    def run_all(self):
        rows = {}
        for tool in self.a.tools.split(","):
            st = self.state_fs(f"{tool}-compile")
            if tool == "docker":
                self.dockerd_sock = self.start_dockerd("compile", st)
            try:
                ref = f"{self.reg}/bench/compile-{tool}:latest"
                self.one_timed(tool, st, ref, "prime", 0)
                for k in range(1, self.a.runs + 1):
                    secs = self.one_timed(tool, st, ref, f"run{k}", k)
                    rows.setdefault(("make -j2 of 240 C files in a RUN (whole build, the RUN only runs)", tool), []).append((secs, 0))
                    print(f"compile {tool} #{k}: {secs:.2f} s", flush=True)
            finally:
                if tool == "docker":
                    self.stop_dockerd("compile")
                self.drop_state(f"{tool}-compile")
        for k in range(1, self.a.runs + 1):
            secs = self.host_floor(k)
            rows.setdefault(("floor: the same make -j2 on the host", "GNU"), []).append((secs, 0))
            print(f"host #{k}: {secs:.2f} s", flush=True)
        return rows

    def one_timed(self, tool, state, ref, label, rev):
        log = os.path.join(self.w, "logs", f"compile-{tool}-{label}.log")
        ok, secs, _, _ = timed(self.cmds(tool, state, "compile", ref, ("--build-arg", f"REV={rev}")), log, dict(os.environ))
        if not ok:
            sys.exit(f"compile {tool} {label} failed: see {log}")
        return secs


def main():
    bigbase.run_main(Bench, __doc__, "run-compile.py", 5091, "/var/tmp/kiln-bigbase/compile")


if __name__ == "__main__":
    main()
