#!/usr/bin/env python3
"""Build and push the base images and the large context used by bench/compare.

    bases.py REGISTRY_HOSTPORT [--dir DIR]      (as root; idempotent)

Pushes (plain HTTP, skopeo):
  REGISTRY/base/busybox:{latest,arm64,multi}   testdata/scripts/seed-registry.sh
  REGISTRY/base/debian:bookworm                mmdebstrap --variant=minbase, merged-usr hook,
                                               one gzip layer (SOURCE_DATE_EPOCH=1700000000)
  REGISTRY/base/files:{1k,10k,100k}            busybox layer + one layer of N small files
                                               in /data/<d>/<i> (1,000 per directory)
and generates once DIR/ctx-large/ (20,000 small files of 1-3 KiB in 40 directories + 4 x 50 MiB
from /dev/urandom; no Dockerfile in it: the runner passes -f).

Everything built is cached in DIR (default /var/tmp/kiln-compare/bases); a
second run only re-pushes (same bytes, same digests).
"""
import datetime
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
EPOCH = 1700000000
FILE_COUNTS = {"1k": 1000, "10k": 10000, "100k": 100000}


def log(msg):
    print(f"bases: {msg}", flush=True)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dump(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def write_layout(out, layers, arch="amd64", env=None, cmd=None):
    """layers: list of (gz_path, diff_id_hex). Writes an OCI layout tagged `latest`."""
    tmp = out + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = os.path.join(tmp, "blobs", "sha256")
    os.makedirs(blobs)
    descs = []
    for gz, diff_id in layers:
        d = sha256_file(gz)
        dst = os.path.join(blobs, d)
        if not os.path.exists(dst):
            shutil.copyfile(gz, dst)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": "sha256:" + d, "size": os.path.getsize(gz)})
    created = datetime.datetime.fromtimestamp(EPOCH, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {"architecture": arch, "os": "linux", "created": created,
              "config": {"Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                         "Cmd": cmd or ["/bin/sh"]},
              "rootfs": {"type": "layers", "diff_ids": ["sha256:" + x for _, x in layers]},
              "history": [{"created": created, "created_by": "bench/compare/bases.py"} for _ in layers]}
    cb = dump(config)
    cd = hashlib.sha256(cb).hexdigest()
    open(os.path.join(blobs, cd), "wb").write(cb)
    manifest = dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                "digest": "sha256:" + cd, "size": len(cb)},
                     "layers": descs})
    md = hashlib.sha256(manifest).hexdigest()
    open(os.path.join(blobs, md), "wb").write(manifest)
    open(os.path.join(tmp, "index.json"), "wb").write(dump(
        {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                            "digest": "sha256:" + md, "size": len(manifest),
                                            "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
    open(os.path.join(tmp, "oci-layout"), "wb").write(dump({"imageLayoutVersion": "1.0.0"}))
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)


def gzip_tar(tar_path, gz_path):
    """gzip -n (no name, no mtime); returns the diff_id (sha256 of the tar)."""
    subprocess.run(f"gzip -n -6 -c '{tar_path}' > '{gz_path}.part'", shell=True, check=True)
    os.rename(gz_path + ".part", gz_path)
    return sha256_file(tar_path)


def busybox_layer(seed_dir):
    """(gz path, diff_id) of the amd64 busybox layer from seed-registry.sh's layout."""
    layout = os.path.join(seed_dir, "amd64")
    idx = json.load(open(os.path.join(layout, "index.json")))
    mdig = idx["manifests"][0]["digest"].split(":")[1]
    man = json.load(open(os.path.join(layout, "blobs", "sha256", mdig)))
    cfg = json.load(open(os.path.join(layout, "blobs", "sha256", man["config"]["digest"].split(":")[1])))
    assert len(man["layers"]) == 1
    gz = os.path.join(layout, "blobs", "sha256", man["layers"][0]["digest"].split(":")[1])
    return gz, cfg["rootfs"]["diff_ids"][0].split(":")[1]


def files_layer(n, path):
    """A tar of /data/<d>/<i> (1,000 files per directory, content "<i>\\n")."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data=None):
            ti = tarfile.TarInfo(name)
            ti.mtime = EPOCH
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            if data is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            else:
                ti.mode = 0o644
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
        add("data")
        dirs = (n + 999) // 1000
        for d in range(1, dirs + 1):
            add(f"data/{d}")
            for i in range(1, min(n, 1000) + 1):
                add(f"data/{d}/{i}", f"{i}\n".encode())


def push(layout, dest, reg):
    log(f"push {layout} -> {reg}/{dest}")
    subprocess.run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests",
                    f"oci:{layout}:latest", f"docker://{reg}/{dest}"], check=True)


def seed_dir():
    out = subprocess.run([os.path.join(REPO, "testdata/scripts/seed-registry.sh"), "--prepare"],
                         check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "layouts ready in" in line:
            return line.split("layouts ready in", 1)[1].strip()
    raise SystemExit("bases: cannot find the busybox layouts: " + out)


def make_debian(d):
    layout = os.path.join(d, "debian-layout")
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    rootfs = os.path.join(d, "debian-rootfs")
    if not os.path.exists(os.path.join(rootfs, "etc", "debian_version")):
        log("mmdebstrap --variant=minbase bookworm (merged-usr hook); this downloads ~40 MB of .debs")
        shutil.rmtree(rootfs, ignore_errors=True)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        subprocess.run(["mmdebstrap", "--variant=minbase", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                        "bookworm", rootfs], check=True, env=env)
    # The layer: everything but the contents of /dev (device nodes, as in any
    # Docker image), sorted, numeric owners, PAX, mtimes clamped.
    tar = os.path.join(d, "debian-bookworm.tar")
    lst = os.path.join(d, "debian-files")
    subprocess.run(f"cd '{rootfs}' && find . -mindepth 1 -printf '%P\\n' | grep -v '^dev/' | LC_ALL=C sort > '{lst}'",
                   shell=True, check=True)
    subprocess.run(["tar", "-C", rootfs, "--no-recursion", "-T", lst, "--format=posix",
                    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                    "--numeric-owner", f"--mtime=@{EPOCH}", "--clamp-mtime", "-cf", tar], check=True)
    gz = os.path.join(d, "debian-bookworm.tar.gz")
    diff_id = gzip_tar(tar, gz)
    os.unlink(tar)
    write_layout(layout, [(gz, diff_id)], cmd=["bash"])
    return layout


BIG_PACKAGES = "build-essential,python3,python3-venv,nodejs,npm,default-jre-headless"


def make_big(d):
    """base/big (issue 18): bookworm minbase + compilers, python3, nodejs/npm and a JRE,
    split into three gzip layers (all but /usr/lib and /usr/share; /usr/lib; /usr/share)."""
    layout = os.path.join(d, "big-layout")
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    rootfs = os.path.join(d, "big-rootfs")
    if not os.path.exists(os.path.join(rootfs, "usr", "bin", "node")):
        log(f"mmdebstrap --variant=minbase --include={BIG_PACKAGES} bookworm; this downloads ~250 MB of .debs")
        shutil.rmtree(rootfs, ignore_errors=True)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        subprocess.run(["mmdebstrap", "--variant=minbase", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                        f"--include={BIG_PACKAGES}", "bookworm", rootfs], check=True, env=env)
    lst = os.path.join(d, "big-files")
    subprocess.run(f"cd '{rootfs}' && find . -mindepth 1 -printf '%P\\n' | grep -v '^dev/' | LC_ALL=C sort > '{lst}'",
                   shell=True, check=True)
    names = open(lst).read().splitlines()
    parts = [[n for n in names if not (n.startswith("usr/lib/") or n.startswith("usr/share/"))],
             ["usr", "usr/lib"] + [n for n in names if n.startswith("usr/lib/")],
             ["usr", "usr/share"] + [n for n in names if n.startswith("usr/share/")]]
    layers = []
    for i, part in enumerate(parts):
        plst = f"{lst}.{i}"
        open(plst, "w").write("".join(n + "\n" for n in part))
        tar = os.path.join(d, f"big-{i}.tar")
        subprocess.run(["tar", "-C", rootfs, "--no-recursion", "-T", plst, "--format=posix",
                        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                        "--numeric-owner", f"--mtime=@{EPOCH}", "--clamp-mtime", "-cf", tar], check=True)
        gz = tar + ".gz"
        layers.append((gz, gzip_tar(tar, gz)))
        os.unlink(tar)
    write_layout(layout, layers, cmd=["bash"])
    return layout


def make_rust(d):
    """base/rust (issue 18 part 4): bookworm minbase + Debian's cargo and rustc, one
    gzip layer."""
    layout = os.path.join(d, "rust-layout")
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    rootfs = os.path.join(d, "rust-rootfs")
    if not os.path.exists(os.path.join(rootfs, "usr", "bin", "cargo")):
        log("mmdebstrap --variant=minbase --include=cargo,gcc,libc6-dev bookworm; this downloads ~150 MB of .debs")
        shutil.rmtree(rootfs, ignore_errors=True)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        subprocess.run(["mmdebstrap", "--variant=minbase", "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
                        "--include=cargo,gcc,libc6-dev", "bookworm", rootfs], check=True, env=env)
    tar = os.path.join(d, "rust-0.tar")
    subprocess.run(f"cd '{rootfs}' && find . -mindepth 1 -printf '%P\\n' | grep -v '^dev/' | LC_ALL=C sort > '{tar}.lst'", shell=True, check=True)
    subprocess.run(["tar", "-C", rootfs, "--no-recursion", "-T", tar + ".lst", "--format=posix",
                    "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                    "--numeric-owner", f"--mtime=@{EPOCH}", "--clamp-mtime", "-cf", tar], check=True)
    gz = tar + ".gz"
    layer = (gz, gzip_tar(tar, gz))
    os.unlink(tar)
    write_layout(layout, [layer], cmd=["bash"])
    return layout


def make_files(d, name, n, bb):
    layout = os.path.join(d, f"files-{name}-layout")
    if os.path.exists(os.path.join(layout, "index.json")):
        return layout
    log(f"generating a layer of {n} files")
    tar = os.path.join(d, f"files-{name}.tar")
    files_layer(n, tar)
    gz = tar + ".gz"
    diff_id = gzip_tar(tar, gz)
    os.unlink(tar)
    write_layout(layout, [bb, (gz, diff_id)])
    return layout


def make_large_context(d):
    ctx = os.path.join(d, "ctx-large")
    if os.path.exists(os.path.join(ctx, ".done")):
        return ctx
    log("generating the large context: 20,000 small files + 200 MiB from /dev/urandom")
    shutil.rmtree(ctx, ignore_errors=True)
    os.makedirs(ctx)
    rnd = open("/dev/urandom", "rb")
    for k in range(20000):
        sub = os.path.join(ctx, "src", f"m{k // 500:02d}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{k:05d}.txt"), "wb") as f:
            # 1-3 KiB of text-ish content (compressible, like source files)
            f.write((f"file {k} " * (100 + (k * 37) % 250)).encode())
    os.makedirs(os.path.join(ctx, "data"))
    for k in range(4):
        with open(os.path.join(ctx, "data", f"blob{k}.bin"), "wb") as f:
            for _ in range(50):
                f.write(rnd.read(1 << 20))
    open(os.path.join(ctx, ".done"), "w").close()
    return ctx


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    reg = sys.argv[1]
    d = sys.argv[sys.argv.index("--dir") + 1] if "--dir" in sys.argv else "/var/tmp/kiln-compare/bases"
    os.makedirs(d, exist_ok=True)
    subprocess.run([os.path.join(REPO, "testdata/scripts/seed-registry.sh"), reg], check=True,
                   stdout=subprocess.DEVNULL)
    bb = busybox_layer(seed_dir())
    push(make_debian(d), "base/debian:bookworm", reg)
    for name, n in FILE_COUNTS.items():
        push(make_files(d, name, n, bb), f"base/files:{name}", reg)
    make_large_context(d)
    log("done")


if __name__ == "__main__":
    main()
