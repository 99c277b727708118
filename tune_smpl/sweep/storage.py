"""Where a sweep lives: `<storage-path>/<name>/`, a local folder or a pyarrow.fs URI.

Every file of a sweep that `--resume`, `export` and `report` read goes through
`SweepStorage`, so a sweep on `s3://bucket/runs?endpoint_override=...&region=...` is the
same as one in `./runs`: paths are joined on the filesystem's own path, never on the URI
text, so the query string (`endpoint_override`, `region`, `scheme`) survives every join.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pyarrow.fs as pafs

from smpl_core.uri import is_uri


def json_text(obj) -> str:
    """A record file's text, as `write_json` writes it."""
    return json.dumps(obj, indent=1, sort_keys=True, default=str)


def open_root(root: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, its path of `root`). A plain path or a `file://` URI is this machine's
    filesystem and an absolute path; any other URI is what pyarrow.fs opens for it (its
    query string configures the filesystem: endpoint, region, scheme)."""
    if not is_uri(root):
        return pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
    fs, base = pafs.FileSystem.from_uri(root)
    if isinstance(fs, pafs.LocalFileSystem):
        return fs, str(Path(base).resolve())
    return fs, base.rstrip("/")


class SweepStorage:
    """The folder of sweeps (`root`) and the files below it."""

    def __init__(self, root: str):
        self.fs, self.base = open_root(root)
        self.root = self.base if self.local else root

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    # --- names ---------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """The filesystem path of `parts` below the root (what `self.fs` takes)."""
        return posixpath.join(self.base, *parts) if parts else self.base

    def uri(self, *parts: str) -> str:
        """What a user (or another process) passes to reach `parts`: a local path, or the
        root URI with the parts added to its path and its query string kept."""
        if self.local:
            return self.path(*parts)
        scheme, netloc, path, query, frag = urlsplit(self.root)
        return urlunsplit((scheme, netloc, posixpath.join(path or "/", *parts), query, frag))

    # --- files ---------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def is_dir(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type == pafs.FileType.Directory

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.path(*parts)) as fh:
            return fh.read().decode()

    def read_json(self, *parts: str):
        return json.loads(self.read_text(*parts))

    def write_text(self, text: str, *parts: str) -> None:
        """Whole-file write; a reader sees the old file or the new one, never half of it
        (local: a temporary file renamed over it; object stores replace objects whole)."""
        target = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if not self.local:
            with self.fs.open_output_stream(target) as fh:
                fh.write(text.encode())
            return
        tmp = f"{target}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)

    def write_json(self, obj, *parts: str) -> None:
        self.write_text(json_text(obj), *parts)

    def create_new(self, text: str, *parts: str) -> bool:
        """Write a file that must not exist yet; False if it does. Atomic on a local disk
        (two commands starting the same name: one wins); check-then-write on object stores."""
        target = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        if self.local:
            try:
                with open(target, "x") as fh:
                    fh.write(text)
                return True
            except FileExistsError:
                return False
        if self.exists(*parts):
            return False
        self.write_text(text, *parts)
        return True

    def list_dirs(self, *parts: str) -> list[str]:
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(posixpath.basename(i.path) for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.Directory)

    def delete_dir(self, *parts: str) -> None:
        if self.is_dir(*parts):
            self.fs.delete_dir(self.path(*parts))

    def upload_file(self, local: str | os.PathLike, *parts: str) -> None:
        target = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(target), recursive=True)
        pafs.copy_files(str(local), target, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
