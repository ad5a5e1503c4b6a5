"""MemoryStore: MEMORY.md, and history cursors across threads and processes."""

from __future__ import annotations

import json
import logging
import multiprocessing
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from gateway.core.memory import MemoryStore


def test_read_missing_is_empty(tmp_path: Path) -> None:
    assert MemoryStore(tmp_path).read() == ""
    assert MemoryStore(tmp_path).read_history() == []


def test_write_then_read(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path)
    memory.write("# Facts\n- likes tea 🍵\n")
    memory.write("# Facts\n- likes coffee\n")
    assert memory.read() == "# Facts\n- likes coffee\n"
    assert (tmp_path / "memory" / "MEMORY.md").exists()
    assert sorted(p.name for p in (tmp_path / "memory").iterdir()) == ["MEMORY.md"]


def test_cursors_are_one_based_and_increasing(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path)
    assert [memory.append_history(f"t{i}") for i in range(3)] == [1, 2, 3]
    entries = memory.read_history()
    assert [(e["cursor"], e["text"], e["session_key"]) for e in entries] == [
        (1, "t0", None),
        (2, "t1", None),
        (3, "t2", None),
    ]
    assert all(isinstance(e["ts"], float) for e in entries)


def test_a_new_store_continues_after_the_last_cursor(tmp_path: Path) -> None:
    MemoryStore(tmp_path).append_history("one")
    MemoryStore(tmp_path).append_history("two")
    assert MemoryStore(tmp_path).append_history("three") == 3


def test_read_history_filters_by_session(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path)
    memory.append_history("a1", session_key="a")
    memory.append_history("b1", session_key="b")
    memory.append_history("global")
    memory.append_history("a2", session_key="a")
    assert [e["text"] for e in memory.read_history("a")] == ["a1", "a2"]
    assert [e["cursor"] for e in memory.read_history("b")] == [2]
    assert len(memory.read_history()) == 4


def test_threads_get_distinct_cursors(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path)
    with ThreadPoolExecutor(max_workers=8) as pool:
        cursors = list(pool.map(lambda i: memory.append_history(str(i)), range(400)))
    assert sorted(cursors) == list(range(1, 401))
    assert [e["cursor"] for e in memory.read_history()] == list(range(1, 401))


def _append_many(workspace: str, count: int, start: Barrier, results: Queue[list[int]]) -> None:
    memory = MemoryStore(Path(workspace))
    start.wait()  # all processes append at once, so their appends interleave
    results.put([memory.append_history("from a process") for _ in range(count)])


def test_processes_get_distinct_cursors(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(4), context.Queue()
    workers = [
        context.Process(target=_append_many, args=(str(tmp_path), 100, start, results))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    cursors = [c for _ in workers for c in results.get(timeout=60)]
    for worker in workers:
        worker.join(timeout=60)
    assert sorted(cursors) == list(range(1, 401))
    assert [e["cursor"] for e in MemoryStore(tmp_path).read_history()] == list(range(1, 401))


def test_corrupt_lines_are_skipped_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    memory = MemoryStore(tmp_path)
    memory.append_history("first")
    with memory.history_path.open("ab") as file:
        file.write(b"{not json\n[1]\n")
    memory.append_history("second")
    with caplog.at_level(logging.WARNING, logger="gateway.core.memory"):
        entries = memory.read_history()
    assert [(e["cursor"], e["text"]) for e in entries] == [(1, "first"), (2, "second")]
    assert "line 2" in caplog.text
    assert "line 3" in caplog.text


def test_append_after_a_torn_last_line(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path)
    memory.append_history("first")
    with memory.history_path.open("ab") as file:
        file.write(b'{"cursor": 2, "ts": 1.0, "text": "cut sh')  # a crash mid-append

    assert MemoryStore(tmp_path).append_history("after the crash") == 2

    texts = [e["text"] for e in MemoryStore(tmp_path).read_history()]
    assert texts == ["first", "after the crash"]


def test_cursor_found_across_read_chunks(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path)
    for i in range(30):
        memory.append_history("x" * 1000 + str(i))
    with memory.history_path.open("ab") as file:
        file.write(b"garbage line\n" * 2000)  # pushes the last entry past several chunks
    assert MemoryStore(tmp_path).append_history("next") == 31


def test_history_lines_are_json_objects(tmp_path: Path) -> None:
    memory = MemoryStore(tmp_path)
    memory.append_history("hello", session_key="s:1")
    (line,) = memory.history_path.read_text(encoding="utf-8").splitlines()
    assert set(json.loads(line)) == {"cursor", "ts", "session_key", "text"}


def test_read_follows_every_change_of_the_file(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    assert store.read() == ""
    store.write("first")
    assert store.read() == "first"
    assert store.read() == "first"  # kept: the file did not change
    store.write("second, longer")  # replaced: a new inode
    assert store.read() == "second, longer"
    # Edited in place by someone else (same inode), one byte shorter: read again.
    store.memory_path.write_text("edited in place", encoding="utf-8")
    assert store.read() == "edited in place"
    store.memory_path.unlink()
    assert store.read() == ""
