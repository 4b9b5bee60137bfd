"""Brown/UBC "Multi-view Stereo Correspondence" (PhotoTour) patches in their original layout.

A set (``liberty``, ``notredame``, ``yosemite``) is a folder with:

* ``patchesNNNN.bmp``: 1024x1024 8-bit grayscale sheets, each 16x16 patches of 64x64 stored
  row-major (left to right, then top to bottom); patch ``i`` is sheet ``i // 256``, row
  ``(i % 256) // 16``, column ``i % 16``. The last sheet is padded with black patches.
* ``info.txt``: one line per patch, ``3D-point-id image-id``.
* ``interest.txt``: one line per patch, ``image-id x y orientation scale`` (floats).
* ``m50_NNNNNN_NNNNNN_0.txt``: match files, one pair a line: ``patchID1 pointID1 unused
  patchID2 pointID2 unused unused``; a pair is positive when the two 3D point ids agree.

:class:`PhotoTour` decodes the sheets once into a uint8 ``.npy`` cache (N, 64, 64), written
atomically, and memory-maps it afterwards. The cache name carries a fingerprint of the sheets'
names, sizes and modification times, so editing or replacing a sheet rebuilds it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import urllib.parse
import urllib.request
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from ..errors import DatasetFormatError
from ..features.image import as_uint8_gray, decode_image
from ..utils import atomic_path, download_file, sha256_file
from .tables import read_table

__all__ = [
    "DatasetFormatError",
    "PhotoTour",
    "decode_sheet",
    "download_phototour",
    "extract_archive",
    "list_sheets",
    "write_info",
    "write_phototour",
]

PATCH_SIZE = 64
SHEET_SIZE = 1024
PATCHES_PER_ROW = SHEET_SIZE // PATCH_SIZE  # 16
PATCHES_PER_SHEET = PATCHES_PER_ROW * PATCHES_PER_ROW  # 256
DEFAULT_PAIRS = "m50_100000_100000_0"
SETS = ("liberty", "notredame", "yosemite")
_SHEET_RE = re.compile(r"^patches(\d+)\.bmp$", re.IGNORECASE)
_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_DEAD_URLS_NOTE = (
    "the historic PhotoTour download links (UBC / Brown, 2007-2011) no longer serve the data; "
    "pass url= pointing to a mirror you trust (http(s):// or file://), or give PhotoTour a local "
    "folder or archive"
)


def list_sheets(folder: str | os.PathLike) -> list[Path]:
    """The ``patchesNNNN.bmp`` sheets of ``folder`` in numeric order; they must be numbered 0..S-1."""
    folder = Path(folder)
    numbered = []
    for entry in folder.iterdir():
        m = _SHEET_RE.match(entry.name)
        if m and entry.is_file():
            numbered.append((int(m.group(1)), entry))
    if not numbered:
        raise DatasetFormatError(f"{folder}: no patchesNNNN.bmp sheets found (expected PhotoTour layout)")
    numbered.sort()
    for expected, (number, path) in enumerate(numbered):
        if number != expected:
            raise DatasetFormatError(
                f"{folder}: sheet number {expected} is missing (found {path.name} after "
                f"{numbered[expected - 1][1].name if expected else 'nothing'}); sheets must be numbered 0..S-1"
            )
    return [path for _, path in numbered]


def decode_sheet(path: str | os.PathLike) -> np.ndarray:
    """Decode one sheet into its 256 patches, row-major. Returns (256, 64, 64) uint8.

    Raises :class:`DatasetFormatError` naming the file when it is truncated, not an image or not
    1024x1024.
    """

    path = Path(path)
    data = path.read_bytes()
    if data[:2] == b"BM" and len(data) >= 6:
        declared = int.from_bytes(data[2:6], "little")
        if declared > len(data):
            raise DatasetFormatError(f"{path}: truncated BMP ({len(data)} bytes, header declares {declared})")
    try:
        img = as_uint8_gray(decode_image(data, path), channel_order="bgr") if data else None
    except ValueError:
        img = None
    if img is None:
        raise DatasetFormatError(f"{path}: cannot decode the image (truncated or not a BMP)")
    if img.shape != (SHEET_SIZE, SHEET_SIZE):
        raise DatasetFormatError(
            f"{path}: sheet is {img.shape[1]}x{img.shape[0]} px, expected {SHEET_SIZE}x{SHEET_SIZE} "
            f"({PATCHES_PER_ROW}x{PATCHES_PER_ROW} patches of {PATCH_SIZE}x{PATCH_SIZE})"
        )
    grid = img.reshape(PATCHES_PER_ROW, PATCH_SIZE, PATCHES_PER_ROW, PATCH_SIZE)
    return np.ascontiguousarray(grid.transpose(0, 2, 1, 3).reshape(PATCHES_PER_SHEET, PATCH_SIZE, PATCH_SIZE))


def _fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        st = p.stat()
        digest.update(f"{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _verify_sha256(path: Path, sha256: str | None) -> None:
    if sha256 is None:
        return
    got = sha256_file(path)
    if got.lower() != sha256.lower():
        raise ValueError(f"{path}: SHA-256 mismatch, expected {sha256.lower()}, got {got}")


def default_cache_dir() -> Path:
    """``$DEEPDESC_CACHE/phototour`` (default ``~/.cache/deepdesc/phototour``)."""
    return Path(os.environ.get("DEEPDESC_CACHE") or Path.home() / ".cache" / "deepdesc") / "phototour"


# --------------------------------------------------------------------------------------------------
# archives
# --------------------------------------------------------------------------------------------------


def _is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES)


def _safe_member_path(root: Path, name: str, archive: Path) -> Path:
    """Where archive member ``name`` goes under ``root``; rejects absolute paths and ``..``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or re.match(r"^[A-Za-z]:", name):
        raise DatasetFormatError(f"{archive}: unsafe member path {name!r} (absolute or outside the archive)")
    target = (root / Path(*[p for p in pure.parts if p not in ("", ".")])).resolve()
    if target != root.resolve() and root.resolve() not in target.parents:
        raise DatasetFormatError(f"{archive}: unsafe member path {name!r} (escapes the extraction folder)")
    return target


