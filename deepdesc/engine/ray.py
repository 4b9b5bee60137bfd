"""The Ray engine: actors that load the model once each, one unit of work per task, a resumable driver.

:func:`run_extract` and :func:`run_match` are what ``extract.main(..., engine="ray")`` and
``match.main(..., engine="ray")`` run. The driver

1. checks the output and the recorded settings exactly as the local engine does (it runs the local job on no
   input to learn the settings that job records), before anything is computed;
2. lists the work (images not yet in the output, or pairs not yet matched) and splits it into deterministic
   units (:mod:`.units`); units whose shard is already complete (a resumed job) are taken as they are;
3. starts ``workers`` actors and keeps two units in flight per actor. Each actor runs the local job on its
   unit into a shard (:mod:`.shards`); Ray restarts a killed actor and retries its unit, which rewrites the
   same shard. Each finished unit is appended to the manifest;
4. merges the shards into a verified temporary copy of the output, renames it into place and deletes the job
   folder.

The driver never holds descriptors: units carry names and paths, results carry names. Ray is imported only
here, when this engine runs (``pip install "deepdesc[ray]"``).

Test hooks (environment of the workers; the driver passes every ``DEEPDESC_*`` variable on to its actors):
``DEEPDESC_ENGINE_TEST_DELAY`` (seconds to wait before each unit) and ``DEEPDESC_ENGINE_TEST_CRASH`` (a file
path: the first worker to find it absent creates it and exits in the middle of its unit).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import torch
from tqdm.auto import tqdm

from ..features.image import list_images
from ..io import h5
from ..utils import logger, optional_import
from . import ENGINES
from .shards import check_shard, merge, seal_shard
from .units import JobDir, items_digest, make_units

__all__ = ["DEFAULT_UNIT_SIZE", "ENGINE_OPTIONS", "run_extract", "run_match", "use_engine"]

#: Keyword options of the jobs' ``main`` that only the Ray engine takes.
ENGINE_OPTIONS = ("workers", "gpus_per_worker", "cpus_per_worker", "address", "unit_size")

#: Images (describe) or pairs (match) per unit: what a resumed job redoes at most per unit in flight.
DEFAULT_UNIT_SIZE = {"features": 32, "matches": 512}
IN_FLIGHT_PER_WORKER = 2  # one unit running, one queued: the actor never waits for the driver
MAX_RESTARTS = 3  # a worker killed more often than this fails the job (rerun resumes it)
_SKIP_TEMPLATE = "skipped %s: %s"  # the local engine's warning for an unreadable image


def _import_ray() -> Any:
    return optional_import("ray", "ray", "--engine ray")


def _test_hook(point: str) -> None:
    if point == "start":
        delay = float(os.environ.get("DEEPDESC_ENGINE_TEST_DELAY") or 0)
        if delay:
            time.sleep(delay)
    elif point == "mid" and os.environ.get("DEEPDESC_ENGINE_TEST_CRASH"):
        try:
            fd = os.open(os.environ["DEEPDESC_ENGINE_TEST_CRASH"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


class _Capture(logging.Handler):
    """Keeps the library's warnings of one unit for the driver to log (the worker's own log is not shown)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((str(record.msg), record.getMessage()))


