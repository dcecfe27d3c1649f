"""`ecg_decode/file_limits.read_at_most`: the whole file within the limit, read at the size it has,
and a file that grew since its size was taken still read whole or refused."""
from __future__ import annotations

import io

import pytest

from ecg_decode import file_limits
from ecg_decode.file_limits import TooLarge, read_at_most


class _Recording(io.BufferedReader):
    """A file handle that remembers the sizes it was asked to read."""

    def __init__(self, raw):
        super().__init__(raw)
        self.asked: list[int] = []

    def read(self, size=-1):
        self.asked.append(size)
        return super().read(size)


def _opened(path) -> _Recording:
    return _Recording(io.FileIO(str(path), "rb"))


def test_a_file_is_read_whole_asking_for_its_own_size_not_the_limit(tmp_path):
    path = tmp_path / "R.mat"
    path.write_bytes(bytes(range(256)) * 1000)
    with _opened(path) as handle:
        assert read_at_most(handle, 256 << 20, "R.mat") == path.read_bytes()
    assert handle.asked == [256_001]  # one read of the size plus one byte: never 256 MB up front


def test_a_file_over_the_limit_is_refused(tmp_path):
    path = tmp_path / "R.mat"
    path.write_bytes(b"x" * 1001)
    with _opened(path) as handle, pytest.raises(TooLarge):
        read_at_most(handle, 1000, "R.mat")
    path.write_bytes(b"x" * 1000)
    with _opened(path) as handle:
        assert read_at_most(handle, 1000, "R.mat") == b"x" * 1000


@pytest.mark.parametrize("grown_to, refused", [(5000, False), (20_000, True)])
def test_a_file_that_grew_since_its_size_was_taken_is_read_on_within_the_limit(tmp_path, monkeypatch, grown_to,
                                                                               refused):
    path = tmp_path / "R.mat"
    path.write_bytes(b"y" * grown_to)
    monkeypatch.setattr(file_limits, "_size_now", lambda handle: 100)  # the size before it grew
    with _opened(path) as handle:
        if refused:
            with pytest.raises(TooLarge):
                read_at_most(handle, 10_000, "R.mat")
        else:
            assert read_at_most(handle, 10_000, "R.mat") == b"y" * grown_to


def test_a_stream_without_a_size_is_read_whole():
    assert read_at_most(io.BytesIO(b"z" * 3000), 10_000, "stream") == b"z" * 3000
    assert read_at_most(io.BytesIO(b""), 10_000, "stream") == b""
    with pytest.raises(TooLarge):
        read_at_most(io.BytesIO(b"z" * 3000), 2999, "stream")
