#!/usr/bin/env python3
"""Regenerate the archives of add_archives.txt: python3 make-archives.py

Prints, for every archive the ADD archive cases put in their context, a
`-- NAME mode=0600 base64 --` section to paste into add_archives.txt, and the
sha256 of each (the --unpack=false and COPY cases compare against it).

The archives are built as dockerfile_add_test.go builds them with Go's
archive/tar: USTAR headers with only name, type, size, mode (and link name)
set, so mtime 0, uid/gid 0, no user/group names; no record padding after the
two zero blocks that end the archive (Go's tar.Writer.Close writes just those).
gzip as Go's gzip.NewWriter: default level 6, no file name, mtime 0. The
output is deterministic.
"""
import base64
import gzip
import hashlib
import tarfile

BLOCK = 512


def entry(name, kind, data=b"", mode=0o644, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    out = info.tobuf(format=tarfile.USTAR_FORMAT)
    if data:
        out += data + b"\0" * (-len(data) % BLOCK)
    return out


def tar(*entries):
    return b"".join(entries) + b"\0" * (2 * BLOCK)


def directory(name):
    return entry(name, tarfile.DIRTYPE, mode=0o755)


def gz(data):
    return gzip.compress(data, compresslevel=6, mtime=0)


# testDockerfileAddArchive, testDockerfileAddChownArchive, testDockerfileAddArchiveWildcard
t_tar = tar(entry("foo", tarfile.REGTYPE, b"content0"))
# testDockerfileAddArchiveWildcard
b_tar = tar(entry("bar", tarfile.REGTYPE, b"content1"))
# testDockerfileAddArchiveWithImpliedParentDir: etc/ itself is not in the archive
implied = gz(tar(directory("etc/dnf/"), entry("etc/dnf/dnf.conf", tarfile.REGTYPE, b"content0")))
# testDockerfileAddArchiveThroughAbsoluteSymlink
rootfs = tar(directory("run/"), directory("var/"), entry("var/run", tarfile.SYMTYPE, mode=0o777, link="/run"))
payload = tar(
    directory("var/run/act/"),
    directory("var/run/act/actions/"),
    directory("var/run/act/actions/broad/"),
    directory("var/run/act/actions/broad/.git/"),
    entry("var/run/act/actions/broad/.git/HEAD", tarfile.REGTYPE, b"ref: refs/heads/main\n"),
    entry("var/run/act/actions/broad/.git/HEAD.link", tarfile.LNKTYPE, link="var/run/act/actions/broad/.git/HEAD"),
)

archives = [
    ("t.tar", t_tar),
    ("t.tar.gz", gz(t_tar)),
    ("b.tar", b_tar),
    ("implied/t.tar.gz", implied),
    ("rootfs.tar", rootfs),
    ("payload.tar", payload),
]
for name, data in archives:
    print(f"# {name}: sha256 {hashlib.sha256(data).hexdigest()}, {len(data)} bytes")
    print(f"-- {name.split('/')[-1]} mode=0600 base64 --")
    text = base64.b64encode(data).decode()
    for i in range(0, len(text), 76):
        print(text[i : i + 76])
    print()
