#!/usr/bin/env python3
"""Big bases (issue 18): kiln beside Buildah and Docker's BuildKit on a ~1 GB base.

    sudo python3 bench/big-base.py [--runs 3] [--port 5090] [--out DIR] [--tools kiln,buildah,docker]

Run as root; kiln and Buildah run as the unprivileged $KILN_TEST_USER (setpriv), dockerd
as root. The base `base/big` is built once by bench/compare/bases.py (`make_big`: bookworm
minbase + build-essential, python3, nodejs/npm and a JRE: ~970 MB, ~45,700 entries, three
gzip layers, ~308 MB compressed) and pushed to a registry of its own. Every build starts
on a new ext4 filesystem (bench/compare/README.md says why) and pushes to that registry.

Cases (each on a fresh state)
- copy: `FROM big` + `COPY app.py /app/`
- run-one: `FROM big` + a RUN that writes one file
- run-read: `FROM big` + a RUN that reads one file of the base
- copy, fresh runner with a registry cache (kiln only: its skeletons travel in the cache;
  primed once by another fresh runner with --cache-to; app.py changed since, so the
  COPY runs on the skeletons from the cache)
- builder-stage: a builder stage whose RUN copies /usr/lib (a ~600 MB layer no output
  holds), and a final stage that copies one file from it; kiln also with
  KILN_COMPRESS_ALL=1 (every layer compressed as it is made, as before issue 18 part 4)
- warm: the copy case again on the state its build left (everything cached)
Floors on this machine: `curl | gzip -d > /dev/null` and `curl | gzip -d | tar -x` of the
three layers in parallel into a fresh filesystem. Peak RSS is the tool's process tree.
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "compare"))
import bases  # noqa: E402
from run import chown_tree, timed  # noqa: E402

spec = importlib.util.spec_from_file_location("cicache", os.path.join(HERE, "ci-cache.py"))
cicache = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cicache)

CASES = {
    "copy": "FROM {REG}/base/big:latest\nCOPY app.py /app/\n",
    "run-one": "FROM {REG}/base/big:latest\nRUN echo one > /one.txt\n",
    "run-read": "FROM {REG}/base/big:latest\nRUN cat /etc/os-release > /seen.txt\n",
    # Issue 18 part 4: a builder stage with a big layer that never leaves the machine.
    "builder-stage": "FROM {REG}/base/big:latest AS builder\nRUN cp -a /usr/lib /opt/lib-copy\n"
                     "FROM {REG}/base/big:latest\nCOPY --from=builder /opt/lib-copy/os-release /app/\n",
}


class Bench(cicache.Bench):
    def setup(self):
        self.fresh_start()
        self.layout = bases.make_big(self.a.bases)
        bases.push(self.layout, "base/big:latest", self.reg)
        for name, df in list(CASES.items()) + [("copy-changed", CASES["copy"])]:
            d = os.path.join(self.w, "ctx", name)
            os.makedirs(d, exist_ok=True)
            open(os.path.join(d, "Dockerfile"), "w").write(df.replace("{REG}", self.reg))
            # copy-changed: the app changed since the cache was primed, so the COPY runs.
            open(os.path.join(d, "app.py"), "w").write("print('hello, changed')\n" if name == "copy-changed" else "print('hello')\n")
        for d in ("home", "run", "bin", "ctx"):
            chown_tree(os.path.join(self.w, d))

    def cmds(self, tool, state, case, ref, flags=(), env=None):
        ctx = os.path.join(self.w, "ctx", case)
        if tool == "kiln":
            extra_env = [f"{k}={v}" for k, v in (env or {}).items()]
            # KILN_BENCH_ENV="K=V,K2=V2": extra environment for every kiln build (A/B runs).
            extra_env += [kv for kv in os.environ.get("KILN_BENCH_ENV", "").split(",") if kv]
            return [self.as_user("KILN_ROOT=" + os.path.join(state, "root"), *extra_env, self.kiln, "build", "--progress", "plain",
                                 "-t", ref, "--push", *flags, ctx)]
        if tool == "buildah":
            b = ["buildah", "--root", os.path.join(state, "root"), "--runroot", os.path.join(state, "runroot"),
                 "--storage-driver", "overlay"]
            return [self.as_user(*b, "bud", "--layers", "--isolation", "chroot", "--tls-verify=false", "-t", ref, ctx),
                    self.as_user(*b, "push", "--tls-verify=false", ref)]
        d = ["/usr/bin/docker", "-H", f"unix://{self.dockerd_sock}"]
        return [["env", "DOCKER_BUILDKIT=1"] + d + ["build", "--network", "host", "-t", ref, ctx], d + ["push", ref]]

    def one(self, tool, state, case, label, flags=(), env=None):
        log = os.path.join(self.w, "logs", f"{label}.log")
        ref = f"{self.reg}/bench/{label}:latest"
        ok, secs, rss, polled = timed(self.cmds(tool, state, case, ref, flags, env), log, dict(os.environ))
        if not ok:
            sys.exit(f"{label} failed: see {log}")
        # dockerd is not below the timed command: its memory is not the CLI's.
        peak = 0 if tool == "docker" else (polled.get(tool, 0) or rss)
        return secs, peak

    def fresh(self, tool, case, label, flags=(), keep=False, env=None):
        st = self.state_fs(f"{tool}-{label}")
        if tool == "docker":
            self.dockerd_sock = self.start_dockerd(label, st)
        try:
            secs, peak = self.one(tool, st, case, label, flags, env)
            warm = self.one(tool, st, case, label + "-warm", flags, env)[0] if keep else None
        finally:
            if tool == "docker":
                self.stop_dockerd(label)
            self.drop_state(f"{tool}-{label}")
        return secs, peak, warm

    def run_all(self):
        rows = {}
        only = [c for c in self.a.cases.split(",") if c]
        for k in range(1, self.a.runs + 1):
            for case in [c for c in CASES if not only or c in only]:
                for tool in self.a.tools.split(","):
                    s, peak, warm = self.fresh(tool, case, f"{case}-{tool}-{k}", keep=(case == "copy"))
                    rows.setdefault((case, tool), []).append((s, peak))
                    if warm is not None:
                        rows.setdefault(("warm", tool), []).append((warm, 0))
                    print(f"{case} {tool} #{k}: {s:.2f} s, peak {peak / 1024:.0f} MiB"
                          + (f", warm {warm:.2f} s" if warm is not None else ""), flush=True)
            if only:
                continue
            if "kiln" in self.a.tools:
                s, peak, _ = self.fresh("kiln", "builder-stage", f"compress-all-{k}", env={"KILN_COMPRESS_ALL": "1"})
                rows.setdefault(("builder-stage, KILN_COMPRESS_ALL=1", "kiln"), []).append((s, peak))
                print(f"builder-stage compress-all kiln #{k}: {s:.2f} s, peak {peak / 1024:.0f} MiB", flush=True)
                cache = f"type=registry,ref={self.reg}/bench/bigcache-{k}:cache"
                self.fresh("kiln", "copy", f"prime-{k}", ("--cache-to", cache))
                s, peak, _ = self.fresh("kiln", "copy-changed", f"cached-{k}", ("--cache-from", cache))
                rows.setdefault(("copy, fresh runner + registry cache", "kiln"), []).append((s, peak))
                print(f"copy+cache kiln #{k}: {s:.2f} s, peak {peak / 1024:.0f} MiB", flush=True)
            floors = self.floors()
            rows.setdefault(("floor: curl | gzip -d > /dev/null", "GNU"), []).append((floors[0], 0))
            rows.setdefault(("floor: curl | gzip -d | tar -x", "GNU"), []).append((floors[1], 0))
        return rows

    def floors(self):
        import json
        idx = json.load(open(os.path.join(self.layout, "index.json")))
        man = json.load(open(os.path.join(self.layout, "blobs/sha256", idx["manifests"][0]["digest"].split(":")[1])))
        urls = [f"http://{self.reg}/v2/base/big/blobs/{l['digest']}" for l in man["layers"]]
        t0 = time.monotonic()
        procs = [subprocess.Popen(["bash", "-c", f"curl -sf {u} | gzip -d > /dev/null"]) for u in urls]
        assert all(p.wait() == 0 for p in procs)
        read = time.monotonic() - t0
        st = self.state_fs("floor")
        t0 = time.monotonic()
        procs = [subprocess.Popen(["bash", "-c", f"curl -sf {u} | gzip -d | tar -x -C {st}"]) for u in urls]
        assert all(p.wait() == 0 for p in procs)
        unpack = time.monotonic() - t0
        self.drop_state("floor")
        return read, unpack


def run_main(bench_cls, doc, name, port, out_dir):
    """The command line of this script and of the ones built on its Bench: parse, set
    up, run `bench_cls.run_all`, stop what was started, write out_dir/results.md."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=port)
    ap.add_argument("--tools", default="kiln,buildah,docker")
    ap.add_argument("--kiln", default=os.path.join(REPO, "target/release/kiln"))
    ap.add_argument("--out", default=out_dir)
    ap.add_argument("--bases", default="/var/tmp/kiln-bigbase")
    ap.add_argument("--fs-gib", type=int, default=12, help="size of each sparse state filesystem")
    ap.add_argument("--cases", default="", help="only these cases (comma-separated; default all, with the cache, KILN_COMPRESS_ALL and floor rows)")
    a = ap.parse_args()
    if os.getuid() != 0:
        sys.exit(f"{name}: run as root")
    b = bench_cls(a)
    b.setup()
    head = cicache.header(b.kiln, a.runs)
    print("#", head, flush=True)
    try:
        rows = b.run_all()
    finally:
        for n in list(b.dockerd):
            b.stop_dockerd(n)
        subprocess.run([os.path.join(REPO, "scripts/registry.sh"), "stop", str(a.port)],
                       env=dict(os.environ, KILN_REGISTRY_DIR=b.regdir))
    out = f"# {head}\n\n| case | tool | seconds | peak RSS |\n|---|---|---|---|\n"
    for (case, tool), xs in rows.items():
        s = statistics.median(x[0] for x in xs)
        p = max(x[1] for x in xs)
        out += f"| {case} | {tool} | {s:.2f} | {f'{p / 1024:.0f} MiB' if p else ''} |\n"
    print("\n" + out)
    open(os.path.join(a.out, "results.md"), "w").write(out)


def main():
    run_main(Bench, __doc__, "big-base.py", 5090, "/var/tmp/kiln-bigbase/run")


if __name__ == "__main__":
    main()
