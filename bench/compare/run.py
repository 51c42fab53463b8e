#!/usr/bin/env python3
"""kiln vs `buildah bud --layers`: build + push, cold and warm, side by side.

    bench/compare/run.py [--runs N] [--port PORT] [--cases a,b,...] [--kiln PATH]
                         [--wait-quiet SECS] [--out DIR]

Run as root (like scripts/test.sh); both tools run as the unprivileged user
$KILN_TEST_USER (default kilntest) through setpriv. See bench/compare/README.md
for what is measured and how.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
USER = os.environ.get("KILN_TEST_USER", "kilntest")

# --------------------------------------------------------------------------- cases
# name -> dict(files={path: text}, dockerfile=text, context=None|"large", arch=None|"arm64",
#              variants=[tool variants], rerun=bool)
CASES = {
    "small": dict(
        dockerfile="""FROM {REG}/base/busybox:latest
ENV APP_HOME=/app APP_ENV=production
WORKDIR /app
COPY app.sh config.json VERSION /app/
RUN chmod 0755 /app/app.sh && mkdir -p /app/data && echo "built $(cat /app/VERSION)" > /app/data/build-info
CMD ["/app/app.sh"]
""",
        files={"app.sh": "#!/bin/sh\necho \"hello from $APP_ENV\"\nexec sleep 1\n",
               "config.json": json.dumps({"listen": ":8080", "workers": 4, "debug": False}, indent=2) + "\n",
               "VERSION": "1.2.3\n"}),
    "multistage": dict(
        dockerfile="""FROM {REG}/base/busybox:latest AS a
RUN echo stage-a && dd if=/dev/zero bs=1M count=200 2>/dev/null | gzip -c | sha256sum > /a.sum

FROM {REG}/base/busybox:latest AS b
RUN echo stage-b && dd if=/dev/zero bs=1M count=200 2>/dev/null | gzip -c | sha256sum > /b.sum

FROM {REG}/base/busybox:latest
COPY --from=a /a.sum /out/a.sum
COPY --from=b /b.sum /out/b.sum
CMD ["cat", "/out/a.sum", "/out/b.sum"]
"""),
    "large-context": dict(
        dockerfile="""FROM {REG}/base/busybox:latest
COPY . /ctx
""",
        context="large"),
    "debian": dict(
        dockerfile="""FROM {REG}/base/debian:bookworm
RUN mkdir -p /opt/gen && cd /opt/gen \\
 && for d in $(seq 1 10); do mkdir $d; for i in $(seq 1 500); do echo "$d-$i" > $d/$i; done; done \\
 && echo bench >> /etc/issue && echo BENCH=1 >> /etc/environment && chmod 0600 /etc/motd \\
 && rm -rf /usr/share/doc/apt /usr/share/man/man8 /etc/cron.daily/apt-compat /var/log/dpkg.log
CMD ["bash"]
"""),
    "cross-arm64": dict(
        dockerfile="""FROM {REG}/base/busybox:arm64
