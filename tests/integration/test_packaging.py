"""The installed distribution puts only ``gateway`` at the top of site-packages.

Regression: the wheel used to install ``core``, ``channels`` and ``workers`` as
top-level packages, so Django Channels (import name ``channels``) and the gateway
overwrote each other's ``channels/__init__.py``. This builds the wheel from a copy of
the source tree (symlinks kept, as in git), installs it into its own directory and
runs the embedded SDK in a Python that also has Django Channels installed.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("core", "channels", "workers", "gateway", "pyproject.toml", "README.md")


def _copy_sources(into: Path) -> Path:
    src = into / "src"
    src.mkdir()
    for name in SOURCES:
        origin = ROOT / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
            shutil.copytree(origin, src / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(origin, src / name)
    return src


def _run(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=300, check=False, cwd=cwd, env=env
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(work)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    _run(*pip, "--wheel-dir", str(work / "dist"), str(src))
    (found,) = (work / "dist").glob("gateway-*.whl")
    return found


def test_the_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"gateway"}
    for needed in (
        "gateway/core/bus/scripts/turn.py",
        "gateway/workers/turn.py",
        "gateway/channels/telegram/adapter.py",
        "gateway/channels/webchat/static/index.html",
        "gateway/core/py.typed",
    ):
        assert needed in names


SIDE_BY_SIDE = """
import asyncio, importlib, importlib.metadata, pkgutil, sys
import channels  # Django Channels
import gateway.channels
from gateway import Bot

assert importlib.metadata.version("channels") == channels.__version__, channels.__file__
assert channels.__file__.startswith(sys.argv[2]), channels.__file__
for module in (gateway, gateway.channels):
    assert module.__file__.startswith(sys.argv[1]), module.__file__

# Every module of the wheel imports without a top-level core/workers/channels of ours.
for found in pkgutil.walk_packages(gateway.__path__, "gateway."):
    if not found.name.endswith("__main__"):
        importlib.import_module(found.name)
assert "core" not in sys.modules and "workers" not in sys.modules
assert sys.modules["channels"] is channels

async def main():
    async with Bot.from_config(workspace=sys.argv[3]) as bot:
        result = await bot.run("hello from beside Django Channels", session_key="pkg:1")
    print(result.content)

asyncio.run(main())
"""


def test_the_sdk_runs_beside_django_channels(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    _run(*pip, "--target", str(target), str(wheel))
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")) == [
        "bin",
        "gateway",
    ]
    django_channels = importlib.metadata.distribution("channels").locate_file("")
    (site_packages,) = (p for p in site.getsitepackages() if Path(p) == Path(django_channels))
    # -S: no .pth files, so the editable install of this checkout is not on the path;
    # only the wheel's copy and the environment's third-party packages are.
    env = {"PYTHONPATH": f"{target}:{site_packages}", "GATEWAY_HOME": str(tmp_path / "home")}
    script = [sys.executable, "-S", "-c", SIDE_BY_SIDE, str(target), site_packages]
    ran = _run(*script, str(tmp_path / "workspace"), cwd=tmp_path, env=env)
    assert "hello from beside Django Channels" in ran.stdout
