#!/usr/bin/env python3
"""Lazy-pullable outputs (issue 18 part 3): what eStargz and zstd:chunked cost to
build and push beside gzip, kiln beside Buildah and Docker's BuildKit, on the big base.

    sudo python3 bench/lazy-formats.py [--runs 3] [--port 5091] [--tools kiln,buildah,docker]

Same setup as bench/big-base.py (its Bench: fresh ext4 state per build, the ~970 MB
`base/big` in a registry of its own, kiln and Buildah as the unprivileged user).
Case: `FROM big` + `RUN cp -a /usr/share /opt/share-copy` (one new layer of a few
hundred MB), built and pushed
- kiln: gzip; estargz and zstd:chunked (the new layer in the format, the base layers
  mounted as they are); both again with --force-compression (every layer rewritten);
  gzip with a SOCI index (--soci: ztocs of the new layer; with --force-compression of
  every layer);
- Buildah 1.28: `bud` + `push` (gzip), and `push --compression-format zstd:chunked`
  (Buildah recompresses every layer, base included: the force-compression row);
- Docker 20.10's BuildKit (2021): gzip only; it has no estargz or zstd:chunked output.
"""
import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bigbase", os.path.join(HERE, "big-base.py"))
bigbase = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bigbase)

CASE = "FROM {REG}/base/big:latest\nRUN cp -a /usr/share /opt/share-copy\n"

ROWS = [
    # (row, tool, kiln flags, buildah push flags)
    ("gzip", "kiln", (), ()),
    ("estargz (new layer)", "kiln", ("--compression", "estargz"), ()),
    ("zstd:chunked (new layer)", "kiln", ("--compression", "zstd:chunked"), ()),
    ("estargz, every layer (--force-compression)", "kiln", ("--compression", "estargz", "--force-compression"), ()),
    ("zstd:chunked, every layer (--force-compression)", "kiln", ("--compression", "zstd:chunked", "--force-compression"), ()),
    ("gzip + SOCI index (--soci)", "kiln", ("--soci",), ()),
    ("gzip + SOCI index, every layer (--soci --force-compression)", "kiln", ("--soci", "--force-compression"), ()),
    ("gzip", "buildah", (), ()),
    ("zstd:chunked, every layer (push --compression-format)", "buildah", (), ("--compression-format", "zstd:chunked")),
    ("gzip", "docker", (), ()),
]


class Bench(bigbase.Bench):
    def setup(self):
        bigbase.CASES["lazy-run"] = CASE
        super().setup()

    def cmds(self, tool, state, case, ref, flags=(), env=None):
        c = super().cmds(tool, state, case, ref, flags if tool == "kiln" else (), env)
        if tool == "buildah" and flags:
            c[-1] = c[-1][:-1] + list(flags) + c[-1][-1:]
        return c

    def run_all(self):
        rows = {}
        tools = self.a.tools.split(",")
        for k in range(1, self.a.runs + 1):
            for n, (row, tool, kflags, bflags) in enumerate(ROWS):
                if tool not in tools:
                    continue
                s, peak, _ = self.fresh(tool, "lazy-run", f"lazy{n}-{tool}-{k}", kflags if tool == "kiln" else bflags)
                rows.setdefault((row, tool), []).append((s, peak))
                print(f"{row} {tool} #{k}: {s:.2f} s, peak {peak / 1024:.0f} MiB", flush=True)
        return rows


if __name__ == "__main__":
    bigbase.run_main(Bench, __doc__, "lazy-formats.py", 5091, "/var/tmp/kiln-bigbase/lazy")
