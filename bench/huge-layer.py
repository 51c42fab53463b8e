#!/usr/bin/env python3
"""A 10 GB layer (issue 18 part 1): kiln's memory while it writes and while it pulls and
unpacks one layer far larger than RAM should matter.

    sudo HUGE_GIB=10 python3 bench/huge-layer.py --tools kiln --fs-gib 30 [--port 5093]

Same setup as bench/big-base.py (its Bench: fresh ext4 state per build, `base/big` in a
registry of its own, kiln as the unprivileged user, peak RSS of the process tree
polled). The context holds one file of $HUGE_GIB GiB (a repeated text line: the gzip layer
is small, the tar and the unpacked file are the full size). Cases, each on a fresh state:
- write: `FROM big` + `COPY huge.bin /huge.bin`, pushed (context hashing, the 10 GiB
  tar compressed in one pass);
- unpack: `FROM` that pushed image + `RUN test -s /huge.bin` (pull, inflate and unpack
  the 10 GiB layer as it downloads, beside the base's layers).
"""
import importlib.util
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("bigbase", os.path.join(HERE, "big-base.py"))
bigbase = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bigbase)


class Bench(bigbase.Bench):
    def setup(self):
        bigbase.CASES.clear()
        bigbase.CASES["copy"] = "FROM {REG}/base/big:latest\nCOPY huge.bin /huge.bin\n"
        bigbase.CASES["unpack"] = "FROM {REG}/bench/huge-write:latest\nRUN test -s /huge.bin\n"
        super().setup()
        gib = int(os.environ.get("HUGE_GIB", "10"))
        f = os.path.join(self.w, "ctx", "copy", "huge.bin")
        subprocess.run(["bash", "-c", f"yes 'kiln: one line of a layer much larger than memory' | head -c {gib}G > {f}"], check=True)
        bigbase.chown_tree(os.path.join(self.w, "ctx"))

    def run_all(self):
        rows = {}
        for tool in self.a.tools.split(","):
            st = self.state_fs(f"{tool}-write")
            s, peak = self.one(tool, st, "copy", "huge-write")
            rows[("write: COPY of the 10 GiB file, push", tool)] = [(s, peak)]
            print(f"write {tool}: {s:.2f} s, peak {peak / 1024:.0f} MiB", flush=True)
            self.drop_state(f"{tool}-write")
            st = self.state_fs(f"{tool}-unpack")
            s, peak = self.one(tool, st, "unpack", f"huge-unpack-{tool}")
            rows[("unpack: FROM it + RUN, fresh state", tool)] = [(s, peak)]
            print(f"unpack {tool}: {s:.2f} s, peak {peak / 1024:.0f} MiB", flush=True)
            self.drop_state(f"{tool}-unpack")
        return rows


if __name__ == "__main__":
    bigbase.run_main(Bench, __doc__, "huge-layer.py", 5093, "/var/tmp/kiln-bigbase/huge")