def _extract_into(archive: Path, dest: Path) -> None:
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                target = _safe_member_path(dest, info.filename, archive)
                mode = info.external_attr >> 16
                if mode and (mode & 0o170000) == 0o120000:
                    raise DatasetFormatError(f"{archive}: member {info.filename!r} is a symbolic link; refusing")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        return
    with tarfile.open(archive, "r:*") as tf:
        members = tf.getmembers()
        for member in members:  # our own checks first: their errors name the archive and the member
            _safe_member_path(dest, member.name, archive)
            if not (member.isdir() or member.isfile()):
                raise DatasetFormatError(f"{archive}: member {member.name!r} is a link or special file; refusing")
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: the standard library's safe extraction as well
            tf.extractall(dest, members=members, filter="data")
            return
        for member in members:
            target = _safe_member_path(dest, member.name, archive)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            assert src is not None
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike, sha256: str | None = None) -> Path:
    """Safely extract a .zip/.tar(.gz/.bz2/.xz) into ``dest`` (created atomically; reused when present).

    Members with absolute paths, ``..`` components, links or device files are rejected with
    :class:`DatasetFormatError`. ``sha256`` (hex) is checked before extracting. An existing
    ``dest`` not made by this function (no ``.extracted`` marker) is never overwritten: a non-empty
    one raises ``FileExistsError``. Returns ``dest``.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive not found: {archive}")
    _verify_sha256(archive, sha256)
    if (dest / ".extracted").exists():
        return dest
    if dest.exists():
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        else:
            raise FileExistsError(
                f"{dest} exists and was not made by extract_archive; remove it or pick another folder"
            )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _extract_into(archive, tmp)
        (tmp / ".extracted").write_text(archive.name + "\n")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not (dest / ".extracted").exists():  # not a concurrent extraction that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _find_set_folder(root: Path, max_depth: int = 3) -> Path:
    """The folder under ``root`` (itself or below) holding ``patches0000.bmp``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth >= max_depth:
            dirnames[:] = []
        if any(_SHEET_RE.match(f) and int(_SHEET_RE.match(f).group(1)) == 0 for f in filenames):
            found.append(Path(dirpath))
    if not found:
        raise DatasetFormatError(f"{root}: no folder with patches0000.bmp found")
    if len(found) > 1:
        names = ", ".join(str(f.relative_to(root)) for f in sorted(found))
        raise DatasetFormatError(f"{root}: several PhotoTour sets found ({names}); pass one folder")
    return found[0]


