"""Training configs: the presets, reading TOML/YAML files and ``--set`` overrides, merging, and validation.

A config file names a ``preset`` and overrides its tables key by key (every table merges, ``[model]`` and
``[data.augment]`` included)::

    preset = "paper"            # or "hardnet"
    [run]
    steps = 20000
    out_dir = "runs/paper"

``[model] arch`` picks the network: ``"cnn3"`` (default, the paper's; :data:`deepdesc.nn.cnn3.default_conf`),
``"compact"`` (:data:`deepdesc.nn.compact.default_conf`: ``width``, ``dropout``; best with
``preset = "hardnet"``) or ``"tfeat"`` (:data:`deepdesc.nn.tfeat.default_conf`: fixed layers, only the keys
every arch has). A ``[model]`` key of another arch is refused.

:func:`load_config` refuses unknown keys (suggesting the closest known one) and checks every value against
:data:`SCHEMA` (type and range), raising :class:`~deepdesc.errors.ConfigError` that names the file (or
``config``), the key, the value and the expected form, e.g.
``config: optim.lr = 'abc': expected a finite number in (0, 10]``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..nn.base import PATCH_SIZE
from ..nn.factory import ARCHS, DEFAULT_ARCH
from ..nn.layers import INPUT_NORMS
from .synthetic import Augment

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "HARDNET",
    "PAPER",
    "PRESETS",
    "SCHEMA",
    "ConfigError",
    "load_config",
    "parse_overrides",
    "validate_config",
]

# -- presets ------------------------------------------------------------------------------------
# The paper's recipe (Simo-Serra et al., ICCV 2015; arXiv:1412.6537 "Fracking Deep Convolutional Image
# Descriptors"). Where each value comes from -- the paper's method section could not be read where this was
# written (only its abstract/introduction and the release README were reachable), so numbers marked
# "recalled" are unverified:
#   - CNN3 with per-pixel mean/std input normalisation: the released models (mean/std maps stored in them).
#   - hinge embedding loss on the L2 distance: paper abstract. Margin C = 4: recalled.
#   - aggressive mining with r_p = r_n = 8: the released models' names ("CNN3_p8_n8_split*").
#   - SGD, learning rate 0.01, momentum 0.9: recalled. The x0.1 step every 10k iterations is our choice
#     (the released models stopped at 67k-104k iterations, "chosen with a validation subset": release README).
#   - 128 back-propagated positives and 128 negatives per step (1024 + 1024 forwarded): our choice.
#   - best-by-validation checkpoint (run.select = "fpr95"): release README.
PAPER: dict[str, Any] = {
    "model": {"input_norm": "pixel", "l2_normalize": False},
    "loss": {"kind": "hinge", "margin": 4.0, "positive_mining": 8, "negative_mining": 8, "negatives_per_pair": 1},
    "optim": {"kind": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0, "lr_step": 10000, "lr_gamma": 0.1},
    "data": {
        "batch_size": 1024,
        "sources": ["sheets", "photos", "skimage"],
        "weights": [0.4, 0.3, 0.3],
        "val_pairs": 2000,
        "num_workers": 1,
        "region_scale": None,
        "blur_sigma": None,
        "augment": {},  # overrides of deepdesc.train.synthetic.Augment fields, e.g. {blur_sigma = [0.0, 3.0]}
        "distractor_fraction": 0.0,  # multiview:DIR sources: share of rows that are distractors (negatives only)
        "multiview_batching": "random",  # multiview:DIR training rows: "random" tracks, or "view_pair" (one per batch)
    },
    "run": {
        "steps": 20000,
        "seed": 0,
        "micro_batches": 1,
        "val_every": 500,
        "ckpt_every": 500,
        "out_dir": "runs/paper",
        "device": "auto",
        "tensorboard": False,
        "select": "fpr95",  # best.safetensors by lowest validation "fpr95" or highest "precision_at_1"
        "init": "",  # start from the weights of a checkpoint (.pt) or model (.safetensors); "" = random
    },
}
# HardNet-style (Mishchuk et al., NeurIPS 2017): hardest-in-batch triplet margin loss on L2-normalised
# descriptors, per-patch normalised input; learns much faster than the hinge loss.
HARDNET: dict[str, Any] = copy.deepcopy(PAPER)
HARDNET["model"] = {"input_norm": "patch", "l2_normalize": True}
HARDNET["loss"] = {"kind": "triplet", "margin": 1.0, "gor_weight": 0.0}  # gor: spread-out regulariser weight
HARDNET["optim"] = {"kind": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "lr_step": 0, "lr_gamma": 0.1}
HARDNET["data"]["batch_size"] = 256
HARDNET["run"]["out_dir"] = "runs/hardnet"
PRESETS = {"paper": PAPER, "hardnet": HARDNET}


# -- the schema: what each key may hold -----------------------------------------------------------
def _show(value: Any) -> str:
    """A value as a config file would spell it (TOML booleans, ``null``), else its repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else repr(value)


