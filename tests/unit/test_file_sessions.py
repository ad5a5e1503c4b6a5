"""FileSessionStore: round trips, appends vs rewrites, crash safety, corruption, keys."""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from gateway.core.errors import SessionError
from gateway.core.sessions import file as file_module
from gateway.core.sessions.base import Session, SessionStore
from gateway.core.sessions.file import FileSessionStore, decode_stem, encode_key


def _messages(count: int, tag: str = "m") -> list[dict[str, Any]]:
    roles = ("user", "assistant")
    return [{"role": roles[i % 2], "content": f"{tag}-{i} é 東"} for i in range(count)]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "sessions"


@pytest.fixture
def store(root: Path) -> FileSessionStore:
    return FileSessionStore(root)


def test_is_a_session_store(store: FileSessionStore) -> None:
    assert isinstance(store, SessionStore)


async def test_round_trip_through_disk(store: FileSessionStore, root: Path) -> None:
    session = Session(key="telegram:123:45", messages=_messages(5), metadata={"a": [1, 2]})
    session.summary = "earlier: greetings"
    await store.save(session)

    loaded = await FileSessionStore(root).load("telegram:123:45")  # a cold cache reads the file

    assert loaded is not None
    assert loaded.model_dump() == session.model_dump()


async def test_missing_session_is_none(store: FileSessionStore) -> None:
    assert await store.load("nobody") is None


def test_save_stamps_updated_at(store: FileSessionStore) -> None:
    session = Session(key="k", created_at=10.0, updated_at=10.0)
    store.save_sync(session)
    assert session.updated_at > 10.0
    loaded = store.load_sync("k")
    assert loaded is not None
    assert (loaded.created_at, loaded.updated_at) == (10.0, session.updated_at)


def test_load_returns_its_own_list_and_metadata(store: FileSessionStore) -> None:
    store.save_sync(Session(key="k", messages=_messages(2), metadata={"n": 1}))
    first = store.load_sync("k")
    assert first is not None
    first.messages[0] = {"role": "user", "content": "replaced, unsaved"}
    first.messages.append({"role": "user", "content": "unsaved"})
    first.metadata["n"] = 2

    second = store.load_sync("k")

    assert second is not None
    assert second.messages == _messages(2)
    assert second.metadata == {"n": 1}