# --------------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------------


class PhotoTour:
    """One PhotoTour set. ``patches`` (N, 64, 64) uint8 memmap; ``dataset[i]`` is patch ``i``.

    ``root``: the set's folder, or a .zip/.tar.gz archive of it (extracted safely into the cache;
    ``sha256`` is then checked first). ``cache_dir``: where the decoded ``.npy`` (and extracted
    archives) live; default :func:`default_cache_dir`. N is the number of lines of ``info.txt``
    when present, else 256 x sheets minus the black padding patches that end the last sheet.
    ``point_ids`` / ``image_ids`` (N,) int64 come from ``info.txt`` (``None`` without it).
    ``info``: ``None`` reads ``root/info.txt`` when present; a path reads that file instead (e.g. one written by
    ``deepdesc phototour-groups --output`` for a read-only set); ``False`` ignores any info file (unlabelled).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        sha256: str | None = None,
        info: str | os.PathLike | bool | None = None,
    ):
        root = Path(root)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.archive: Path | None = None
        if _is_archive(root):
            self.archive = root
            stem = re.sub(r"(\.tar)?\.[^.]+$", "", root.name)
            st = root.stat()
            key = hashlib.sha256(f"{root.resolve()}\t{st.st_size}\t{st.st_mtime_ns}".encode()).hexdigest()[:12]
            extracted = extract_archive(root, self.cache_dir / "extracted" / f"{stem}-{key}", sha256=sha256)
            root = _find_set_folder(extracted)
        elif sha256 is not None:
            raise ValueError("sha256 checks an archive; root is a folder (pass the archive, or no digest)")
        if not root.is_dir():
            raise FileNotFoundError(f"PhotoTour folder not found: {root}")
        self.root = root
        self.name = root.name
        self.sheets = list_sheets(root)
        self.point_ids: np.ndarray | None = None
        self.image_ids: np.ndarray | None = None
        if info is True:
            raise ValueError("info: pass None (root/info.txt when present), a path, or False (no labels)")
        if info not in (None, False) and not Path(info).is_file():
            raise FileNotFoundError(f"info file not found: {info}")
        info = root / "info.txt" if info is None else None if info is False else Path(info)
        capacity = len(self.sheets) * PATCHES_PER_SHEET
        if info is not None and info.exists():
            table = read_table(info, 2, np.int64)
            if not (capacity - PATCHES_PER_SHEET < len(table) <= capacity):
                raise DatasetFormatError(
                    f"{info}: lists {len(table)} patches but the {len(self.sheets)} sheets in {root} hold "
                    f"{capacity - PATCHES_PER_SHEET + 1}..{capacity}"
                )
            self.point_ids = table[:, 0].copy()
            self.image_ids = table[:, 1].copy()
        self.cache_path = self._cache_file()
        self._patches: np.ndarray | None = None
        all_patches = self._open_cache()
        if self.point_ids is not None:
            self._length = len(self.point_ids)
        else:
            last = np.asarray(all_patches[capacity - PATCHES_PER_SHEET :]).reshape(PATCHES_PER_SHEET, -1)
            nonblank = np.flatnonzero(last.any(axis=1))
            self._length = capacity - PATCHES_PER_SHEET + (int(nonblank[-1]) + 1 if nonblank.size else 0)
        self._interest: np.ndarray | None = None

    # -- cache -------------------------------------------------------------------------------------

    def _cache_file(self) -> Path:
        where = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
        return self.cache_dir / f"{self.name}-{where}-{_fingerprint(self.sheets)[:16]}.npy"

    def _open_cache(self) -> np.ndarray:
        shape = (len(self.sheets) * PATCHES_PER_SHEET, PATCH_SIZE, PATCH_SIZE)
        if self.cache_path.exists():
            try:
                arr = np.load(self.cache_path, mmap_mode="r")
                if arr.shape == shape and arr.dtype == np.uint8:
                    self._patches = arr
                    return arr
            except (ValueError, OSError):
                pass
            warnings.warn(f"rebuilding the unreadable PhotoTour cache {self.cache_path}", stacklevel=3)
        self._build_cache(shape)
        self._patches = np.load(self.cache_path, mmap_mode="r")
        return self._patches

    def _build_cache(self, shape: tuple[int, int, int]) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.cache_path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            for k, sheet in enumerate(self.sheets):
                out[k * PATCHES_PER_SHEET : (k + 1) * PATCHES_PER_SHEET] = decode_sheet(sheet)
            out.flush()
            del out
        prefix = self.cache_path.name.rsplit("-", 1)[0] + "-"
        for stale in self.cache_path.parent.glob(f"{prefix}*.npy"):
            if stale != self.cache_path:
                stale.unlink(missing_ok=True)

    # -- access ------------------------------------------------------------------------------------

    @property
    def patches(self) -> np.ndarray:
        """(N, 64, 64) uint8, memory-mapped from the cache."""
        if self._patches is None:  # after unpickling
            self._patches = np.load(self.cache_path, mmap_mode="r")
        return self._patches[: self._length]

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: Any) -> np.ndarray:
        """Patch ``index`` (64, 64) uint8, or (K, 64, 64) for slices and index arrays."""
        if isinstance(index, (int, np.integer)):
            if not -self._length <= int(index) < self._length:
                raise IndexError(f"patch index {index} out of range for {self._length} patches")
        return np.asarray(self.patches[index])

    def __getstate__(self) -> dict[str, Any]:
        # keep pickles (e.g. DataLoader workers) small: reopen the memmap lazily
        state = self.__dict__.copy()
        state["_patches"] = None
        return state

    def __repr__(self) -> str:
        return f"PhotoTour({str(self.root)!r}, {self._length} patches)"

    @property
    def interest(self) -> np.ndarray | None:
        """``interest.txt`` as (N, C) float64 (image id, x, y, orientation, scale), or ``None``."""
        path = self.root / "interest.txt"
        if self._interest is None and path.exists():
            table = read_table(path, None, np.float64, min_cols=3)
            if len(table) != self._length:
                raise DatasetFormatError(f"{path}: has {len(table)} lines for {self._length} patches")
            self._interest = table
        return self._interest

    def match_files(self) -> list[str]:
        """Names (without .txt) of the ``m50_*.txt`` match files of the set."""
        return sorted(p.stem for p in self.root.glob("m50_*.txt"))

    def default_match_file(self) -> str:
        """The match file benchmarks read when none is named: the standard ``m50_100000_100000_0`` if the
        set has it, else the set's only ``m50_*`` file (e.g. the one ``deepdesc make-patches`` writes);
        ``FileNotFoundError`` naming the files when that is ambiguous or there is none."""
        files = self.match_files()
        if DEFAULT_PAIRS in files or not files:
            return DEFAULT_PAIRS  # absent: pairs() names the missing file and what is there
        if len(files) == 1:
            return files[0]
        raise FileNotFoundError(
            f"{self.root} has no {DEFAULT_PAIRS}.txt and several match files ({', '.join(files)}); name one"
        )

    def pairs(self, name_or_path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs of a match file. Returns (ids1 (M,) int64, ids2 (M,) int64, labels (M,) bool).

        ``name_or_path``: a file path, or a name in the set folder with or without ``.txt``
        (e.g. ``m50_100000_100000_0``); None: :meth:`default_match_file`. ``labels`` is True when the
        two 3D point ids agree.
        """
        if name_or_path is None:
            name_or_path = self.default_match_file()
        path = Path(name_or_path)
        if not path.is_file():
            name = str(name_or_path)
            path = self.root / (name if name.endswith(".txt") else name + ".txt")
        if not path.is_file():
            available = ", ".join(self.match_files()) or "none"
            raise FileNotFoundError(f"match file {name_or_path!r} not found in {self.root} (available: {available})")
        table = read_table(path, 7, np.int64)
        ids1, pt1, ids2, pt2 = table[:, 0], table[:, 1], table[:, 3], table[:, 4]
        bad = np.flatnonzero((ids1 < 0) | (ids1 >= self._length) | (ids2 < 0) | (ids2 >= self._length))
        if bad.size:
            row = table[bad[0]]
            raise DatasetFormatError(
                f"{path}, line {bad[0] + 1}: patch id {row[0] if not 0 <= row[0] < self._length else row[3]} "
                f"is outside the {self._length} patches of {self.root}"
            )
        if self.point_ids is not None:
            off = np.flatnonzero((self.point_ids[ids1] != pt1) | (self.point_ids[ids2] != pt2))
            if off.size:
                warnings.warn(
                    f"{path}, line {off[0] + 1}: 3D point ids disagree with info.txt of {self.root} "
                    f"({off.size} pairs); is this match file from another set?",
                    stacklevel=2,
                )
        return ids1.copy(), ids2.copy(), pt1 == pt2


