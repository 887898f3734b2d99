"""C sources built into shared libraries with the system compiler, once per source, compiler, flags and CPU.

Torch-free, so that a library can be built and loaded before torch is (deepobs.mkl_paths). The compiler is
`$CC`, else `cc`; the cache `$DEEPOBS_NATIVE_CACHE`, default `~/.cache/deepobs-torch`. A library is built in a
scratch directory beside its target and renamed into place, so concurrent processes never load half a file.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence


class NativeBuildError(RuntimeError):
    """The C compiler is missing or failed; the message is one line."""


def cpuinfo_line(field: str) -> str | None:
    """The first line of /proc/cpuinfo that starts with `field` ("" if none), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith(field)), "")
    except OSError:
        return None


def cpu_flags() -> str:
    flags = cpuinfo_line("flags")
    return platform.processor() if flags is None else flags


def build_library(sources: Sequence[Path], flags: Sequence[str], stem: str, headers: Sequence[Path] = ()) -> Path:
    """The shared library built from `sources` with `flags` (cached; the `headers` they include count in the
    cache key); NativeBuildError says why there is none."""
    if platform.system() != "Linux":
        raise NativeBuildError(f"built on Linux only, not {platform.system()}")
    compiler = os.environ.get("CC", "cc")
    if shutil.which(compiler) is None:
        raise NativeBuildError(f"no C compiler ({compiler!r} not found; set CC)")
    cache = Path(os.environ.get("DEEPOBS_NATIVE_CACHE", Path.home() / ".cache" / "deepobs-torch"))
    try:
        return _build(cache, compiler, sources, flags, stem, headers)
    except (OSError, subprocess.SubprocessError) as error:
        raise NativeBuildError(f"{type(error).__name__}: {error}".splitlines()[0]) from None


def _build(cache: Path, compiler: str, sources: Sequence[Path], flags: Sequence[str], stem: str,
           headers: Sequence[Path]) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
    texts = [path.read_text() for path in (*sources, *headers)]
    key = hashlib.sha256("\0".join([*texts, compiler, version, *flags, cpu_flags()]).encode())
    target = cache / f"{stem}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run([compiler, *flags, "-o", str(built), *map(str, sources)], capture_output=True,
                                text=True, timeout=300)
        if result.returncode != 0:
            first = (result.stderr.strip().splitlines() or ["no output"])[0]
            names = ", ".join(source.name for source in sources)
            raise NativeBuildError(f"{compiler} failed on {names}: {first}")
        os.replace(built, target)
    return target