def test_a_turn_encodes_only_what_it_appended(
    store: FileSessionStore, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Load and save cost no per-message work for the history already stored."""
    store.save_sync(Session(key="k", messages=_messages(50)))
    FileSessionStore(root).load_sync("k")  # a cold read parses the file once
    decoded: list[object] = []
    encoded: list[object] = []
    real_from_json, real_to_json = file_module.from_json, file_module.to_json

    def counting_from_json(data: Any) -> Any:
        decoded.append(data)
        return real_from_json(data)

    def counting_to_json(value: Any) -> bytes:
        encoded.append(value)
        return real_to_json(value)

    monkeypatch.setattr(file_module, "from_json", counting_from_json)
    monkeypatch.setattr(file_module, "to_json", counting_to_json)
    session = store.load_sync("k")
    assert session is not None
    session.messages.extend(_messages(2, tag="new"))
    store.save_sync(session)

    assert len(decoded) == 1  # the metadata only
    assert encoded == [*_messages(2, tag="new"), {}]  # the new messages and the metadata
    reloaded = FileSessionStore(root).load_sync("k")
    assert reloaded is not None
    assert reloaded.messages == _messages(50) + _messages(2, tag="new")


def test_growing_history_is_appended_with_a_commit_record(
    store: FileSessionStore, root: Path
) -> None:
    session = Session(key="k", messages=_messages(2))
    store.save_sync(session)
    session.messages.extend(_messages(3, tag="more"))
    store.save_sync(session)

    records = _lines(store.path_for("k"))
    assert records[0]["_type"] == "session"
    assert records[0]["message_count"] == 2
    assert records[1:6] == _messages(2) + _messages(3, tag="more")
    assert records[6] == {
        "_type": "state",
        "updated_at": session.updated_at,
        "message_count": 5,
    }
    reloaded = FileSessionStore(root).load_sync("k")
    assert reloaded is not None
    assert reloaded.messages == session.messages
    assert reloaded.updated_at == session.updated_at


def test_edited_history_is_rewritten(store: FileSessionStore, root: Path) -> None:
    session = Session(key="k", messages=_messages(6))
    store.save_sync(session)
    session.messages[0] = {"role": "user", "content": "edited"}
    store.save_sync(session)
    session.messages = session.messages[4:]
    session.summary = "compacted"
    store.save_sync(session)

    records = _lines(store.path_for("k"))
    assert [r.get("_type") for r in records] == ["session", None, None]
    assert records[0]["summary"] == "compacted"
    reloaded = FileSessionStore(root).load_sync("k")
    assert reloaded is not None
    assert reloaded.messages == session.messages


def test_file_is_rewritten_after_many_appends(
    store: FileSessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(file_module, "REWRITE_AFTER_APPENDS", 3)
    session = Session(key="k")
    for i in range(10):
        session.messages.append({"role": "user", "content": str(i)})
        store.save_sync(session)

    records = _lines(store.path_for("k"))
    assert sum(1 for r in records if r.get("_type") == "state") <= 3
    assert [r["content"] for r in records if "role" in r] == [str(i) for i in range(10)]


def test_metadata_change_rewrites_header(store: FileSessionStore, root: Path) -> None:
    session = Session(key="k", messages=_messages(1))
    store.save_sync(session)
    session.metadata["channel"] = "slack"
    store.save_sync(session)
    loaded = FileSessionStore(root).load_sync("k")
    assert loaded is not None
    assert loaded.metadata == {"channel": "slack"}


async def test_many_sessions_concurrently(store: FileSessionStore, root: Path) -> None:
    keys = [f"chat:{i}" for i in range(200)]
    sessions = [Session(key=k, messages=_messages(3, tag=k)) for k in keys]
    await asyncio.gather(*(store.save(s) for s in sessions))
    for s in sessions:
        s.messages.append({"role": "user", "content": "again"})
    await asyncio.gather(*(store.save(s) for s in sessions))

    cold = FileSessionStore(root)
    loaded = await asyncio.gather(*(cold.load(k) for k in keys))

    assert [s.messages if s else None for s in loaded] == [s.messages for s in sessions]
    assert sorted(info.key for info in await cold.list()) == sorted(keys)


def test_many_sessions_from_threads(store: FileSessionStore, root: Path) -> None:
    def turn(i: int) -> None:
        session = Session(key=f"t/{i}", messages=_messages(2))
        for n in range(5):
            session.messages.append({"role": "user", "content": f"{i}-{n}"})
            store.save_sync(session)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(turn, range(200)))

    cold = FileSessionStore(root)
    for i in range(200):
        loaded = cold.load_sync(f"t/{i}")
        assert loaded is not None
        assert loaded.messages[-1]["content"] == f"{i}-4"
        assert len(loaded.messages) == 7


def test_leftover_temp_file_from_a_crash_leaves_the_session_intact(
    store: FileSessionStore, root: Path
) -> None:
    store.save_sync(Session(key="k", messages=_messages(3)))
    path = store.path_for("k")
    before = path.read_bytes()
    (root / f".{path.name}.999.0.tmp").write_bytes(b'{"_type":"session","key":"k"')

    assert path.read_bytes() == before
    loaded = FileSessionStore(root).load_sync("k")
    assert loaded is not None
    assert loaded.messages == _messages(3)
    assert [info.key for info in FileSessionStore(root).list_sync()] == ["k"]


def test_torn_append_is_dropped_without_declaring_corruption(
    store: FileSessionStore, root: Path
) -> None:
    store.save_sync(Session(key="k", messages=_messages(2)))
    path = store.path_for("k")
    with path.open("ab") as file:  # a crash after one full line and half of the next
        file.write(b'{"role":"user","content":"uncommitted"}\n{"role":"assis')

    cold = FileSessionStore(root)
    loaded = cold.load_sync("k")

    assert loaded is not None
    assert loaded.messages == _messages(2)
    assert not list(root.glob("*.corrupt-*"))
    loaded.messages.append({"role": "user", "content": "next"})
    cold.save_sync(loaded)  # the torn tail forces a clean rewrite
    assert [r.get("content") for r in _lines(path)[1:]] == [m["content"] for m in loaded.messages]


def test_corrupt_line_is_recovered_and_moved_aside(
    store: FileSessionStore, root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store.save_sync(Session(key="bad", messages=_messages(3)))
    store.save_sync(Session(key="good", messages=_messages(2)))
    path = store.path_for("bad")
    lines = path.read_bytes().split(b"\n")
    lines[2] = b'{"role": "assistant", "content": '  # line 3 of the file
    original = b"\n".join(lines)
    path.write_bytes(original)

    cold = FileSessionStore(root)
    with caplog.at_level(logging.WARNING, logger="gateway.core.sessions.file"):
        recovered = cold.load_sync("bad")

    assert recovered is not None
    assert recovered.messages == [_messages(3)[0], _messages(3)[2]]
    asides = list(root.glob(f"{path.name}.corrupt-*"))
    assert len(asides) == 1
    assert asides[0].read_bytes() == original
    assert str(path) in caplog.text
    assert "line 3" in caplog.text
    assert FileSessionStore(root).load_sync("bad") == recovered  # the file is clean again
    good = cold.load_sync("good")
    assert good is not None
    assert good.messages == _messages(2)


@pytest.mark.parametrize(
    "header",
    [b"not json at all", b'{"_type":"session","key":"k","created_at":"yesterday"}', b"[1,2]"],
)
def test_unusable_header_is_rebuilt_from_the_key(root: Path, header: bytes) -> None:
    store = FileSessionStore(root)
    store.save_sync(Session(key="user/../x", messages=_messages(2)))
    path = store.path_for("user/../x")
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([header, *lines[1:]]))

    recovered = FileSessionStore(root).load_sync("user/../x")

    assert recovered is not None
    assert recovered.key == "user/../x"
    assert recovered.messages == _messages(2)
    assert recovered.summary == ""
    assert len(list(root.glob("*.corrupt-*"))) == 1
    assert _lines(path)[0]["key"] == "user/../x"


def test_empty_file_recovers_as_an_empty_session(root: Path) -> None:
    store = FileSessionStore(root)
    store.path_for("k").write_bytes(b"")
    recovered = store.load_sync("k")
    assert recovered is not None
    assert (recovered.key, recovered.messages) == ("k", [])


@pytest.mark.parametrize(
    "key",
    [
        "telegram:123:45",
        "user/../x",
        "..",
        ".",
        "../../etc/passwd",
        "a\\b",
        "%2E",
        "日本:1",
        "x" * 300,
    ],
)
def test_key_encoding_stays_in_the_directory(store: FileSessionStore, root: Path, key: str) -> None:
    path = store.path_for(key)
    assert path.parent == root
    assert not path.name.startswith(".")
    assert len(path.name.encode()) <= 255
    stem = path.name.removesuffix(".jsonl")
    assert decode_stem(stem) in (key, None)

    store.save_sync(Session(key=key, messages=_messages(1)))

    loaded = FileSessionStore(root).load_sync(key)
    assert loaded is not None
    assert loaded.key == key
    assert [info.key for info in FileSessionStore(root).list_sync()] == [key]
    assert sorted(p.name for p in root.iterdir()) == [path.name]


def test_encoding_is_reversible_and_injective() -> None:
    keys = ["a:b", "a%3Ab", "a/b", "a%2Fb", ".a", "%2Ea", "a.b"]
    stems = [encode_key(k) for k in keys]
    assert len(set(stems)) == len(keys)
    assert [decode_stem(s) for s in stems] == keys


def test_long_keys_are_hashed_apart() -> None:
    first, second = "k" * 300 + "1", "k" * 300 + "2"
    assert encode_key(first) != encode_key(second)
    assert decode_stem(encode_key(first)) is None


def test_empty_key_is_refused(store: FileSessionStore) -> None:
    with pytest.raises(SessionError):
        store.save_sync(Session(key=""))


async def test_list_reads_counts_from_header_and_commit_record(
    store: FileSessionStore, root: Path
) -> None:
    grown = Session(key="grown", messages=_messages(2), created_at=5.0)
    store.save_sync(grown)
    grown.messages.extend(_messages(4))
    store.save_sync(grown)
    store.save_sync(Session(key="small", messages=_messages(1)))

    infos = {info.key: info for info in await FileSessionStore(root).list()}

    assert set(infos) == {"grown", "small"}
    assert infos["grown"].message_count == 6
    assert (infos["grown"].created_at, infos["grown"].updated_at) == (5.0, grown.updated_at)
    assert infos["small"].message_count == 1


def test_list_falls_back_to_a_full_read_for_a_broken_header(
    store: FileSessionStore, root: Path
) -> None:
    store.save_sync(Session(key="k:1", messages=_messages(3)))
    path = store.path_for("k:1")
    path.write_bytes(b"garbage\n" + path.read_bytes().split(b"\n", 1)[1])

    infos = FileSessionStore(root).list_sync()

    assert [(i.key, i.message_count) for i in infos] == [("k:1", 3)]


async def test_delete(store: FileSessionStore, root: Path) -> None:
    await store.save(Session(key="k", messages=_messages(1)))
    assert await store.delete("k") is True
    assert await store.delete("k") is False
    assert await store.load("k") is None
    assert not store.path_for("k").exists()
    await store.flush()  # a deleted file that was saved since the last flush is skipped


async def test_save_after_the_file_vanished_rewrites_it(store: FileSessionStore) -> None:
    session = Session(key="k", messages=_messages(1))
    await store.save(session)
    store.path_for("k").unlink()
    session.messages.append({"role": "user", "content": "later"})
    await store.save(session)
    loaded = FileSessionStore(store.root).load_sync("k")
    assert loaded is not None
    assert loaded.messages == session.messages


async def test_flush_and_close(store: FileSessionStore, root: Path) -> None:
    await store.save(Session(key="k", messages=_messages(1)))
    await store.flush()
    await store.aclose()
    assert FileSessionStore(root).load_sync("k") is not None


def test_cache_is_bounded(root: Path) -> None:
    store = FileSessionStore(root, max_cached=2)
    for key in ("a", "b", "c"):
        store.save_sync(Session(key=key, messages=_messages(1, tag=key)))
    assert len(store._cache) == 2
    for key in ("a", "b", "c"):
        loaded = store.load_sync(key)
        assert loaded is not None
        assert loaded.messages == _messages(1, tag=key)