# --------------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------------


def download_phototour(
    name: str,
    dest: str | os.PathLike,
    url: str | None = None,
    sha256: str | None = None,
    extract: bool = True,
) -> Path:
    """Download a PhotoTour archive (``url`` may be ``file://``) into ``dest``; return its folder.

    The historic links are dead, so ``url`` is required. The archive is written atomically and
    checked against ``sha256`` when given; an archive already in ``dest`` (matching ``sha256``
    when given) is reused without downloading. With ``extract`` (default) it is safely extracted into
    ``dest/name`` and the folder holding the sheets is returned (pass it to :class:`PhotoTour`);
    otherwise the archive path is returned.
    """
    if url is None:
        raise ValueError(f"download_phototour({name!r}): no url given: {_DEAD_URLS_NOTE}")
    dest = Path(dest)
    filename = Path(urllib.parse.urlparse(url).path).name
    if not filename.lower().endswith(_ARCHIVE_SUFFIXES):
        filename = f"{name}.zip"
    archive = dest / filename
    if not (archive.exists() and (sha256 is None or sha256_file(archive) == sha256.lower())):
        download_file(url, archive, sha256, progress=False)
    if not extract:
        return archive
    return _find_set_folder(extract_archive(archive, dest / name))


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def _write_text_atomic(path: Path, lines: list[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))


