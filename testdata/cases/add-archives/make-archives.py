#!/usr/bin/env python3
"""Regenerate the archives of this case (deterministic): python3 make-archives.py"""
import io, tarfile, gzip, bz2, lzma, subprocess

def tar_bytes(prefix):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        def add(name, kind, data=b"", mode=0o644, uid=0, gid=0, link=""):
            i = tarfile.TarInfo(f"{prefix}/{name}" if name else prefix)
            i.type, i.mode, i.uid, i.gid, i.mtime, i.linkname = kind, mode, uid, gid, 1700000000, link
            i.size = len(data) if kind == tarfile.REGTYPE else 0
            t.addfile(i, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
        add("", tarfile.DIRTYPE, mode=0o755, uid=1000, gid=1000)
        add("file.txt", tarfile.REGTYPE, f"{prefix} file\n".encode(), mode=0o640, uid=1000, gid=1000)
        add("bin", tarfile.DIRTYPE, mode=0o755)
        add("bin/tool", tarfile.REGTYPE, b"#!/bin/sh\necho tool\n", mode=0o4755)
        add("link", tarfile.SYMTYPE, link="file.txt")
        add("hard", tarfile.LNKTYPE, link=f"{prefix}/file.txt")
    return buf.getvalue()

open("plain.tar", "wb").write(tar_bytes("plain"))
open("a.tar.gz", "wb").write(gzip.compress(tar_bytes("gz"), mtime=0))
open("a.tar.bz2", "wb").write(bz2.compress(tar_bytes("bz2")))
open("a.tar.xz", "wb").write(lzma.compress(tar_bytes("xz")))
open("a.tar.zst", "wb").write(subprocess.run(["zstd", "-q", "-c", "--no-check"], input=tar_bytes("zst"), capture_output=True, check=True).stdout)
open("noext", "wb").write(gzip.compress(tar_bytes("noext"), mtime=0))
open("single.txt.gz", "wb").write(gzip.compress(b"not a tar\n", mtime=0))