class UnitWorker:
    """One Ray actor: builds the extractor once, then runs the local job on one unit per call."""

    def __init__(
        self,
        kind: str,
        local_main: Callable[..., Any],
        make_extractor: Callable[[Any], Any] | None,
        conf: Any,
        options: dict[str, Any],
        threads: int,
    ) -> None:
        torch.set_num_threads(threads)  # the actor's CPU share, for the network and OpenCV (detection, patches)
        cv2.setNumThreads(threads)
        self.kind, self.local_main, self.conf, self.options = kind, local_main, conf, options
        self.capture = _Capture()
        logger.addHandler(self.capture)
        logger.propagate = False
        logger.setLevel(logging.WARNING)
        self.extractor = make_extractor(conf) if make_extractor is not None else None

    def ready(self) -> int:
        return os.getpid()

    def run(self, unit: int, items: list[Any], digest: str, output: str) -> dict[str, Any]:
        """Write unit ``unit`` (``items``: [name, path] or [name0, name1]) of the job writing ``output`` into its
        shard; returns the shard's identity."""
        _test_hook("start")
        job = JobDir(output)
        shard = job.shard(unit)
        tmp = shard.with_name(f".{shard.name}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        self.capture.records = []
        try:
            if self.kind == "features":
                stage = job.stage(unit)
                shutil.rmtree(stage, ignore_errors=True)
                for name, path in items:  # names exactly as the driver listed them
                    link = stage / name
                    link.parent.mkdir(parents=True, exist_ok=True)
                    os.symlink(path, link)
                summary = self.local_main(self.conf, [stage], tmp, extractor=self.extractor, **self.options)
                shutil.rmtree(stage, ignore_errors=True)
                paths = dict(items)
                entries = list(summary.described)  # reasons name the image's own path, not the link
                skipped = {n: r.replace(str(stage / n), paths[n]) for n, r in summary.skipped.items()}
            else:
                pairs = [(a, b) for a, b in items]
                self.local_main(self.conf, pairs, self.options["features_path"], tmp, progress=False)
                entries, skipped = [h5.names_to_pair(a, b) for a, b in pairs], {}
        except (ValueError, OSError, KeyError) as exc:  # strict mode, unreadable features: the job stops
            tmp.unlink(missing_ok=True)
            return {"unit": unit, "error": f"{exc.__class__.__name__}: {exc}"}
        _test_hook("mid")
        info = {"unit": unit, "items_sha256": digest, "entries": entries, "skipped": skipped}
        seal_shard(tmp, shard, info)
        warnings = [r for r in self.capture.records if r[0] != _SKIP_TEMPLATE]
        return {**info, "pid": os.getpid(), "warnings": warnings}


@contextlib.contextmanager
def _cluster(address: str | None) -> Iterator[Any]:
    """Ray, connected: this process's connection if any, else ``address`` or a new local cluster (stopped after)."""
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _worker_count(ray: Any, workers: int | None, cpus: float, gpus: float, units: int) -> int:
    """Workers to start: ``workers`` (default: as many as fit) capped by what the cluster can hold at once (more
    would wait forever for resources) and by the number of units."""
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    resources = ray.cluster_resources()
    have = resources.get("GPU", 0) if gpus else resources.get("CPU", 0)
    fit = int(math.floor(have / (gpus or cpus) + 1e-9))
    if fit < 1:
        what = f"{gpus:g} GPU(s)" if gpus else f"{cpus:g} CPU(s)"
        raise RuntimeError(
            f"the Ray cluster ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs) "
            f"cannot hold one worker of {what}"
        )
    if workers is not None and workers > fit:
        logger.warning("the Ray cluster holds %d workers of this size at once, not %d: starting %d", fit, workers, fit)
    return max(1, min(workers or fit, fit, units))


def _check_options(kind: str, unit_size: int | None, cpus: float, gpus: float) -> int:
    """Check the engine's options and that Ray is installed, before any work; returns the unit size to use."""
    if cpus <= 0:
        raise ValueError(f"cpus_per_worker must be positive, got {cpus}")
    if gpus < 0:
        raise ValueError(f"gpus_per_worker must be 0 or positive, got {gpus}")
    unit_size = unit_size or DEFAULT_UNIT_SIZE[kind]
    make_units([], unit_size)  # checks unit_size
    _import_ray()  # a missing Ray is reported before any work
    return unit_size


def _run_units(
    kind: str,
    job: JobDir,
    units: list[list[Any]],
    digests: list[str],
    pending: list[int],
    worker_args: tuple,
    on_result: Callable[[dict[str, Any]], None],
    *,
    workers: int | None,
    cpus: float,
    gpus: float,
    address: str | None,
) -> None:
    """Run the ``pending`` units on Ray actors; ``on_result`` gets each finished unit's identity."""
    with _cluster(address) as ray:
        count = _worker_count(ray, workers, cpus, gpus, len(pending))
        env = {k: v for k, v in os.environ.items() if k.startswith("DEEPDESC_")}
        options: dict[str, Any] = {
            "num_cpus": cpus,
            "num_gpus": gpus,
            "max_restarts": MAX_RESTARTS,
            "max_task_retries": MAX_RESTARTS,
        }
        if env:
            options["runtime_env"] = {"env_vars": env}
        remote = ray.remote(UnitWorker).options(**options)
        actors = [remote.remote(*worker_args) for _ in range(count)]
        queue = collections.deque(pending)
        in_flight: dict[Any, tuple[int, int]] = {}  # task -> (unit, actor)
        load = [0] * count
        try:
            while queue or in_flight:
                for a in range(count):
                    while queue and load[a] < IN_FLIGHT_PER_WORKER:
                        unit = queue.popleft()
                        ref = actors[a].run.remote(unit, units[unit], digests[unit], str(job.output))
                        in_flight[ref] = (unit, a)
                        load[a] += 1
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    unit, a = in_flight.pop(ref)
                    load[a] -= 1
                    try:
                        result = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        raise RuntimeError(
                            f"unit {unit} failed on a Ray worker ({exc.__class__.__name__}: {str(exc)[:500]}); "
                            "finished units are kept: run the same command again to resume"
                        ) from None
                    if "error" in result:
                        raise ValueError(result["error"])
                    on_result(result)
        finally:
            for ref in in_flight:  # after an error: drop the queued units rather than have Ray retry them
                with contextlib.suppress(Exception):
                    ray.cancel(ref)
            for actor in actors:
                ray.kill(actor)


def _collect(
    kind: str, job: JobDir, digests: list[str], settings: dict[str, Any], run: str
) -> dict[int, dict[str, Any]]:
    """Units whose shard is complete (recorded in the manifest, or finished but not recorded: adopted)."""
    records = job.records()
    done: dict[int, dict[str, Any]] = {}
    for unit, digest in enumerate(digests):
        info = check_shard(job.shard(unit), kind, unit, digest, settings)
        if info is None:
            if unit in records:
                logger.warning("unit %d: its shard is missing or damaged; computing it again", unit)
            continue
        done[unit] = info
        if unit not in records:
            job.record({"unit": unit, "run": run, "entries": len(info["entries"]), "adopted": True})
    return done


def _check_written(job: JobDir, kind: str, unit: int, digest: str, settings: dict[str, Any]) -> None:
    """A unit reported done must have its shard where the driver looks for it."""
    if check_shard(job.shard(unit), kind, unit, digest, settings) is None:
        raise RuntimeError(
            f"unit {unit}: the worker reported it done but {job.shard(unit)} is missing or incomplete; on a "
            "cluster of several machines the output's folder must be on a file system every worker shares"
        )


def _probe_settings(call: Callable[[Path], Any], output: Path) -> tuple[dict[str, Any], Any]:
    """Run the local job on no input into a scratch file: the settings it records, and what it returned."""
    level = logger.level
    logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))  # its "0 images" line is no news
    try:
        with tempfile.TemporaryDirectory(prefix=".deepdesc-probe-", dir=output.parent) as scratch:
            probe = Path(scratch) / "probe.h5"
            returned = call(probe)
            settings = h5.read_settings(probe) or {}
    finally:
        logger.setLevel(level)
    return settings, returned


