#!/usr/bin/env python3
"""CI caching (issue 17): a fresh runner with a registry cache against a warm machine,
kiln beside Buildah and Docker's BuildKit, plus kiln's cache-mount restore and probe cost.

    sudo python3 bench/ci-cache.py [--runs 3] [--port 5089] [--out DIR] [--cases fresh,mount,probe]

Run as root; kiln and Buildah run as the unprivileged $KILN_TEST_USER (setpriv), dockerd
as root (Debian's docker.io 20.10 has no rootless mode here). Every fresh state is a new
ext4 filesystem (see bench/compare/README.md for why). Writes DIR/results.md.

Cases
- fresh: a Debian-based app (40 MB and 2,000-file dependency layers, then COPY src/ and
  a RUN over it). Primed once with the tool's registry cache; then per run one source
  file changes and the tool builds + pushes (a) on a fresh state with the cache
  imported, (b) on the warm machine. kiln: --cache-from/--cache-to type=registry,mode=max;
  Buildah: bud --layers --cache-from/--cache-to; BuildKit: BUILDKIT_INLINE_CACHE=1 and
  --cache-from the pushed image. Reports seconds and the bytes of blobs each fresh
  build downloaded (registry access log).
- mount: a 500 MiB cache mount (500 files of random bytes: caches hold compressed
  archives) exported with cache-mounts=true, then a fresh runner whose step must run:
  kiln's restore time against the floor of this machine, `curl` of the same bundles
  (read once) and `curl | zstd -d | tar -x` into a fresh directory. No peer exports
  cache mounts.
- probe: 100 cacheable steps; a fresh runner probes all 100 keys against
  --cache-from (one manifest) and --cache-repo (one image per key): kiln's "probed"
  debug line.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(HERE, "compare"))
import run as compare  # noqa: E402
from run import USER, chown_tree, sh, timed  # noqa: E402

APP_DF = """FROM {REG}/base/debian:bookworm
RUN mkdir -p /opt/deps && for i in $(seq 1 160); do head -c 262144 /dev/urandom > /opt/deps/d$i; done
RUN for i in $(seq 1 2000); do echo "module $i" > /opt/deps/m$i.py; done
COPY src/ /app/src/
RUN cat /app/src/* | sha256sum > /app/sum
"""
# The same app whose last step is the COPY: nothing after it needs the layers below.
APP_COPY_DF = APP_DF.rsplit("RUN cat", 1)[0]
MOUNT_DF = """FROM {REG}/base/busybox:latest
COPY rev.txt /rev.txt
RUN --mount=type=cache,id=big,target=/cache sh -c 'test -f /cache/done || { for i in $(seq 1 500); do head -c 1048576 /dev/urandom > /cache/f$i; done; touch /cache/done; }; cat /rev.txt'
"""


def probe_df():
    return "FROM {REG}/base/busybox:latest\n" + "".join(f"RUN echo {i} > /f{i}\n" for i in range(100))


class Bench(compare.Bench):
    """bench/compare's runner (its paths and environment), with these cases."""

    def __init__(self, a):
        super().__init__(a)
        del self.env["KILN_ROOT"]  # each build here names its own state
        self.rows = []
        self.dockerd = {}

    # ------------------------------------------------------------------ setup
    def fresh_start(self):
        """The working directories, the kiln under test, and a new empty registry (caches
        a previous run left would be hits)."""
        for d in ("home", "run", "logs", "bin", "ctx", "states"):
            os.makedirs(os.path.join(self.w, d), exist_ok=True)
        os.chmod(os.path.join(self.w, "run"), 0o700)
        shutil.copyfile(self.a.kiln, self.kiln)
        os.chmod(self.kiln, 0o755)
        env = dict(os.environ, KILN_REGISTRY_DIR=self.regdir)
        subprocess.run([os.path.join(REPO, "scripts/registry.sh"), "stop", str(self.a.port)], env=env, capture_output=True)
        shutil.rmtree(self.regdir, ignore_errors=True)
        sh(os.path.join(REPO, "scripts/registry.sh"), "start", str(self.a.port), env=env)

    def setup(self):
        self.fresh_start()
        sh("bash", os.path.join(REPO, "testdata/scripts/seed-registry.sh"), "--debian", self.reg)
        for name, df in (("app", APP_DF), ("app-copy", APP_COPY_DF), ("mount", MOUNT_DF), ("probe", probe_df())):
            d = os.path.join(self.w, "ctx", name)
            os.makedirs(os.path.join(d, "src"), exist_ok=True)
            open(os.path.join(d, "Dockerfile"), "w").write(df.replace("{REG}", self.reg))
            open(os.path.join(d, "rev.txt"), "w").write("0\n")
            for i in range(50):
                open(os.path.join(d, "src", f"mod{i}.py"), "w").write(f"def f{i}():\n    return {i}\n" * 20)
            open(os.path.join(d, "src", "main.py"), "w").write("print('v0')\n")
        for d in ("home", "run", "bin", "ctx"):
            chown_tree(os.path.join(self.w, d))

    def as_user(self, *cmd):
        return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--", "env", "-i",
                *[f"{k}={v}" for k, v in self.env.items()], *cmd]

    def state_fs(self, name):
        """A new ext4 for state `name` (bench/compare's), with Buildah's two dirs."""
        mnt = os.path.join(self.w, "states", name)
        self.fresh_fs(mnt)
        os.makedirs(os.path.join(mnt, "root"))
        os.makedirs(os.path.join(mnt, "runroot"))
        chown_tree(mnt)
        return mnt

    def drop_state(self, name):
        self.drop_fs(os.path.join(self.w, "states", name))

    def reg_log_mark(self):
        return os.path.getsize(os.path.join(self.regdir, "registry.log"))

    def blob_bytes_since(self, mark):
        """Bytes of blob GETs answered 200 since `mark` (distribution's access log)."""
        with open(os.path.join(self.regdir, "registry.log"), "rb") as f:
            f.seek(mark)
            text = f.read().decode("utf-8", "replace")
        total = 0
        for m in re.finditer(r'"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]+ HTTP/[0-9.]+" 200 (\d+)', text):
            total += int(m.group(1))
        return total

    # ------------------------------------------------------------------ docker
    def start_dockerd(self, name, state):
        sock = os.path.join(state, "docker.sock")
        log = open(os.path.join(self.w, "logs", f"dockerd-{name}.log"), "a")
        p = subprocess.Popen(["dockerd", "--data-root", os.path.join(state, "docker"), "--exec-root", os.path.join(state, "exec"),
                              "--pidfile", os.path.join(state, "docker.pid"), "-H", f"unix://{sock}", "--iptables=false",
                              "--ip-masq=false", "--bridge=none", "--insecure-registry", self.reg], stdout=log, stderr=log)
        for _ in range(200):
            if subprocess.run(["/usr/bin/docker", "-H", f"unix://{sock}", "info"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        self.dockerd[name] = (p, sock)
        return sock

    def stop_dockerd(self, name):
        p, _ = self.dockerd.pop(name, (None, None))
        if p:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()

    # ------------------------------------------------------------------ commands
    def build_cmds(self, tool, state, ctx, ref, cache, export):
        """Build + push; `export`: also write the registry cache (the prime). The
        measured builds only import, so that the warm and the fresh build of a run do
        the same work (the changed COPY and what follows it)."""
        if tool == "kiln":
            env = ["KILN_ROOT=" + os.path.join(state, "root")]
            out = ["--cache-to", f"type=registry,ref={cache},mode=max"] if export else []
            return [self.as_user(*env, self.kiln, "build", "--progress", "plain", "-t", ref, "--push",
                                 "--cache-from", f"type=registry,ref={cache}", *out, ctx)]
        if tool == "buildah":
            b = ["buildah", "--root", os.path.join(state, "root"), "--runroot", os.path.join(state, "runroot"),
                 "--storage-driver", "overlay"]
            repo = cache.rsplit(":", 1)[0]
            out = ["--cache-to", repo] if export else []
            return [self.as_user(*b, "bud", "--layers", "--isolation", "chroot", "--tls-verify=false",
                                 "--cache-from", repo, *out, "-t", ref, ctx),
                    self.as_user(*b, "push", "--tls-verify=false", ref)]
        sock = self.dockerd_sock
        d = ["/usr/bin/docker", "-H", f"unix://{sock}"]
        latest = cache  # the primed image, with BuildKit's inline cache
        tags = ["-t", ref] + (["-t", latest] if export else [])
        return [["env", "DOCKER_BUILDKIT=1"] + d + ["build", "--network", "host", "--build-arg", "BUILDKIT_INLINE_CACHE=1",
                                                     "--cache-from", latest, *tags, ctx],
                d + ["push", ref]] + ([d + ["push", latest]] if export else [])

    def run(self, tool, state, ctx, ref, cache, label, export=False):
        log = os.path.join(self.w, "logs", f"{label}.log")
        env = dict(os.environ)
        mark = self.reg_log_mark()
        ok, secs, rss, _ = timed(self.build_cmds(tool, state, ctx, ref, cache, export), log, env)
        if not ok:
            sys.exit(f"{label} failed: see {log}")
        return secs, self.blob_bytes_since(mark), log

    # ------------------------------------------------------------------ cases
    def case_fresh(self):
        for app, what in (("app-copy", "last step the COPY"), ("app", "a RUN after the COPY")):
            self.fresh_case(app, what)

    def fresh_case(self, app, what):
        ctx = os.path.join(self.w, "ctx", app)
        for tool in self.a.tools.split(","):
            warm = self.state_fs(f"{tool}-warm")
            cache = f"{self.reg}/bench/{app}-{tool}:cache"
            if tool == "docker":
                self.dockerd_sock = self.start_dockerd("warm", warm)
            open(os.path.join(ctx, "src", "main.py"), "w").write("print('v0')\n")
            self.run(tool, warm, ctx, f"{self.reg}/bench/{app}-{tool}:v0", cache, f"{app}-{tool}-prime", export=True)
            fresh_s, warm_s, fetched = [], [], []
            for k in range(1, self.a.runs + 1):
                open(os.path.join(ctx, "src", "main.py"), "w").write(f"print('v{k}')\n")
                chown_tree(os.path.join(ctx, "src"))
                st = self.state_fs(f"{tool}-fresh")
                if tool == "docker":
                    self.dockerd_sock = self.start_dockerd("fresh", st)
                s, b, _ = self.run(tool, st, ctx, f"{self.reg}/bench/{app}-{tool}:f{k}", cache, f"{app}-{tool}-fresh{k}")
                if tool == "docker":
                    self.stop_dockerd("fresh")
                    self.dockerd_sock = self.dockerd["warm"][1]
                self.drop_state(f"{tool}-fresh")
                fresh_s.append(s)
                fetched.append(b)
                s, _, _ = self.run(tool, warm, ctx, f"{self.reg}/bench/{app}-{tool}:w{k}", cache, f"{app}-{tool}-warm{k}")
                warm_s.append(s)
                print(f"{app} {tool} run {k}: fresh {fresh_s[-1]:.2f}s ({fetched[-1] / 1e6:.1f} MB fetched), warm {s:.2f}s", flush=True)
            if tool == "docker":
                self.stop_dockerd("warm")
            self.drop_state(f"{tool}-warm")
            f, w = statistics.median(fresh_s), statistics.median(warm_s)
            self.rows.append((f"fresh runner vs warm, one source file changed, {what}", tool,
                              f"{f:.2f} s fresh / {w:.2f} s warm = {f / w:.1f}×",
                              f"{statistics.median(fetched) / 1e6:.1f} MB of blobs fetched by the fresh build"))

    def case_mount(self):
        ctx = os.path.join(self.w, "ctx", "mount")
        cache = f"{self.reg}/bench/cimount:cache"
        a = self.state_fs("mount-a")
        env = ["KILN_ROOT=" + os.path.join(a, "root")]
        to = f"type=registry,ref={cache},mode=max,cache-mounts=true"
        ok, secs, _, _ = timed([self.as_user(*env, self.kiln, "build", "--progress", "plain", "--cache-to", to, ctx)],
                               os.path.join(self.w, "logs", "mount-prime.log"), dict(os.environ))
        assert ok, "mount prime failed"
        self.drop_state("mount-a")
        cfg = self.cache_config("bench/cimount", "cache")
        bundles = cfg["kiln.cache.mounts"]["big"]["bundles"]
        size = sum(b["size"] for b in bundles)
        restores, totals, reads, unpacks = [], [], [], []
        for k in range(1, self.a.runs + 1):
            open(os.path.join(ctx, "rev.txt"), "w").write(f"{k}\n")
            st = self.state_fs("mount-b")
            env = ["KILN_ROOT=" + os.path.join(st, "root")]
            log = os.path.join(self.w, "logs", f"mount-restore{k}.log")
            ok, secs, _, _ = timed([self.as_user(*env, self.kiln, "build", "--progress", "plain", "--cache-from",
                                                 f"type=registry,ref={cache}", ctx)], log, dict(os.environ))
            assert ok, f"restore build failed: {log}"
            m = re.search(r'restored cache mount "big": .* in ([0-9.]+)s', open(log).read())
            assert m, f"no restore line in {log}"
            restores.append(float(m.group(1)))
            totals.append(secs)
            self.drop_state("mount-b")
            # The floor: the same bundles read once from the registry, and read + unpacked.
            t0 = time.monotonic()
            for b in bundles:
                sh("curl", "-sf", "-o", "/dev/null", f"http://{self.reg}/v2/bench/cimount/blobs/{b['digest']}")
            reads.append(time.monotonic() - t0)
            st = self.state_fs("mount-floor")
            t0 = time.monotonic()
            for b in bundles:
                sh("bash", "-c", f"curl -sf http://{self.reg}/v2/bench/cimount/blobs/{b['digest']} | zstd -dq | tar -x -C {st}")
            unpacks.append(time.monotonic() - t0)
            self.drop_state("mount-floor")
            print(f"mount run {k}: restore {restores[-1]:.2f}s (build {secs:.2f}s); curl {reads[-1]:.2f}s; "
                  f"curl|zstd|tar {unpacks[-1]:.2f}s", flush=True)
        med = statistics.median
        self.rows.append(("restore a 500 MiB cache mount", "kiln",
                          f"{med(restores):.2f} s restore (build {med(totals):.2f} s)",
                          f"{len(bundles)} bundles, {size / 1e6:.0f} MB; floor: curl {med(reads):.2f} s, "
                          f"curl | zstd -d | tar -x {med(unpacks):.2f} s; no peer exports cache mounts"))

    def case_probe(self):
        ctx = os.path.join(self.w, "ctx", "probe")
        cache = f"{self.reg}/bench/ciprobe:cache"
        repo = f"{self.reg}/bench/ciprobe-repo"
        a = self.state_fs("probe-a")
        env = ["KILN_ROOT=" + os.path.join(a, "root")]
        ok, _, _, _ = timed([self.as_user(*env, self.kiln, "build", "--progress", "plain", "--cache-repo", repo,
                                          "--cache-to", f"type=registry,ref={cache},mode=max", ctx)],
                            os.path.join(self.w, "logs", "probe-prime.log"), dict(os.environ))
        assert ok, "probe prime failed"
        self.drop_state("probe-a")
        for label, flags in (("--cache-from (one manifest)", ["--cache-from", f"type=registry,ref={cache}"]),
                             ("--cache-repo (one image per key)", ["--cache-repo", repo])):
            ms, totals = [], []
            for k in range(self.a.runs):
                st = self.state_fs("probe-b")
                env = ["KILN_ROOT=" + os.path.join(st, "root"), "KILN_LOG=kiln_builder::solver=debug"]
                log = os.path.join(self.w, "logs", f"probe-{len(ms)}-{flags[0]}.log")
                ok, secs, _, _ = timed([self.as_user(*env, self.kiln, "build", "--progress", "plain", *flags, ctx)],
                                       log, dict(os.environ))
                assert ok, f"probe build failed: {log}"
                text = re.sub(r"\x1b\[[0-9;]*m", "", open(log).read())
                m = re.search(r"probed cache=1 keys=(\d+) hits=(\d+) ms=([0-9.]+)", text)
                assert m and m.group(1) == "100" and m.group(2) == "100", f"no 100-key probe with 100 hits in {log}"
                ms.append(float(m.group(3)))
                totals.append(secs)
                self.drop_state("probe-b")
            self.rows.append((f"probe 100 keys, {label}", "kiln", f"{statistics.median(ms):.1f} ms",
                              f"whole all-hit build on a fresh state {statistics.median(totals):.2f} s"))

    def cache_config(self, repo, tag):
        req = urllib.request.Request(f"http://{self.reg}/v2/{repo}/manifests/{tag}",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        m = json.load(urllib.request.urlopen(req))
        return json.load(urllib.request.urlopen(f"http://{self.reg}/v2/{repo}/blobs/{m['config']['digest']}"))


def header(kiln, runs):
    """When, on what and with which versions of the three tools a run was made."""
    kv = subprocess.run([kiln, "--version"], capture_output=True, text=True).stdout.strip()
    bv = subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.strip()
    dv = subprocess.run(["/usr/bin/docker", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return (f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs ({cpu}); Linux "
            f"{os.uname().release}; {kv}; {bv}; {dv}; runs {runs}, medians")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=5089)
    ap.add_argument("--cases", default="fresh,mount,probe")
    ap.add_argument("--tools", default="kiln,buildah,docker")
    ap.add_argument("--kiln", default=os.path.join(REPO, "target/release/kiln"))
    ap.add_argument("--out", default="/var/tmp/kiln-cicache/run")
    ap.add_argument("--fs-gib", type=int, default=8, help="size of each sparse state filesystem")
    a = ap.parse_args()
    if os.getuid() != 0:
        sys.exit("ci-cache.py: run as root")
    b = Bench(a)
    b.setup()
    head = header(b.kiln, a.runs) + f"; load {open('/proc/loadavg').read().split()[:3]}"
    print("#", head, flush=True)
    try:
        for c in a.cases.split(","):
            getattr(b, f"case_{c}")()
    finally:
        for n in list(b.dockerd):
            b.stop_dockerd(n)
        out = f"# {head}\n\n| case | tool | result | notes |\n|---|---|---|---|\n" + "".join(
            f"| {c} | {t} | {r} | {n} |\n" for c, t, r, n in b.rows)
        print("\n" + out)
        open(os.path.join(a.out, "results.md"), "w").write(out)
        subprocess.run([os.path.join(REPO, "scripts/registry.sh"), "stop", str(a.port)],
                       env=dict(os.environ, KILN_REGISTRY_DIR=b.regdir))


if __name__ == "__main__":
    main()
