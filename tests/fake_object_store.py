"""`fakestore://KEY` kept in a local folder: an object store with GCS's semantics, for offline tests.

Like `gs://` in Beam: only objects exist (`exists` of a "folder" is False), there are no directories
(`has_dirs` is False, `mkdirs` does nothing), listing goes by key prefix, and Python's `open()` or
`os` calls on a `fakestore://` path fail. Code that reaches its inputs and outputs only through Beam
`FileSystems` works on it exactly as it would on a bucket. Beam finds the class by its scheme as soon
as this module is imported; set `FakeObjectStore.root` first.
"""
from __future__ import annotations

import hashlib
import os
import shutil

from apache_beam.io.filesystem import CompressionTypes, FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "fakestore"
PREFIX = f"{SCHEME}://"


class FakeObjectStore(FileSystem):
    root: str = ""

    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def _local(self, path: str) -> str:
        assert path.startswith(PREFIX), path
        return os.path.join(self.root, path[len(PREFIX):])

    def _metadata(self, local: str) -> FileMetadata:
        return FileMetadata(PREFIX + os.path.relpath(local, self.root), os.path.getsize(local),
                            os.path.getmtime(local))

    def join(self, basepath: str, *paths: str) -> str:
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def has_dirs(self) -> bool:
        return False

    def mkdirs(self, path: str) -> None:
        pass

    def _list(self, dir_or_prefix: str):
        prefix = self._local(dir_or_prefix)
        for folder, _, files in os.walk(self.root):
            for name in files:
                local = os.path.join(folder, name)
                if local.startswith(prefix):
                    yield self._metadata(local)

    def create(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        local = self._local(path)
        os.makedirs(os.path.dirname(local), exist_ok=True)
        return LocalFileSystem(None).create(local, mime_type, compression_type)

    def open(self, path, mime_type="application/octet-stream", compression_type=CompressionTypes.AUTO):
        return LocalFileSystem(None).open(self._local(path), mime_type, compression_type)

    def copy(self, source_file_names, destination_file_names) -> None:
        for source, destination in zip(source_file_names, destination_file_names):
            os.makedirs(os.path.dirname(self._local(destination)), exist_ok=True)
            shutil.copyfile(self._local(source), self._local(destination))

    def rename(self, source_file_names, destination_file_names) -> None:
        self.copy(source_file_names, destination_file_names)
        self.delete(source_file_names)

    def exists(self, path: str) -> bool:
        return os.path.isfile(self._local(path))

    def size(self, path: str) -> int:
        return os.path.getsize(self._local(path))

    def last_updated(self, path: str) -> float:
        return os.path.getmtime(self._local(path))

    def checksum(self, path: str) -> str:
        """The object's content checksum, as GCS keeps one (crc32c) in every object's metadata."""
        with open(self._local(path), "rb") as handle:
            return hashlib.md5(handle.read()).hexdigest()

    def metadata(self, path: str) -> FileMetadata:
        return self._metadata(self._local(path))

    def delete(self, paths) -> None:
        """Deleting a "folder" deletes every object under it, as `gs://` does for a path ending in '/'."""
        for path in paths:
            local = self._local(path)
            if os.path.isdir(local):
                shutil.rmtree(local)
            elif os.path.exists(local):
                os.remove(local)

    def report_lineage(self, path, unused_lineage) -> None:
        pass
