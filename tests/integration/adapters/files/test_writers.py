"""adapters/files/writers.py and home.inbox_specials on a real filesystem: the lease probe tells
an open writer from none and never blocks on a FIFO; special entries are listed, not opened."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from mysimbdp.adapters.files.home import inbox_candidates, inbox_specials
from mysimbdp.adapters.files.writers import held_for_writing, snapshot


def test_held_for_writing_sees_an_open_writer_and_none_once_closed(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    with path.open("ab") as writer:
        writer.write(b"a\n1\n")
        assert held_for_writing(path) is True
        with path.open("rb"):  # readers do not count
            assert held_for_writing(path) is True
    with path.open("rb"):
        assert held_for_writing(path) is False
    before = snapshot(path)
    with path.open("ab") as writer:
        writer.write(b"2\n")
    assert snapshot(path) != before and snapshot(path).size == before.size + 2


def test_held_for_writing_never_opens_through_a_link_or_blocks_on_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "link").symlink_to(tmp_path / "pipe")
    assert held_for_writing(tmp_path / "link") is None  # O_NOFOLLOW: refused, not followed
    assert held_for_writing(tmp_path / "pipe") is None  # O_NONBLOCK: no lease on a FIFO, no wait


def test_inbox_specials_lists_links_fifos_and_sockets_not_files_or_hidden(tmp_path: Path) -> None:
    (tmp_path / "good.csv").write_text("a\n1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(tmp_path / "good.csv")
    (tmp_path / "dangling.csv").symlink_to(tmp_path / "nowhere")
    os.mkfifo(tmp_path / "pipe.csv")
    os.mkfifo(tmp_path / ".hidden")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        names = [p.name for p in inbox_specials(tmp_path)]
    assert names == ["dangling.csv", "link.csv", "pipe.csv", "sock"]
    assert [p.name for p in inbox_candidates(tmp_path)] == ["good.csv"]