def write_info(
    path: str | os.PathLike,
    point_ids: Any,
    image_ids: Any = None,
    overwrite: bool = False,
    link_sheets: list[Path] | None = None,
) -> Path:
    """Write an ``info.txt`` (one ``3D-point-id image-id`` line per patch) atomically; return its path.

    ``image_ids`` ``None``: -1 (unknown) on every line. An existing file is refused (``FileExistsError``) unless
    ``overwrite``. ``link_sheets``: sheets to link (symbolic links) beside the file, so its folder is a complete
    PhotoTour set; an existing sheet of that name must already be that sheet.
    """
    path = Path(path)
    point_ids = np.asarray(point_ids, dtype=np.int64).reshape(-1)
    image_ids = np.full(len(point_ids), -1, np.int64) if image_ids is None else np.asarray(image_ids, np.int64)
    if image_ids.shape != point_ids.shape:
        raise ValueError(f"{len(point_ids)} point ids but {image_ids.size} image ids")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    for sheet in link_sheets or []:
        target, link = Path(sheet).resolve(), path.parent / Path(sheet).name
        if link.is_symlink() or link.exists():
            if link.resolve() != target:
                raise FileExistsError(f"{link} exists and is not a link to {target}; pick an empty folder")
            continue
        link.symlink_to(target)
    _write_text_atomic(path, [f"{p} {i}\n" for p, i in zip(point_ids.tolist(), image_ids.tolist())])
    return path