def _fmt(bound: float | None) -> str:
    """A range bound: whole numbers in full (4294967295, not 4.29e+09)."""
    if bound is None:
        return ""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number:
    """A finite int/float (``integer``: an int) within ``[low, high]`` (``*_open``: the bound excluded)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    odd: bool = False
    optional: bool = False  # None (YAML null, or the preset's "unset") means the library default

    def check(self, value: Any) -> bool:
        if value is None:
            return self.optional
        if not (isinstance(value, int) if self.integer else _is_number(value)) or isinstance(value, bool):
            return False
        if not math.isfinite(value) or (self.odd and value % 2 == 0):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def _range(self) -> str:
        low, high = _fmt(self.low), _fmt(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"{'<' if self.high_open else '<='} {high}" if self.high is not None else ""

    def noun(self, plural: bool = False) -> str:
        kind = ("odd " if self.odd else "") + ("integer" if self.integer else "finite number")
        return f"{kind}s {self._range()}".strip() if plural else f"{kind} {self._range()}".strip()

    @property
    def expected(self) -> str:
        article = "an" if self.noun()[0] in "aeiou" else "a"
        text = f"{article} {self.noun()}"
        return f"{text}, or unset for the library default" if self.optional else text


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    def check(self, value: Any) -> bool:
        return isinstance(value, str) and value in self.options

    @property
    def expected(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)


@dataclass(frozen=True)
class Bool:
    expected = "true or false"

    def check(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class String:
    nonempty: bool = False

    def check(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value or not self.nonempty)

    @property
    def expected(self) -> str:
        return "a non-empty string" if self.nonempty else "a string"


@dataclass(frozen=True)
class Device:
    """``"auto"`` or a name :class:`torch.device` reads (whether that device exists is checked when training)."""

    expected = "'auto' or a torch device (cpu, cuda, cuda:1, mps, ...)"

    def check(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        if value == "auto":
            return True
        try:
            torch.device(value)
        except (RuntimeError, ValueError):
            return False
        return True


@dataclass(frozen=True)
class List:
    """A list (TOML array) of ``item`` values; ``length``: exactly that many."""

    item: Number
    length: int | None = None

    def check(self, value: Any) -> bool:
        if not isinstance(value, (list, tuple)) or (self.length is not None and len(value) != self.length):
            return False
        return len(value) > 0 and all(self.item.check(v) for v in value)

    @property
    def expected(self) -> str:
        count = f"{self.length} " if self.length is not None else ""
        return f"a list of {count}{self.item.noun(plural=True)}"


@dataclass(frozen=True)
class Pair:
    """``[low, high]`` with ``minimum <= low <= high <= maximum`` (``strict``: ``low < high``)."""

    integer: bool = False
    minimum: float = 0.0
    maximum: float | None = None
    strict: bool = False

    def check(self, value: Any) -> bool:
        item = Number(low=self.minimum, high=self.maximum, integer=self.integer)
        if not isinstance(value, (list, tuple)) or len(value) != 2 or not all(item.check(v) for v in value):
            return False
        return value[0] < value[1] if self.strict else value[0] <= value[1]

    @property
    def expected(self) -> str:
        kind = "integers" if self.integer else "numbers"
        top = f" <= {_fmt(self.maximum)}" if self.maximum is not None else ""
        return f"[low, high], {kind} with {_fmt(self.minimum)} <= low {'<' if self.strict else '<='} high{top}"


SOURCE_NAMES = ("sheets", "photos", "skimage", "synthetic-noise")
_SOURCE_PREFIXES = ("phototour", "multiview", *(f"phototour-split{k}" for k in range(1, 5)))


@dataclass(frozen=True)
class Sources:
    """``data.sources``: a non-empty list of source names (see :mod:`deepdesc.train.sources`)."""

    expected = "a non-empty list of data source names"
    item_expected = (
        "one of 'sheets', 'photos', 'skimage', 'synthetic-noise', 'phototour:PATH', "
        "'phototour-split1:ROOT' .. 'phototour-split4:ROOT', 'multiview:DIR'"
    )

    def check(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and len(value) > 0

    @staticmethod
    def check_item(name: Any) -> bool:
        if not isinstance(name, str):
            return False
        kind, sep, rest = name.partition(":")
        if sep:
            return kind in _SOURCE_PREFIXES and bool(rest)
        return name in SOURCE_NAMES or name.startswith("synthetic-noise")

    @staticmethod
    def suggest(name: Any) -> str | None:
        if not isinstance(name, str):
            return None
        kind, sep, rest = name.partition(":")
        if sep:
            match = difflib.get_close_matches(kind, _SOURCE_PREFIXES, n=1)
            return f"{match[0]}:{rest}" if match and rest else None
        match = difflib.get_close_matches(name, SOURCE_NAMES, n=1)
        return match[0] if match else None


_POSITIVE_INT = Number(low=1, integer=True)
_AUGMENT_SPECIAL: dict[str, Any] = {
    "jpeg_probability": Number(low=0, high=1),
    "jpeg_quality": Pair(integer=True, minimum=0, maximum=100, strict=True),  # rng.integers(low, high)
}


def _augment_schema() -> dict[str, Any]:
    """Every :class:`~deepdesc.train.synthetic.Augment` field: a [low, high] range or a non-negative +- size."""
    out = {}
    for field in dataclasses.fields(Augment):
        default = field.default
        out[field.name] = _AUGMENT_SPECIAL.get(field.name) or (Pair() if isinstance(default, tuple) else Number(low=0))
    return out


# Table -> key -> spec. [model] holds the keys of every network's default_conf (deepdesc.nn.factory.ARCHS;
# _check_together refuses those of another arch), [data.augment] the fields of Augment (both may be absent
# from a preset: their defaults live in those classes); the other tables hold the preset's keys. A test
# checks that every preset key and every default_conf key has a spec.
SCHEMA: dict[str, dict[str, Any]] = {
    "model": {
        "arch": Choice(tuple(ARCHS)),
        # cnn3 only
        "channels": List(_POSITIVE_INT, length=3),
        "kernel_sizes": List(_POSITIVE_INT, length=3),
        "pool_sizes": List(_POSITIVE_INT, length=3),
        "norm_kernel_size": Number(low=1, integer=True, odd=True),
        # compact only
        "width": Number(low=4, high=256, integer=True),
        "dropout": Number(low=0, high=1, high_open=True),
        # every arch (tfeat has only these)
        "input_norm": Choice(tuple(INPUT_NORMS)),
        "l2_normalize": Bool(),
        "region_scale": Number(low=0, low_open=True, optional=True),
        "blur_sigma": Number(low=0, optional=True),
    },
    "loss": {
        "kind": Choice(("hinge", "triplet")),
        "margin": Number(low=0, low_open=True),
        "positive_mining": _POSITIVE_INT,
        "negative_mining": _POSITIVE_INT,
        "negatives_per_pair": _POSITIVE_INT,
        "gor_weight": Number(low=0, high=100),
    },
    "optim": {
        "kind": Choice(("sgd", "adam")),
        "lr": Number(low=0, high=10, low_open=True),
        "momentum": Number(low=0, high=1, high_open=True),
        "weight_decay": Number(low=0),
        "lr_step": Number(low=0, integer=True),  # 0: linear decay to 0 over run.steps
        "lr_gamma": Number(low=0, high=1, low_open=True),
    },
    "data": {
        "batch_size": Number(low=2, integer=True),  # both losses compare each pair with the batch's others
        "sources": Sources(),
        "weights": List(Number(low=0)),
        "val_pairs": Number(low=2, integer=True),  # FPR95 needs non-corresponding pairs
        "num_workers": Number(low=0, integer=True),
        "region_scale": Number(low=0, low_open=True, optional=True),
        "blur_sigma": Number(low=0, optional=True),
        "augment": None,  # a table: SCHEMA["data.augment"]
        "distractor_fraction": Number(low=0, high=0.9),  # multiview sources: share of distractor rows
        "multiview_batching": Choice(("random", "view_pair")),
    },
    "data.augment": _augment_schema(),
    "run": {
        "steps": _POSITIVE_INT,
        "seed": Number(low=0, high=2**32 - 1, integer=True),  # numpy seeds must be >= 0
        "micro_batches": _POSITIVE_INT,
        "val_every": _POSITIVE_INT,
        "ckpt_every": _POSITIVE_INT,
        "out_dir": String(nonempty=True),
        "device": Device(),
        "tensorboard": Bool(),
        "select": Choice(("fpr95", "precision_at_1")),
        "init": String(),
    },
}
_HINGE_KEYS = ("positive_mining", "negative_mining", "negatives_per_pair")
# Tables whose known keys come from a class rather than from the preset.
_MODEL_KEYS = tuple(dict.fromkeys(key for family in ARCHS.values() for key in family.default_conf))
_OPEN_TABLES = {"model": _MODEL_KEYS, "data.augment": tuple(SCHEMA["data.augment"])}


# -- reading and merging ------------------------------------------------------------------------
Origin = Callable[[str], str]  # dotted key -> where its value came from (a file name or "config")


def _config_origin(key: str) -> str:
    return "config"


def _unknown_key(dotted: str, known: Sequence[str], origin: Origin) -> ConfigError:
    where, _, key = dotted.rpartition(".")
    prefix = f"{where}." if where else ""
    match = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean '{prefix}{match[0]}'?)" if match else ""
    label = origin(dotted)
    lead = "" if label == "config" else f"{label}: "
    return ConfigError(f"{lead}unknown config key '{dotted}'{hint}; known: {', '.join(sorted(known))}")


def _merge(base: dict, override: dict, origin: Origin, where: str = "") -> dict:
    """``base`` with ``override`` merged in, table by table; a key ``base`` (or its class) lacks is an error."""
    out = copy.deepcopy(base)
    table = where.rstrip(".")
    known = _OPEN_TABLES.get(table, tuple(out) + (("preset",) if not where else ()))
    for key, value in override.items():
        dotted = f"{where}{key}"
        if key not in known:
            raise _unknown_key(dotted, known, origin)
        if isinstance(out.get(key), dict):
            if not isinstance(value, dict):
                label = origin(dotted)
                lead = "" if label == "config" else f"{label}: "
                raise ConfigError(f"{lead}config key '{dotted}' must be a table, not {_show(value)}")
            out[key] = _merge(out[key], value, origin, f"{dotted}.")
        else:
            out[key] = value
    return out


def _deep_update(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in table by table (an override of one key keeps its siblings)."""
    out = dict(base)
    for key, value in override.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_update(out[key], value) if nested else value
    return out


