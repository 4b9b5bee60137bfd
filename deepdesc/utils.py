"""Small shared helpers: atomic writes, verified downloads, device selection, the shared data folder, logging."""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import hashlib
import importlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "atomic_path",
    "check_output_location",
    "download_file",
    "logger",
    "merge_conf",
    "optional_import",
    "resolve_device",
    "sha256_file",
    "shared_dir",
    "thread_pool",
]

logger = logging.getLogger("deepdesc")  # the library logs here; it never prints


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)  # mkstemp creates 0600; give the result the usual permissions
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def check_output_location(output: str | os.PathLike, *inputs: str | os.PathLike, what: str = "output") -> Path:
    """Refuse an ``output`` path that is one of ``inputs``, lies inside one, or contains one.

    Commands that replace their output must never delete what they read; ``ValueError`` names both
    paths. Returns ``output`` resolved.
    """
    out = Path(output).resolve()
    for source in inputs:
        src = Path(source).resolve()
        if out == src or out.is_relative_to(src) or src.is_relative_to(out):
            relation = "is" if out == src else ("is inside" if out.is_relative_to(src) else "contains")
            raise ValueError(
                f"{what} {str(output)!r} {relation} the input {str(source)!r}; choose an {what} folder "
                "apart from the input (the command replaces what it writes there)"
            )
    return out


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is a clear error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(device)!r} is not supported; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but PyTorch sees no CUDA GPU; use device='cpu' or 'auto'")
    return device


def shared_dir() -> Path:
    """The project's shared data folder: ``$DEEPDESC_SHARED``, default ``../shared`` beside the repo."""
    env = os.environ.get("DEEPDESC_SHARED")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, dest: str | os.PathLike, sha256: str | None = None, progress: bool = True) -> Path:
    """Fetch ``url`` (``http(s)://`` or ``file://``) to ``dest`` atomically, checking ``sha256`` (hex).

    Uses :func:`torch.hub.download_url_to_file` (progress bar, digest check). A failed or interrupted
    transfer or a wrong digest leaves nothing at ``dest``; a wrong digest raises ``ValueError``.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        try:
            torch.hub.download_url_to_file(url, str(tmp), hash_prefix=None, progress=progress)
        except RuntimeError as exc:  # torch.hub wraps some transfer errors
            raise OSError(f"{url}: download failed ({exc})") from None
        if sha256 is not None:
            actual = sha256_file(tmp)
            if actual != sha256.lower():
                raise ValueError(f"{url}: SHA-256 mismatch (got {actual}, expected {sha256.lower()}); file discarded")
    return dest


def merge_conf(defaults: dict[str, Any], overrides: dict[str, Any], what: str) -> dict[str, Any]:
    """``defaults`` updated by ``overrides`` (nested dicts merged key by key); unknown keys: ``TypeError``."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise TypeError(f"unknown {what} options {sorted(unknown)}; known: {sorted(defaults)}")
    conf = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if isinstance(conf[key], dict) and isinstance(value, dict):
            conf[key].update(value)
        else:
            conf[key] = value
    return conf


def optional_import(module: str, extra: str, purpose: str) -> Any:
    """Import an optional dependency, or raise ``ImportError`` saying which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{purpose} needs the optional package '{module}': pip install 'deepdesc[{extra}]'") from None


_POOLS: dict[tuple[str, int], tuple[int, concurrent.futures.ThreadPoolExecutor]] = {}
_POOLS_LOCK = threading.Lock()


def thread_pool(
    name: str, workers: int, initializer: Callable[[], None] | None = None
) -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide pool of ``workers`` threads named ``name`` (each thread runs ``initializer`` first), made
    on first use and again in a forked child (whose copy of the parent's pool has no threads)."""
    with _POOLS_LOCK:
        pid, pool = _POOLS.get((name, workers), (None, None))
        if pool is None or pid != os.getpid():
            pool = concurrent.futures.ThreadPoolExecutor(workers, name, initializer=initializer)
            _POOLS[(name, workers)] = (os.getpid(), pool)
        return pool