def write_phototour(
    folder: str | os.PathLike,
    patches: Any,
    point_ids: Any,
    image_ids: Any,
    interest: Any = None,
    pairs: dict[str, Any] | None = None,
) -> Path:
    """Write a labelled set in the PhotoTour layout :class:`PhotoTour` reads (module docs); return ``folder``.

    ``patches`` (N, 64, 64) uint8 (floats are rounded and clipped to 0..255); ``point_ids``, ``image_ids`` (N,)
    integers -> ``info.txt``; ``interest`` (N, 4) ``x y orientation scale`` -> ``interest.txt`` as
    ``image-id x y orientation scale`` (units are the caller's; record them beside the set); ``pairs``: match-file
    name (e.g. ``m50_1000_1000_0``) -> (M, 2) patch indices, or (M, 3) with a flag written in the last (unused)
    column, each line ``patchID1 pointID1 0 patchID2 pointID2 0 flag``. The sheets are ``patchesNNNN.bmp``, the
    last padded with black patches. Each file is written atomically; ``folder`` is created and must not already
    hold sheets (``FileExistsError``).
    """
    folder = Path(folder)
    arr = np.asarray(patches)
    if arr.ndim != 3 or arr.shape[1:] != (PATCH_SIZE, PATCH_SIZE):
        raise ValueError(f"patches must be (N, {PATCH_SIZE}, {PATCH_SIZE}), got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(arr.astype(np.float64)), 0, 255).astype(np.uint8)
    n = len(arr)
    if n == 0:
        raise ValueError("write_phototour: no patches to write")
    point_ids = np.asarray(point_ids, dtype=np.int64).reshape(-1)
    image_ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    if len(point_ids) != n or len(image_ids) != n:
        raise ValueError(f"{n} patches but {len(point_ids)} point ids and {len(image_ids)} image ids")
    folder.mkdir(parents=True, exist_ok=True)
    if any(_SHEET_RE.match(p.name) for p in folder.iterdir()):
        raise FileExistsError(f"{folder} already holds patch sheets; write into a new folder")
    n_sheets = -(-n // PATCHES_PER_SHEET)
    for k in range(n_sheets):
        block = np.zeros((PATCHES_PER_SHEET, PATCH_SIZE, PATCH_SIZE), np.uint8)
        part = arr[k * PATCHES_PER_SHEET : (k + 1) * PATCHES_PER_SHEET]
        block[: len(part)] = part
        grid = block.reshape(PATCHES_PER_ROW, PATCHES_PER_ROW, PATCH_SIZE, PATCH_SIZE).transpose(0, 2, 1, 3)
        ok, data = cv2.imencode(".bmp", np.ascontiguousarray(grid.reshape(SHEET_SIZE, SHEET_SIZE)))
        if not ok:
            raise OSError(f"cannot encode sheet {k} as BMP")
        with atomic_path(folder / f"patches{k:04d}.bmp") as tmp:
            tmp.write_bytes(data.tobytes())
    _write_text_atomic(folder / "info.txt", [f"{p} {i}\n" for p, i in zip(point_ids.tolist(), image_ids.tolist())])
    if interest is not None:
        table = np.asarray(interest, dtype=np.float64)
        if table.shape != (n, 4):
            raise ValueError(f"interest must be (N, 4) x y orientation scale, got {table.shape} for {n} patches")
        rows = [f"{i} {x:.3f} {y:.3f} {o:.6f} {s:.4f}\n" for i, (x, y, o, s) in zip(image_ids.tolist(), table.tolist())]
        _write_text_atomic(folder / "interest.txt", rows)
    for name, table in (pairs or {}).items():
        if not re.fullmatch(r"m50_[\w.-]+", name):
            raise ValueError(f"match file names start with m50_ (e.g. m50_1000_1000_0), got {name!r}")
        table = np.asarray(table, dtype=np.int64)
        if table.ndim != 2 or table.shape[1] not in (2, 3):
            raise ValueError(f"pairs {name!r} must be (M, 2) or (M, 3), got {table.shape}")
        if table.size and (table[:, :2].min() < 0 or table[:, :2].max() >= n):
            raise ValueError(f"pairs {name!r} refer to patches outside 0..{n - 1}")
        flags = table[:, 2] if table.shape[1] == 3 else np.zeros(len(table), np.int64)
        a, b = table[:, 0], table[:, 1]
        rows = [
            f"{p} {q} 0 {r} {s} 0 {f}\n"
            for p, q, r, s, f in zip(
                a.tolist(), point_ids[a].tolist(), b.tolist(), point_ids[b].tolist(), flags.tolist()
            )
        ]
        _write_text_atomic(folder / f"{name}.txt", rows)
    return folder