def _holds(tree: dict, dotted: str) -> bool:
    """Whether the nested dict ``tree`` sets ``dotted`` (or a table above it to a non-table)."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return True
        name = part.partition("[")[0]
        if name not in node:
            return False
        node = node[name]
    return True


def _read_yaml(path: Path) -> dict:
    """A YAML config with the same tables as the TOML one (read with ``yaml.safe_load``: no code runs)."""
    try:
        import yaml  # optional: deepdesc[train]
    except ImportError:
        raise ConfigError(f"{path}: YAML configs need PyYAML (pip install pyyaml, or deepdesc[train])") from None
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(f"{path}: a config must be a mapping of tables (preset, model, ...), not {kind}")
    return raw


def _read_toml(path: Path) -> dict:
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def parse_overrides(items: Sequence[str]) -> dict:
    """``["optim.lr=0.001", "data.sources=['sheets']"]`` -> nested override dict. Values are read as TOML
    values (numbers, booleans, strings, arrays); anything TOML cannot read is taken as a plain string."""
    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set expects TABLE.KEY=VALUE (e.g. optim.lr=0.001), got {item!r}")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is set to a value and used as a table")
        node[parts[-1]] = value
    return out


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None) -> dict:
    """Read a TOML (or ``.yaml``/``.yml``) config (``preset`` + tables overriding it) into a full, validated
    config dict; ``overrides`` (e.g. from :func:`parse_overrides`) are merged over the file's tables.

    Raises :class:`~deepdesc.errors.ConfigError` for unreadable files, unknown keys and bad values.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path) if path.suffix.lower() in (".yaml", ".yml") else _read_toml(path)
        if not raw:  # an empty or truncated file would otherwise run the whole paper preset unnoticed
            presets = " or ".join(f'"{name}"' for name in sorted(PRESETS))
            raise ConfigError(f"{path}: the config is empty; give at least preset = {presets}")
    overrides = overrides or {}
    file_raw = raw

    def origin(dotted: str) -> str:
        if path is None or _holds(overrides, dotted) or not _holds(file_raw, dotted):
            return "config"
        return str(path)

    raw = _deep_update(raw, overrides)
    preset = raw.pop("preset", "paper")
    if not isinstance(preset, str) or preset not in PRESETS:
        match = difflib.get_close_matches(preset, list(PRESETS), n=1) if isinstance(preset, str) else []
        hint = f" (did you mean '{match[0]}'?)" if match else ""
        label = origin("preset")
        lead = "" if label == "config" else f"{label}: "
        raise ConfigError(f"{lead}unknown preset {_show(preset)}{hint}; known: {', '.join(sorted(PRESETS))}")
    conf = _merge(PRESETS[preset], raw, origin)
    conf["preset"] = preset
    return validate_config(conf, origin)