ENV TARGET=arm64
RUN uname -m > /arch && dd if=/dev/zero bs=1M count=20 2>/dev/null | sha256sum > /sum
CMD ["cat", "/arch"]
""",
        arch="arm64"),
}
for _n in ("1k", "10k", "100k"):
    CASES[f"files-{_n}"] = dict(
        dockerfile=f"FROM {{REG}}/base/files:{_n}\nRUN echo hello > /one\n",
        variants=["kiln", "kiln-native", "buildah"], rerun=True)


# --------------------------------------------------------------------------- helpers
def sh(*args, **kw):
    return subprocess.run(list(args), check=True, **kw)


def chown_tree(path):
    sh("chown", "-R", f"{USER}:{USER}", path)


def busy_processes():
    """Names of cargo/rustc processes running now (someone else compiling)."""
    names = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                c = open(f"/proc/{p}/comm").read().strip()
            except OSError:
                continue
            if c in ("cargo", "rustc") or c.startswith("rustc"):
                names.append(c)
    return names


def load1():
    return float(open("/proc/loadavg").read().split()[0])


class TreeRss(threading.Thread):
    """Polls the process tree under `pid` (through /proc/PID/task/*/children)
    every `interval` s and keeps the largest VmHWM per executable name.
    VmHWM is the process's own high-water mark, so a poll that comes after a
    peak still sees it; only growth in the last interval before exit is missed."""

    def __init__(self, pid, interval=0.02):
        super().__init__(daemon=True)
        self.root, self.interval = pid, interval
        self.peak = {}  # exe basename -> KiB
        self.stop = threading.Event()

    def children(self, pid):
        out = []
        try:
            for t in os.listdir(f"/proc/{pid}/task"):
                try:
                    out += [int(x) for x in open(f"/proc/{pid}/task/{t}/children").read().split()]
                except OSError:
                    pass
        except OSError:
            pass
        return out

    def sample(self):
        todo, seen = [self.root], set()
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            try:
                exe = os.path.basename(os.readlink(f"/proc/{p}/exe"))
                for line in open(f"/proc/{p}/status"):
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        if kb > self.peak.get(exe, 0):
                            self.peak[exe] = kb
                        break
            except (OSError, ValueError):
                pass
            todo += self.children(p)

    def run(self):
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval)


def timed(cmds, log_path, env):
    """Runs the commands one after another (stop at the first failure). Returns
    (ok, seconds, tree_max_kib, polled {exe: KiB})."""
    t0 = time.monotonic()
    tree_max, polled, ok = 0, {}, True
    with open(log_path, "w") as log:
        for cmd in cmds:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd="/")
            poll = TreeRss(proc.pid)
            poll.start()
            # wait4 on the direct child: ru_maxrss is the max over it and every
            # descendant that was waited for (Linux merges cmaxrss up the tree).
            _, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            poll.stop.set()
            poll.join()
            tree_max = max(tree_max, ru.ru_maxrss)
            log.write(f"\n# cpu: user {ru.ru_utime:.2f} s, sys {ru.ru_stime:.2f} s\n")
            for k, v in poll.peak.items():
                polled[k] = max(polled.get(k, 0), v)
            if proc.returncode != 0:
                log.write(f"\nexit {proc.returncode}\n")
                ok = False
                break
    return ok, time.monotonic() - t0, tree_max, polled


# --------------------------------------------------------------------------- runner
class Bench:
    def __init__(self, a):
        self.a = a
        self.w = a.out
        self.reg = f"127.0.0.1:{a.port}"
        self.regdir = os.path.join(self.w, "registry")
        self.kiln = os.path.join(self.w, "bin", "kiln")
        self.env = {"HOME": os.path.join(self.w, "home"), "XDG_RUNTIME_DIR": os.path.join(self.w, "run"),
                    "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                    "KILN_ROOT": os.path.join(self.w, "state", "kiln", "root")}
        self.broot = os.path.join(self.w, "state", "buildah")
        self.results = []
        self.notes = []

    def as_user(self, *cmd):
        return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--init-groups", "--"] + list(cmd)

    def setup(self):
        os.makedirs(self.w, exist_ok=True)
        for d in ("home", "run", "logs", "cases", "bin"):
            os.makedirs(os.path.join(self.w, d), exist_ok=True)
        os.chmod(os.path.join(self.w, "run"), 0o700)
        shutil.copyfile(self.a.kiln, self.kiln)
        os.chmod(self.kiln, 0o755)
        env = dict(os.environ, KILN_REGISTRY_DIR=self.regdir)
        sh(os.path.join(REPO, "scripts/registry.sh"), "start", str(self.a.port), env=env)
        sh(sys.executable, os.path.join(HERE, "bases.py"), self.reg, "--dir", self.a.bases)
        for name, c in CASES.items():
            d = os.path.join(self.w, "cases", name)
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
            open(os.path.join(d, "Dockerfile"), "w").write(c["dockerfile"].replace("{REG}", self.reg))
            for fn, text in c.get("files", {}).items():
                open(os.path.join(d, fn), "w").write(text)
        chown_tree(os.path.join(self.w, "cases"))
        for d in ("home", "run", "bin"):
            chown_tree(os.path.join(self.w, d))
        sh("chmod", "-R", "a+rX", os.path.join(self.a.bases, "ctx-large"))
        p = self.a.bases
        while p != "/":  # kilntest must traverse to the context
            os.chmod(p, os.stat(p).st_mode | 0o001)
            p = os.path.dirname(p)

    def context(self, name):
        c = CASES[name]
        d = os.path.join(self.w, "cases", name)
        if c.get("context") == "large":
            return os.path.join(self.a.bases, "ctx-large"), os.path.join(d, "Dockerfile")
        return d, os.path.join(d, "Dockerfile")

    def ref(self, name, variant):
        return f"{self.reg}/bench/{name}-{variant}:latest"

    def commands(self, name, variant, no_cache=False):
        ctx, df = self.context(name)
        arch = CASES[name].get("arch")
        ref = self.ref(name, variant)
        if variant.startswith("kiln"):
            snap = "native" if variant == "kiln-native" else "overlay"
            cmd = [self.kiln, "build", "--snapshotter", snap, "--progress", "plain", "-t", ref, "--push", "-f", df]
            if arch:
                cmd += ["--platform", f"linux/{arch}"]
            if no_cache:
                cmd += ["--no-cache"]
            return [self.as_user("env", "-i", *[f"{k}={v}" for k, v in self.env.items()], *cmd + [ctx])]
        b = ["buildah", "--root", os.path.join(self.broot, "root"), "--runroot", os.path.join(self.broot, "runroot"),
             "--storage-driver", "overlay"]
        bud = b + ["bud", "--layers", "--isolation", "chroot", "--tls-verify=false", "-t", ref, "-f", df]
        if arch:
            bud += ["--arch", arch]
        if no_cache:
            bud += ["--no-cache"]
        env = [f"{k}={v}" for k, v in self.env.items() if k != "KILN_ROOT"]
        return [self.as_user("env", "-i", *env, *bud + [ctx]),
                self.as_user("env", "-i", *env, *b, "push", "--tls-verify=false", ref)]

    def fresh_fs(self, mnt):
        """A new, empty, journaled ext4 filesystem mounted at `mnt` (a loop-mounted
        sparse file): the state a fresh CI pod's emptyDir starts from. Deleting the
        previous state instead is not neutral on this VM's root filesystem, which is
        ext4 without a journal: for ~30 s after a mass delete, ext4 skips recently
        deleted inodes when allocating (`recently_deleted()`), and creating the next
        10k-100k files crawls. Inode tables are initialised by mkfs, so no
        background `ext4lazyinit` writes during the builds."""
        self.drop_fs(mnt)
        os.makedirs(mnt, exist_ok=True)
        img = mnt + ".img"
        sh("truncate", "-s", f"{self.a.fs_gib}G", img)
        sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img)
        sh("mount", "-o", "loop", img, mnt)

    def drop_fs(self, mnt):
        if subprocess.run(["mountpoint", "-q", mnt]).returncode == 0:
            if subprocess.run(["umount", mnt]).returncode != 0:
                sh("umount", "-l", mnt)
        shutil.rmtree(mnt, ignore_errors=True)
        if os.path.exists(mnt + ".img"):
            os.unlink(mnt + ".img")

    def state_dir(self, variant):
        """Where the tool keeps its state (a filesystem of its own with fresh_fs)."""
        return os.path.dirname(self.env["KILN_ROOT"]) if variant.startswith("kiln") else self.broot

    def reset(self, name, variant):
        """Cold state: no local store/cache for the tool, the image's repository gone."""
        state = self.state_dir(variant)
        if self.a.fresh_fs:
            self.fresh_fs(state)
        else:
            shutil.rmtree(state, ignore_errors=True)
        if variant.startswith("kiln"):
            os.makedirs(self.env["KILN_ROOT"])
        else:
            os.makedirs(os.path.join(self.broot, "root"))
            os.makedirs(os.path.join(self.broot, "runroot"))
        chown_tree(state)
        repo = os.path.join(self.regdir, "storage/docker/registry/v2/repositories/bench", f"{name}-{variant}")
        shutil.rmtree(repo, ignore_errors=True)

    def measure(self, name, variant, mode, run):
        busy = busy_processes()
        ld = load1()
        log = os.path.join(self.w, "logs", f"{name}.{variant}.{mode}.{run}.log")
        ok, secs, tree, polled = timed(self.commands(name, variant, no_cache=(mode == "rerun")), log, None)
        tool = "kiln" if variant.startswith("kiln") else "buildah"
        r = dict(case=name, variant=variant, mode=mode, run=run, ok=ok, secs=round(secs, 3),
                 tree_max_kib=tree, tool_peak_kib=polled.get(tool, 0), polled=polled,
                 load1=ld, busy=len(busy), log=log)
        self.results.append(r)
        flag = "" if ok else "  FAILED (see log)"
        print(f"  {name:14} {variant:12} {mode:5} #{run}: {secs:7.2f} s  tool {r['tool_peak_kib'] / 1024:6.1f} MiB"
              f"  tree {tree / 1024:6.1f} MiB  load {ld:.2f}{' busy:' + str(len(busy)) if busy else ''}{flag}",
              flush=True)
        return ok

    def run_case(self, name):
        c = CASES[name]
        variants = c.get("variants", ["kiln", "buildah"])
        for run in range(1, self.a.runs + 1):
            for v in variants:
                if v == "kiln-native" and run > 1 and not self.a.native_all_runs:
                    continue  # the copying snapshotter is for comparison only: one run
                self.reset(name, v)
                if not self.measure(name, v, "cold", run):
                    continue
                self.measure(name, v, "warm", run)
                if c.get("rerun"):
                    self.measure(name, v, "rerun", run)
        if self.a.fresh_fs:
            for v in variants:
                self.drop_fs(self.state_dir(v))

    def wait_quiet(self):
        end = time.monotonic() + self.a.wait_quiet
        while time.monotonic() < end:
            if not busy_processes() and load1() < 1.0:
                return True
            time.sleep(10)
        return not busy_processes() and load1() < 1.0


def med(xs):
    return statistics.median(xs) if xs else None


def table(results, cases):
    rows = []
    by = {}
    for r in results:
        by.setdefault((r["case"], r["variant"], r["mode"]), []).append(r)

    def cell(case, variant, mode):
        rs = by.get((case, variant, mode), [])
        ok = [r["secs"] for r in rs if r["ok"]]
        fails = len(rs) - len(ok)
        m = med(ok)
        txt = "—" if m is None else f"{m:.2f}"
        if fails:
            txt += f" ({fails} failed)"
        return m, txt

    hdr = ("| case | tool | cold median (s) | warm median (s) | rerun, no cache (s) | kiln/Buildah cold | "
           "kiln/Buildah warm | peak RSS tool (MiB) | peak RSS tree (MiB) | runs (cold / warm) |")
    rows.append(hdr)
    rows.append("|" + "---|" * 10)
    for case in cases:
        variants = CASES[case].get("variants", ["kiln", "buildah"])
        bc, _ = cell(case, "buildah", "cold")
        bw, _ = cell(case, "buildah", "warm")
        for v in variants:
            c, ct = cell(case, v, "cold")
            w, wt = cell(case, v, "warm")
            rr, rt = cell(case, v, "rerun")
            rs = [r for r in results if r["case"] == case and r["variant"] == v]
            tool = max([r["tool_peak_kib"] for r in rs] or [0]) / 1024
            tree = max([r["tree_max_kib"] for r in rs] or [0]) / 1024
            ratio_c = f"{c / bc:.2f}" if (c and bc and v != "buildah") else ""
            ratio_w = f"{w / bw:.2f}" if (w and bw and v != "buildah") else ""
            allc = " ".join(f"{r['secs']:.2f}" for r in rs if r["mode"] == "cold")
            allw = " ".join(f"{r['secs']:.2f}" for r in rs if r["mode"] == "warm")
            rows.append(f"| {case} | {v} | {ct} | {wt} | {rt if CASES[case].get('rerun') else ''} | {ratio_c} | "
                        f"{ratio_w} | {tool:.1f} | {tree:.1f} | {allc} / {allw} |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=5088)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--kiln", default=os.path.join(REPO, "target/release/kiln"))
    ap.add_argument("--out", default="/var/tmp/kiln-compare/run")
    ap.add_argument("--bases", default="/var/tmp/kiln-compare/bases")
    ap.add_argument("--wait-quiet", type=int, default=0, help="wait up to SECS for no cargo/rustc and load < 1")
    ap.add_argument("--native-all-runs", action="store_true",
                    help="measure kiln-native (files-* cases) in every run, not only the first")
    ap.add_argument("--no-fresh-fs", dest="fresh_fs", action="store_false",
                    help="cold = delete the tool's state on the current filesystem (the pre-2026-11-23-06:00 "
                         "protocol) instead of a new ext4 filesystem per cold build")
    ap.add_argument("--fs-gib", type=int, default=8, help="size of each sparse state filesystem")
    ap.add_argument("--keep-registry", action="store_true", help="leave the registry running at the end")
    a = ap.parse_args()
    if os.getuid() != 0:
        sys.exit("run.py: run as root (both tools run as the unprivileged $KILN_TEST_USER)")
    cases = [c for c in a.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            sys.exit(f"run.py: unknown case {c}; known: {', '.join(CASES)}")
    b = Bench(a)
    b.setup()
    kv = subprocess.run([b.kiln, "--version"], capture_output=True, text=True).stdout.strip()
    bv = subprocess.run(["buildah", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    mem = next(l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    quiet = b.wait_quiet() if a.wait_quiet else None
    head = (f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPUs ({cpu}), "
            f"MemTotal {mem}, Linux {os.uname().release}; {kv}; {bv}; runs {a.runs}; "
            f"load at start {open('/proc/loadavg').read().split()[:3]}, cargo/rustc running: {len(busy_processes())}; "
            f"cold state: {'fresh ext4 (journal) per cold build' if a.fresh_fs else 'deleted in place'}"
            + ("" if quiet is None else f", quiet after waiting: {quiet}"))
    print("#", head, flush=True)
    t0 = time.monotonic()
    try:
        for c in cases:
            b.run_case(c)
    finally:
        busy_runs = sum(1 for r in b.results if r["busy"])
        tail = (f"{len(b.results)} builds in {time.monotonic() - t0:.0f} s; builds started while cargo/rustc ran: "
                f"{busy_runs}; load1 during builds: min {min([r['load1'] for r in b.results] or [0]):.2f}, "
                f"max {max([r['load1'] for r in b.results] or [0]):.2f}")
        tab = table(b.results, cases)
        out = f"# {head}\n# {tail}\n\n{tab}\n"
        print("\n" + out)
        open(os.path.join(a.out, "results.md"), "w").write(out)
        json.dump({"head": head, "tail": tail, "results": b.results}, open(os.path.join(a.out, "results.json"), "w"),
                  indent=1)
        if not a.keep_registry:
            subprocess.run([os.path.join(REPO, "scripts/registry.sh"), "stop", str(a.port)],
                           env=dict(os.environ, KILN_REGISTRY_DIR=b.regdir))


if __name__ == "__main__":
    main()