def _log_warnings(result: dict[str, Any], seen: set[str]) -> None:
    for name, reason in result.get("skipped", {}).items():
        logger.warning(_SKIP_TEMPLATE, name, reason)
    for template, message in result.get("warnings", []):
        if template not in seen:  # once per job, as the local engine warns once per run
            seen.add(template)
            logger.warning("%s", message)


def _run_job(
    kind: str,
    job: JobDir,
    todo: list[Any],
    unit_size: int,
    settings: dict[str, Any],
    worker_args: tuple,
    *,
    desc: str,
    bar_unit: str,
    progress: bool,
    workers: int | None,
    cpus: float,
    gpus: float,
    address: str | None,
) -> tuple[list[list[Any]], dict[int, dict[str, Any]]]:
    """Split ``todo`` into units, open ``job``, take the units already done and run the others on Ray
    (``worker_args``: :class:`UnitWorker`'s after ``kind``), recording each and logging its warnings, under a
    progress bar. Returns the units and the identity of each (all done)."""
    units = make_units(todo, unit_size)
    digests = [items_digest(u) for u in units]
    run = uuid.uuid4().hex[:12]
    job.open({"kind": kind, "settings": settings, "unit_size": unit_size, "items_sha256": items_digest(todo)})
    done = _collect(kind, job, digests, settings, run)
    seen: set[str] = set()
    bar = tqdm(total=len(todo), desc=desc, unit=bar_unit, disable=not progress)
    for unit in sorted(done):
        _log_warnings(done[unit], seen)  # its skipped images (a match unit skips none)
        bar.update(len(units[unit]))

    def finished(result: dict[str, Any]) -> None:
        unit = result["unit"]
        _check_written(job, kind, unit, digests[unit], settings)
        job.record({"unit": unit, "run": run, "entries": len(result["entries"]), "pid": result["pid"]})
        done[unit] = result
        _log_warnings(result, seen)
        bar.update(len(units[unit]))

    pending = [u for u in range(len(units)) if u not in done]
    try:
        if pending:
            _run_units(
                kind, job, units, digests, pending, (kind, *worker_args), finished,
                workers=workers, cpus=cpus, gpus=gpus, address=address,
            )  # fmt: skip
    finally:
        bar.close()
    return units, done


