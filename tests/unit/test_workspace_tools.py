"""Workspace file tools: confinement (.., absolute paths, symlinks), the four tools, builtins."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core.errors import ToolError, WorkspaceEscapeError
from gateway.core.settings import ExecToolSettings, ToolsSettings, WebFetchToolSettings
from gateway.core.tools import ToolContext, builtin_tools, resolve_in_workspace
from gateway.core.tools import workspace as ws
from gateway.core.tools.workspace import edit_file, list_dir, read_file, write_file


@pytest.fixture
def root(tmp_path: Path) -> Path:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    return workspace


@pytest.fixture
def ctx(root: Path) -> ToolContext:
    return ToolContext(session_key="s", run_id="r", workspace=root)


def test_resolve_allows_paths_inside(root: Path) -> None:
    assert resolve_in_workspace(root, "a/b.txt") == root.resolve() / "a" / "b.txt"
    assert resolve_in_workspace(root, "a/../b.txt") == root.resolve() / "b.txt"
    assert resolve_in_workspace(root, str(root / "c.txt")) == root.resolve() / "c.txt"
    assert resolve_in_workspace(root, ".") == root.resolve()


@pytest.mark.parametrize("path", ["../outside.txt", "a/../../outside.txt", ".."])
def test_resolve_refuses_dotdot_escapes(root: Path, path: str) -> None:
    with pytest.raises(WorkspaceEscapeError, match="outside the workspace") as caught:
        resolve_in_workspace(root, path)
    assert repr(path) in str(caught.value)


def test_resolve_refuses_absolute_paths_outside(root: Path) -> None:
    with pytest.raises(WorkspaceEscapeError, match="'/etc/passwd' is outside"):
        resolve_in_workspace(root, "/etc/passwd")
    with pytest.raises(WorkspaceEscapeError):
        resolve_in_workspace(root, str(root.parent / "outside.txt"))


def test_resolve_refuses_symlinks_that_lead_outside(root: Path) -> None:
    (root / "file_link").symlink_to(root.parent / "outside.txt")
    (root / "dir_link").symlink_to(root.parent)
    (root / "inner_link").symlink_to(root / "target.txt")
    with pytest.raises(WorkspaceEscapeError, match="'file_link'"):
        resolve_in_workspace(root, "file_link")
    with pytest.raises(WorkspaceEscapeError, match=r"'dir_link/outside\.txt'"):
        resolve_in_workspace(root, "dir_link/outside.txt")
    assert resolve_in_workspace(root, "inner_link") == root.resolve() / "target.txt"


def test_resolve_refuses_nul_bytes(root: Path) -> None:
    with pytest.raises(ToolError, match="invalid path"):
        resolve_in_workspace(root, "a\x00b")


async def test_tools_refuse_escapes_and_touch_nothing_outside(ctx: ToolContext, root: Path) -> None:
    (root / "link").symlink_to(root.parent / "outside.txt")
    with pytest.raises(WorkspaceEscapeError):
        await read_file.invoke({"path": "link"}, ctx)
    with pytest.raises(WorkspaceEscapeError):
        await write_file.invoke({"path": "../outside.txt", "content": "x"}, ctx)
    with pytest.raises(WorkspaceEscapeError):
        await edit_file.invoke({"path": "link", "old_text": "secret", "new_text": "x"}, ctx)
    with pytest.raises(WorkspaceEscapeError):
        await list_dir.invoke({"path": ".."}, ctx)
    assert (root.parent / "outside.txt").read_text() == "secret"


async def test_read_file(ctx: ToolContext, root: Path) -> None:
    (root / "notes.txt").write_text("one\ntwo\nthree\n")
    assert await read_file.invoke({"path": "notes.txt"}, ctx) == "one\ntwo\nthree\n"
    assert await read_file.invoke({"path": "notes.txt", "offset": 1, "limit": 1}, ctx) == (
        "two\n\n[showing lines 2-2; call read_file with offset=2 for more]"
    )
    assert await read_file.invoke({"path": "notes.txt", "offset": 1, "limit": 2}, ctx) == (
        "two\nthree\n"
    )
    assert "no lines after offset 5" in await read_file.invoke(
        {"path": "notes.txt", "offset": 5}, ctx
    )
    (root / "empty.txt").write_text("")
    assert await read_file.invoke({"path": "empty.txt"}, ctx) == "[empty.txt: empty file]"


async def test_read_file_errors(ctx: ToolContext, root: Path) -> None:
    (root / "sub").mkdir()
    with pytest.raises(ToolError, match=r"missing\.txt: no such file"):
        await read_file.invoke({"path": "missing.txt"}, ctx)
    with pytest.raises(ToolError, match="sub: is a directory"):
        await read_file.invoke({"path": "sub"}, ctx)
    with pytest.raises(ToolError, match="offset must be >= 0"):
        await read_file.invoke({"path": "sub", "offset": -1}, ctx)


async def test_read_file_limits_size_and_line_length(
    ctx: ToolContext, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "READ_MAX_CHARS", 25)
    monkeypatch.setattr(ws, "READ_MAX_LINE_CHARS", 8)
    (root / "big.txt").write_text("".join(f"line{n}\n" for n in range(10)))
    text = await read_file.invoke({"path": "big.txt"}, ctx)
    assert text.startswith("line0\nline1\nline2\nline3\n")
    assert text.endswith("[showing lines 1-4; call read_file with offset=4 for more]")
    (root / "wide.txt").write_text("x" * 30 + "\nnext\n")
    monkeypatch.setattr(ws, "READ_MAX_CHARS", 100)
    wide = await read_file.invoke({"path": "wide.txt"}, ctx)
    assert wide.splitlines() == ["xxxxxxxx [... line cut at 8 chars]", "next"]
    monkeypatch.setattr(ws, "READ_MAX_CHARS", 10)  # one line over the limit is still shown
    first = await read_file.invoke({"path": "wide.txt"}, ctx)
    assert first.startswith("xxxxxxxx [... line cut at 8 chars]\n")
    assert first.endswith("call read_file with offset=1 for more]")


async def test_write_file_creates_directories_and_overwrites(ctx: ToolContext, root: Path) -> None:
    result = await write_file.invoke({"path": "a/b/c.txt", "content": "hello\r\n"}, ctx)
    assert result == "wrote 7 characters to a/b/c.txt"
    assert str(root) not in result
    assert (root / "a/b/c.txt").read_bytes() == b"hello\r\n"
    await write_file.invoke({"path": "a/b/c.txt", "content": "bye"}, ctx)
    assert (root / "a/b/c.txt").read_text() == "bye"
    with pytest.raises(ToolError, match="is a directory"):
        await write_file.invoke({"path": "a", "content": "x"}, ctx)


async def test_edit_file_replaces_a_unique_match(ctx: ToolContext, root: Path) -> None:
    (root / "code.py").write_text("a = 1\nb = 2\n")
    assert await edit_file.invoke(
        {"path": "code.py", "old_text": "b = 2", "new_text": "b = 3"}, ctx
    ) == ("edited code.py")
    assert (root / "code.py").read_text() == "a = 1\nb = 3\n"


async def test_edit_file_refusals(ctx: ToolContext, root: Path) -> None:
    (root / "code.py").write_text("x = 1\nx = 1\n")
    with pytest.raises(ToolError, match="old_text not found"):
        await edit_file.invoke({"path": "code.py", "old_text": "y", "new_text": "z"}, ctx)
    with pytest.raises(ToolError, match="occurs 2 times"):
        await edit_file.invoke({"path": "code.py", "old_text": "x = 1", "new_text": "z"}, ctx)
    with pytest.raises(ToolError, match="must not be empty"):
        await edit_file.invoke({"path": "code.py", "old_text": "", "new_text": "z"}, ctx)
    with pytest.raises(ToolError, match=r"nope\.py: no such file"):
        await edit_file.invoke({"path": "nope.py", "old_text": "a", "new_text": "b"}, ctx)
    (root / "blob.bin").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ToolError, match="not a UTF-8 text file"):
        await edit_file.invoke({"path": "blob.bin", "old_text": "a", "new_text": "b"}, ctx)
    assert (root / "code.py").read_text() == "x = 1\nx = 1\n"


async def test_edit_file_keeps_crlf_line_endings(ctx: ToolContext, root: Path) -> None:
    (root / "win.txt").write_bytes(b"first\r\nsecond\r\nthird\r\n")
    await edit_file.invoke(
        {"path": "win.txt", "old_text": "second\nthird", "new_text": "2nd\n3rd"}, ctx
    )
    assert (root / "win.txt").read_bytes() == b"first\r\n2nd\r\n3rd\r\n"


async def test_list_dir(ctx: ToolContext, root: Path) -> None:
    (root / "b.txt").write_text("")
    (root / "a_dir").mkdir()
    (root / ".hidden").write_text("")
    assert await list_dir.invoke({}, ctx) == ".hidden\na_dir/\nb.txt"
    assert await list_dir.invoke({"path": "a_dir"}, ctx) == "a_dir: empty directory"
    with pytest.raises(ToolError, match=r"b\.txt: not a directory"):
        await list_dir.invoke({"path": "b.txt"}, ctx)
    with pytest.raises(ToolError, match="nothing: no such file or directory"):
        await list_dir.invoke({"path": "nothing"}, ctx)


async def test_list_dir_caps_entries(
    ctx: ToolContext, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ws, "LIST_MAX_ENTRIES", 2)
    for name in ("a", "b", "c", "d"):
        (root / name).write_text("")
    assert await list_dir.invoke({}, ctx) == "a\nb\n[... 2 more entries not shown]"


def test_builtin_tools_follow_settings() -> None:
    assert builtin_tools(ToolsSettings()).names() == [
        "read_file",
        "write_file",
        "edit_file",
        "list_dir",
    ]
    enabled = ToolsSettings(
        exec=ExecToolSettings(enabled=True), web_fetch=WebFetchToolSettings(enabled=True)
    )
    registry = builtin_tools(enabled)
    assert registry.names()[4:] == ["exec", "web_fetch"]
    assert list(registry.get("exec").parameters["properties"]) == ["command"]  # type: ignore[union-attr]
    assert list(registry.get("web_fetch").parameters["properties"]) == ["url"]  # type: ignore[union-attr]
    only_exec = builtin_tools(ToolsSettings(exec=ExecToolSettings(enabled=True)))
    assert "exec" in only_exec and "web_fetch" not in only_exec
