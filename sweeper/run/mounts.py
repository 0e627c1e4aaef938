"""Which filesystem holds a path (from /proc/mounts), and whether it is a network one: a SQLite storage must not
live on NFS when trials on other nodes write to it (``sweeper.run.storage.check_cluster_storage``), and a
storage path on a pseudo-filesystem can never hold a database (``sweeper.run.sanity``). Standard library only."""

from __future__ import annotations

import os
import re
from pathlib import Path

PROC_MOUNTS = "/proc/mounts"
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "coda",
        "9p",
        "lustre",
        "gpfs",
        "mmfs",
        "beegfs",
        "fhgfs",
        "ceph",
        "cephfs",
        "glusterfs",
        "panfs",
        "pvfs2",
        "orangefs",
        "ocfs2",
        "gfs2",
        "wekafs",
        "quobyte",
        "sshfs",
        "s3fs",
        "gcsfuse",
        "juicefs",
        "davfs",
        "virtiofs",
        "vboxsf",
        "vmhgfs",
        "cvmfs",
    }
)


def _unescape_mount_field(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in paths as octal escapes (\\040 ...)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(mounts_text: str) -> list[tuple[str, str]]:
    """(mount point, filesystem type) of each line of a /proc/mounts-format text."""
    mounts = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append((_unescape_mount_field(fields[1]), fields[2]))
    return mounts


def filesystem_type(path: str | Path, mounts_text: str | None = None) -> str | None:
    """The filesystem type holding ``path`` (which need not exist yet): the type of its longest mount
    point in ``mounts_text`` (default: this machine's /proc/mounts; the last mount of a point wins)."""
    if mounts_text is None:
        try:
            mounts_text = Path(PROC_MOUNTS).read_text()
        except OSError:
            return None
    target = os.path.realpath(os.path.abspath(os.fspath(path)))
    best: tuple[int, str] | None = None
    for mount_point, fstype in parse_mounts(mounts_text):
        point = mount_point.rstrip("/") or "/"
        inside = target == point or target.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= best[0]):
            best = (len(point), fstype)
    return best[1] if best else None


def is_network_filesystem(fstype: str | None) -> bool:
    """True for network and cluster filesystems (``fuse.sshfs``, ``nfs4``, ``lustre``, ...)."""
    if not fstype:
        return False
    name = fstype.lower().removeprefix("fuse.").removeprefix("fuseblk.")
    return name in NETWORK_FILESYSTEMS or name.startswith(("nfs", "ceph", "gluster", "smb"))