def use_engine(engine: str, options: dict[str, Any]) -> bool:
    """Whether a job runs on Ray (``engine="ray"``) rather than in this process; checks the engine's options."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    unknown = set(options) - set(ENGINE_OPTIONS)
    if unknown:
        raise TypeError(f"unknown engine options {sorted(unknown)}; known: {', '.join(ENGINE_OPTIONS)}")
    if engine == "local" and options:
        raise ValueError(f"{', '.join(sorted(options))}: options of engine='ray', not of the local engine")
    return engine == "ray"


def run_extract(
    local_main: Callable[..., Any],
    make_extractor: Callable[[Any], Any],
    plan: Callable[..., tuple[list[tuple[str, Path]], list[str], dict[str, str]]],
    conf: dict[str, Any] | str,
    images: str | os.PathLike | Sequence[str | os.PathLike],
    features_path: str | os.PathLike,
    overwrite: bool = False,
    as_half: bool = False,
    strict: bool = False,
    progress: bool = True,
    extractor: Any = None,
    workers: int | None = None,
    gpus_per_worker: float = 0,
    cpus_per_worker: float = 1,
    address: str | None = None,
    unit_size: int | None = None,
) -> Any:
    """``extract.main`` on Ray (see the module docstring): ``local_main``, ``make_extractor`` and ``plan`` are the
    local job's; returns its summary type."""
    if extractor is not None:
        raise ValueError("engine='ray' builds one extractor per worker from conf; do not pass extractor=")
    unit_size = _check_options("features", unit_size, cpus_per_worker, gpus_per_worker)
    features_path = Path(features_path).absolute()
    h5.clean_temp_files(features_path)  # e.g. the temporary file of a killed merge
    h5.check_writable(features_path)
    found = list_images([images] if isinstance(images, (str, os.PathLike)) else images)
    probe_conf = conf
    if isinstance(conf, dict) and conf.get("extractor", "deepdesc") == "deepdesc":
        probe_conf = {**conf, "device": "cpu"}  # the driver needs no GPU; the device is not a recorded setting
    settings, summary = _probe_settings(
        lambda p: local_main(probe_conf, [], p, as_half=as_half, progress=False), features_path
    )
    h5.check_settings(features_path, settings, overwrite=overwrite)  # refuses other settings, as the local engine
    summary.features_path = features_path
    todo_paths, summary.existing, summary.recomputed = plan(found, features_path, overwrite)
    todo = [(n, str(Path(p).absolute())) for n, p in todo_paths]
    logger.info("%d images, %d already in %s", len(found), len(summary.existing), features_path)
    if summary.recomputed:
        logger.warning(
            "%d image(s) in %s come from another file than before; describing them again",
            len(summary.recomputed), features_path,
        )  # fmt: skip
    job = JobDir(features_path)
    if not todo:
        job.remove()
        return summary
    threads = max(1, round(cpus_per_worker))
    options = {"as_half": as_half, "strict": strict, "progress": False}
    worker_args = (local_main, make_extractor, conf, options, threads)
    units, done = _run_job(
        "features", job, todo, unit_size, settings, worker_args,
        desc="extract", bar_unit="img", progress=progress,
        workers=workers, cpus=cpus_per_worker, gpus=gpus_per_worker, address=address,
    )  # fmt: skip
    described = {n for u in done.values() for n in u["entries"]}
    skipped = {n: r for u in done.values() for n, r in u["skipped"].items()}
    summary.described = [n for n, _ in todo if n in described]
    summary.skipped = {n: skipped[n] for n, _ in todo if n in skipped}
    stale = [n for n in summary.skipped if n in summary.recomputed]  # their old group describes another file
    expected = (set(h5.list_images(features_path)) - set(stale)) | described
    shards = [job.shard(u) for u in range(len(units))]
    merge("features", features_path, shards, settings, sorted(expected), remove=stale)
    if stale:
        logger.warning("removed the features of %s from %s: described from another file", stale, features_path)
    job.remove()
    return summary