# -- validation ---------------------------------------------------------------------------------
def _bad(origin: Origin, key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{origin(key)}: {key} = {_show(value)}: expected {expected}")


def validate_config(conf: dict, origin: Origin | None = None) -> dict:
    """Check every value of a full config (as :func:`load_config` returns) against :data:`SCHEMA` and the
    rules that tie keys together; returns ``conf``. ``origin(key)`` names where a key's value came from
    (default ``"config"``). Raises :class:`~deepdesc.errors.ConfigError`."""
    origin = origin or _config_origin
    for table, specs in SCHEMA.items():
        node: Any = conf
        for part in table.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if not isinstance(node, dict):
            raise ConfigError(f"{origin(table)}: config key '{table}' must be a table, not {_show(node)}")
        for key, value in node.items():
            dotted = f"{table}.{key}"
            if key not in specs:
                raise _unknown_key(dotted, tuple(specs), origin)
            spec = specs[key]
            if spec is None:  # a sub-table, checked as its own entry
                if not isinstance(value, dict):
                    raise ConfigError(f"{origin(dotted)}: config key '{dotted}' must be a table, not {_show(value)}")
            elif not spec.check(value):
                raise _bad(origin, dotted, value, spec.expected)
    _check_sources(conf, origin)
    _check_together(conf, origin)
    return conf


def _check_sources(conf: dict, origin: Origin) -> None:
    data = conf["data"]
    for i, name in enumerate(data["sources"]):
        if not Sources.check_item(name):
            suggestion = Sources.suggest(name)
            hint = f" (did you mean '{suggestion}'?)" if suggestion else ""
            raise _bad(origin, f"data.sources[{i}]", name, Sources.item_expected + hint)
    weights = data["weights"]
    if len(weights) != len(data["sources"]):
        raise _bad(origin, "data.weights", weights, f"one weight per data.sources entry ({len(data['sources'])})")
    if not sum(weights) > 0:
        raise _bad(origin, "data.weights", weights, "finite numbers >= 0 with a positive sum")


def _check_together(conf: dict, origin: Origin) -> None:
    """Rules that involve several keys."""
    data, run, loss = conf["data"], conf["run"], conf["loss"]
    if data["batch_size"] // run["micro_batches"] < 2:
        need = 2 * run["micro_batches"]
        raise ConfigError(
            f"{origin('data.batch_size')}: data.batch_size = {data['batch_size']} with run.micro_batches = "
            f"{run['micro_batches']}: expected data.batch_size >= {need} (each micro-batch needs at least 2 pairs)"
        )
    missing = [k for k in _HINGE_KEYS if k not in loss]
    if loss["kind"] == "hinge" and missing:
        keys = ", ".join(f"loss.{k}" for k in missing)
        raise ConfigError(
            f"{origin('loss.kind')}: loss.kind = 'hinge' needs {keys}, which the {conf['preset']} preset does not "
            "have: use preset = 'paper'"
        )
    arch = conf["model"].get("arch", DEFAULT_ARCH)
    defaults = ARCHS[arch].default_conf
    for key in conf["model"]:
        if key not in defaults:
            raise ConfigError(
                f"{origin('model.' + key)}: model.{key} is not a setting of model.arch = {_show(arch)}; "
                f"its settings: {', '.join(sorted(defaults))}"
            )
    model = {**defaults, **conf["model"]}
    size = PATCH_SIZE
    for k, p in zip(model.get("kernel_sizes", ()), model.get("pool_sizes", ())):
        size = (size - k + 1) // p
    if arch == "cnn3" and size != 1:
        raise ConfigError(
            f"{origin('model.kernel_sizes')}: model.kernel_sizes = {model['kernel_sizes']} with model.pool_sizes = "
            f"{model['pool_sizes']}: the layers do not reduce a {PATCH_SIZE}x{PATCH_SIZE} patch to 1x1 (got {size})"
        )
    for key in ("region_scale", "blur_sigma"):  # the trainer records data.* in the weights; model.* would win
        value = conf["model"].get(key)
        if value is not None and value != data[key]:
            raise ConfigError(
                f"{origin('model.' + key)}: model.{key} = {_show(value)} differs from data.{key} = "
                f"{_show(data[key])}, the patches training cuts: set data.{key} instead"
            )