def _pair_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with h5.open_h5(path, "r") as fd:
        return set(h5.complete_groups(fd, "matches0"))


def run_match(
    local_main: Callable[..., Any],
    conf: dict[str, Any],
    pairs: Sequence[tuple[str, str]],
    features_path: str | os.PathLike,
    matches_path: str | os.PathLike,
    settings: dict[str, Any],
    records: dict[str, dict[str, Any]],
    overwrite: bool = False,
    progress: bool = True,
    workers: int | None = None,
    gpus_per_worker: float = 0,
    cpus_per_worker: float = 1,
    address: str | None = None,
    unit_size: int | None = None,
) -> Path:
    """``match.main`` on Ray (see the module docstring), called by it with the checked conf and ``pairs`` (each
    once), the ``settings`` to record and the features file's image ``records``."""
    unit_size = _check_options("matches", unit_size, cpus_per_worker, gpus_per_worker)
    features_path, matches_path = Path(features_path).absolute(), Path(matches_path).absolute()
    h5.check_settings(matches_path, settings, overwrite=overwrite)
    todo = h5.pairs_to_match(matches_path, pairs, records, overwrite)  # what the local engine matches
    job = JobDir(matches_path)
    if not todo:
        job.remove()
        return matches_path
    in_file = _pair_keys(matches_path)
    worker_args = (local_main, None, conf, {"features_path": str(features_path)}, 1)
    units, _ = _run_job(
        "matches", job, todo, unit_size, settings, worker_args,
        desc="match", bar_unit="pair", progress=progress,
        workers=workers, cpus=cpus_per_worker, gpus=gpus_per_worker, address=address,
    )  # fmt: skip
    kept = in_file - {k for a, b in todo for k in (h5.names_to_pair(a, b), h5.names_to_pair(b, a))}
    expected = [tuple(k.split("/")) for k in sorted(kept)] + todo
    merge("matches", matches_path, [job.shard(u) for u in range(len(units))], settings, expected)  # type: ignore[arg-type]
    job.remove()
    return matches_path
