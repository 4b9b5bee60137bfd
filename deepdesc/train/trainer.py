"""The resumable (optionally distributed) trainer: ``Trainer(conf).run()`` and :func:`train`.

``deepdesc train --config FILE.toml [--resume]`` (configs: :mod:`deepdesc.train.config`; data:
:mod:`deepdesc.train.sources`; checkpoints: :mod:`deepdesc.train.checkpoint`).

Every batch, negative sample and mining decision is a pure function of ``(seed, step)``, so a run
resumed from its last checkpoint continues exactly as if never interrupted. Under ``torchrun`` the
trainer uses DistributedDataParallel (gloo on CPU, nccl on GPU): each of the ``micro_batches`` of a
step goes to one rank, and the averaged gradient equals single-process gradient accumulation.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from ..errors import CheckpointError, ConfigError
from ..eval.metrics import fpr95, precision_at_1
from ..hub.weights import load_safetensors, save_safetensors
from ..nn.base import DescriptorNet
from ..utils import atomic_path, logger, resolve_device
from .checkpoint import (
    build_model,
    check_compatible,
    config_differences,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from .config import load_config
from .losses import (
    global_orthogonal_regularization,
    hardest_in_batch_triplet_loss,
    hinge_loss_on,
    mined_hinge_loss,
    select_hardest_pairs,
)
from .sources import build_sources, validation_pairs
from .synthetic import PairBatches

__all__ = ["Trainer", "train", "validation_fpr95", "validation_scores"]


@torch.no_grad()
def validation_scores(
    model: DescriptorNet, anchors: torch.Tensor, positives: torch.Tensor, batch: int = 512
) -> dict[str, float]:
    """Validation on V corresponding pairs against *all* V(V-1) non-corresponding (anchor, positive) pairs,
    many of which come from the same image:

    * ``fpr95``: false-positive rate at 95% recall (lower is better);
    * ``precision_at_1``: fraction of anchors whose nearest of the V positives is their own (higher is
      better). It keeps moving long after FPR95 has flattened, so it can pick a checkpoint.
    """
    was_training = model.training
    model.eval()
    device = model.device
    da = torch.cat([model(anchors[i : i + batch].to(device)).cpu() for i in range(0, len(anchors), batch)])
    dp = torch.cat([model(positives[i : i + batch].to(device)).cpu() for i in range(0, len(positives), batch)])
    model.train(was_training)
    da, dp = da.detach().double(), dp.detach().double()
    distances = torch.cdist(da, dp)
    labels = torch.eye(len(distances), dtype=torch.bool)
    return {
        "fpr95": float(fpr95(distances.flatten().numpy(), labels.flatten().numpy())),
        "precision_at_1": precision_at_1(da.numpy(), dp.numpy()),
    }


def validation_fpr95(model: DescriptorNet, anchors: torch.Tensor, positives: torch.Tensor, batch: int = 512) -> float:
    """FPR95 of :func:`validation_scores`."""
    return validation_scores(model, anchors, positives, batch)["fpr95"]


# -- the trainer --------------------------------------------------------------------------------
class Trainer:
    """Runs a config: ``Trainer(conf).run(resume=False)``; see the module docstring."""

    def __init__(self, conf: dict, sources: tuple[list, list[float]] | None = None, val=None):
        self.conf = conf
        run = conf["run"]
        self.out = Path(run["out_dir"])
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = resolve_device(run["device"])
        if self.world > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            if self.device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        if run["micro_batches"] % self.world:
            raise ConfigError(
                f"config: run.micro_batches = {run['micro_batches']}: expected a multiple of the {self.world} processes"
            )
        torch.manual_seed(run["seed"])
        self.model = build_model(conf).to(self.device)
        self.net = self.model
        if self.world > 1:
            self.net = DistributedDataParallel(self.model)
        self.optimizer = self._optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.sources = sources
        self.val = val
        self.step = 0
        self.best = math.inf
        self.stop_requested = False

    # setup helpers
    def _optimizer(self) -> torch.optim.Optimizer:
        o = self.conf["optim"]
        params = self.model.parameters()
        if o["kind"] == "sgd":
            return torch.optim.SGD(params, lr=o["lr"], momentum=o["momentum"], weight_decay=o["weight_decay"])
        if o["kind"] == "adam":
            return torch.optim.Adam(params, lr=o["lr"], weight_decay=o["weight_decay"])
        raise ValueError(f"unknown optim.kind {o['kind']!r}; known: sgd, adam")

    def _lr_factor(self, step: int) -> float:
        o = self.conf["optim"]
        if o["lr_step"]:
            return o["lr_gamma"] ** (step // o["lr_step"])
        return max(0.0, 1.0 - step / max(1, self.conf["run"]["steps"]))  # linear decay to 0

    def loss(
        self, a: torch.Tensor, p: torch.Tensor, index: int, valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The configured loss of one micro-batch; ``valid`` (B,) marks real pairs (False: distractor rows)."""
        lc = self.conf["loss"]
        if lc["kind"] == "triplet":
            da, dp = self.net(torch.cat([a, p])).chunk(2)
            loss, stats = hardest_in_batch_triplet_loss(da, dp, margin=lc["margin"], valid=valid)
            if lc.get("gor_weight", 0.0) > 0:
                loss = loss + lc["gor_weight"] * global_orthogonal_regularization(da, dp)
            return loss, stats
        if valid is not None and not bool(valid.all()):  # the paper's loss has no distractor term
            a, p = a[valid], p[valid]
        if lc["kind"] != "hinge":
            raise ValueError(f"unknown loss.kind {lc['kind']!r}; known: hinge, triplet")
        # The paper's efficiency: forward every sampled pair without gradients, then forward and
        # back-propagate again only the patches of the mined (hardest) pairs.
        gen = torch.Generator().manual_seed(self.conf["run"]["seed"] * 1_000_003 + index)
        if lc["positive_mining"] == 1 and lc["negative_mining"] == 1:  # nothing to mine: one pass
            da, dp = self.net(torch.cat([a, p])).chunk(2)
            n = len(da) * lc["negatives_per_pair"]
            return mined_hinge_loss(da, dp, lc["margin"], 1, 1, num_negatives=n, generator=gen)
        with torch.no_grad():
            da, dp = self.net(torch.cat([a, p])).chunk(2)
        pos_idx, neg_pairs, stats = select_hardest_pairs(
            da,
            dp,
            margin=lc["margin"],
            positive_mining=lc["positive_mining"],
            negative_mining=lc["negative_mining"],
            num_negatives=len(da) * lc["negatives_per_pair"],
            generator=gen,
        )
        need_a = torch.unique(torch.cat([pos_idx, neg_pairs[:, 0]]))  # sorted
        need_p = torch.unique(torch.cat([pos_idx, neg_pairs[:, 1]]))
        ga, gp = self.net(torch.cat([a[need_a], p[need_p]])).split([len(need_a), len(need_p)])
        pos = torch.stack([torch.searchsorted(need_a, pos_idx), torch.searchsorted(need_p, pos_idx)], 1)
        neg_a, neg_p = neg_pairs[:, 0].contiguous(), neg_pairs[:, 1].contiguous()
        neg = torch.stack([torch.searchsorted(need_a, neg_a), torch.searchsorted(need_p, neg_p)], 1)
        return hinge_loss_on(ga, gp, pos, neg, lc["margin"]), stats

    # checkpoints
    def state(self) -> dict:
        return {
            "step": self.step,
            "best": self.best,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "config": json.dumps(self.conf),
        }

    def save_checkpoint(self, name: str = "last.pt") -> Path:
        return save_checkpoint(self.out / name, self.state())

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Continue from a checkpoint of this run: the same config but for
        :data:`~deepdesc.train.checkpoint.RESUMABLE_KEYS` (others refused, naming each differing key)."""
        state = load_checkpoint(path, missing="no checkpoint to resume from")
        check_compatible(path, state["config"], self.conf)
        for key, old, new in config_differences(state["config"], self.conf):
            logger.info("resuming with %s = %r (the checkpoint's run had %r)", key, new, old)
            if key == "run.steps" and not self.conf["optim"]["lr_step"]:
                logger.warning(
                    "optim.lr_step = 0: the linear learning-rate decay now ends at step %d instead of %d", new, old
                )
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            step, best = int(state["step"]), float(state["best"])
        except Exception as exc:
            raise CheckpointError(f"{path}: corrupt or incompatible checkpoint ({type(exc).__name__}: {exc})") from None
        self.step, self.best = step, best

    def save_model(self, name: str, scores: dict[str, float]) -> Path:
        meta = {
            "provenance": f"deepdesc train, preset {self.conf['preset']}, step {self.step}",
            "training_data": ", ".join(self.conf["data"]["sources"]),
            **{f"validation_{k}": f"{v:.4f}" for k, v in scores.items()},
            "license": "MIT",
        }
        path = self.out / name
        save_safetensors(self.model, path, meta)
        return path

    def _selection_key(self, scores: dict[str, float]) -> float:
        """Lower is better: the value ``best`` tracks for ``run.select``."""
        select = self.conf["run"]["select"]
        if select == "fpr95":
            return scores["fpr95"]
        if select == "precision_at_1":
            return -scores["precision_at_1"]
        raise ValueError(f"unknown run.select {select!r}; known: fpr95, precision_at_1")

    def _init_weights(self, path: str) -> None:
        """Start from the network weights of an earlier run (fine-tuning); optimiser and schedule start fresh."""
        model = load_safetensors(path) if str(path).endswith(".safetensors") else model_from_checkpoint(path)[0]
        for key in ("arch", "input_norm", "l2_normalize"):
            if model.conf.get(key) != self.model.conf.get(key):
                raise ValueError(
                    f"run.init {path}: its model has {key}={model.conf.get(key)!r}, this config "
                    f"{self.model.conf.get(key)!r}"
                )
        self.model.load_state_dict(model.state_dict())

    @torch.no_grad()
    def _init_pixel_normalisation(self, dataset) -> None:
        """Per-pixel mean/std maps of training patches, as the original models store them."""
        a, p, _ = dataset[len(dataset) - 1]  # an index no training step uses
        x = torch.cat([a, p])
        self.model.mean.copy_(x.mean(0).to(self.device))
        self.model.std.copy_(x.std(0).clamp_min(1.0).to(self.device))

    # the loop
    def _request_stop(self, signum, frame) -> None:
        self.stop_requested = True

    def _log(self, row: dict) -> None:
        path = self.out / "log.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: pip install tensorboard
        except ImportError:
            raise RuntimeError(
                "run.tensorboard = true needs the tensorboard package (pip install tensorboard)"
            ) from None
        # a resumed run rewrites the steps after its checkpoint: hide those a killed run had logged
        return SummaryWriter(str(self.out / "tensorboard"), purge_step=self.step + 1 if self.step else None)

    def _truncate_log(self) -> None:
        """Drop log rows past the resumed step (written by a run killed after its last checkpoint)."""
        path = self.out / "log.csv"
        if not path.exists():
            return
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        keep = [r for r in rows if int(r["step"]) <= self.step]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            if keep:
                writer = csv.DictWriter(f, fieldnames=list(keep[0]))
                writer.writeheader()
                writer.writerows(keep)

    def run(self, resume: bool = False, progress: bool = True) -> dict:
        """Train to ``run.steps`` (from the last checkpoint with ``resume``); returns a summary dict."""
        run = self.conf["run"]
        main = self.rank == 0
        self.out.mkdir(parents=True, exist_ok=True)
        if resume:
            self.load_checkpoint(self.out / "last.pt")
            if main:
                self._truncate_log()
        elif main and (self.out / "last.pt").exists():
            raise CheckpointError(f"{self.out} already holds a run; pass --resume or choose another run.out_dir")
        if main:
            (self.out / "config.json").write_text(json.dumps(self.conf, indent=2))
        if self.sources is None:
            self.sources = build_sources(self.conf, "train")
        if self.val is None and main:
            self.val = validation_pairs(self.conf)
        per_step = run["micro_batches"]
        micro = self.conf["data"]["batch_size"] // per_step
        dataset = PairBatches(self.sources[0], micro, seed=run["seed"], weights=self.sources[1])
        if not resume and run["init"]:
            self._init_weights(run["init"])
        elif not resume and self.conf["model"].get("input_norm", "pixel") == "pixel":
            self._init_pixel_normalisation(dataset)
        self._selection_key({"fpr95": 0.0, "precision_at_1": 0.0})  # a bad run.select fails now, not at step N
        mine = [k for k in range(per_step) if k % self.world == self.rank]
        indices = [s * per_step + k for s in range(self.step, run["steps"]) for k in mine]
        workers = self.conf["data"]["num_workers"]
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=None, sampler=indices, num_workers=workers, persistent_workers=False
        )
        batches = iter(loader)
        old_handlers = {}
        if main:
            for sig in (signal.SIGINT, signal.SIGTERM):
                old_handlers[sig] = signal.signal(sig, self._request_stop)
        bar = tqdm(total=run["steps"], initial=self.step, disable=not (progress and main), desc="train", unit="step")
        board = None
        self.model.train()
        scores = {"fpr95": float("nan"), "precision_at_1": float("nan")}
        try:
            if main and run["tensorboard"]:
                board = self._tensorboard()
            while self.step < run["steps"]:
                start = time.perf_counter()
                self.optimizer.zero_grad(set_to_none=True)
                stats: dict[str, float] = {}
                total = 0.0
                for k in mine:
                    a, p, valid = next(batches)
                    index = self.step * per_step + k
                    loss, stats = self.loss(a.to(self.device), p.to(self.device), index, valid.to(self.device))
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"loss became {loss.item()} at step {self.step + 1}; stopping. The last good checkpoint "
                            f"is {self.out / 'last.pt'} (lower optim.lr or check the data)"
                        )
                    (loss * (self.world / per_step)).backward()
                    total += loss.item() / len(mine)
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                bar.update(1)
                row = {"step": self.step, "loss": f"{total:.6f}", "lr": f"{self.scheduler.get_last_lr()[0]:.6g}"}
                row.update({k: f"{v:.5f}" for k, v in stats.items() if k in ("pos_dist", "neg_dist")})
                row["seconds"] = f"{time.perf_counter() - start:.3f}"
                row["val_fpr95"] = row["val_precision_at_1"] = ""
                if main and (self.step % run["val_every"] == 0 or self.step == run["steps"]):
                    scores = validation_scores(self.model, *self.val)
                    row["val_fpr95"] = f"{scores['fpr95']:.5f}"
                    row["val_precision_at_1"] = f"{scores['precision_at_1']:.5f}"
                    if self._selection_key(scores) < self.best:
                        self.best = self._selection_key(scores)
                        self.save_model("best.safetensors", scores)
                    bar.set_postfix(loss=f"{total:.3f}", **{k: f"{v:.3f}" for k, v in scores.items()})
                if main:
                    self._log(row)
                if board is not None:
                    for key, value in row.items():
                        if key not in ("step", "seconds") and value != "":
                            board.add_scalar(key, float(value), self.step)
                if main and (self.step % run["ckpt_every"] == 0 or self.step == run["steps"]):
                    self.save_checkpoint()
                stop = torch.tensor(float(self.stop_requested))
                if self.world > 1:
                    dist.all_reduce(stop)
                if stop.item() > 0:
                    if main:
                        self.save_checkpoint()
                    break
        finally:
            bar.close()
            if board is not None:
                board.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
        if self.stop_requested and main:
            logger.warning("interrupted at step %d; checkpoint saved, resume with --resume", self.step)
        return {
            "step": self.step,
            "select": run["select"],
            "best": abs(self.best),
            "last_fpr95": scores["fpr95"],
            "last_precision_at_1": scores["precision_at_1"],
            "interrupted": self.stop_requested,
        }


def train(config: str | os.PathLike | None = None, resume: bool = False, overrides: dict | None = None) -> dict:
    """Train from a TOML/YAML config file and/or ``overrides`` (see :func:`~deepdesc.train.config.load_config`);
    returns a summary dict (``step``, ``best``, ``last_fpr95``, ``interrupted``, ...)."""
    conf = load_config(config, overrides)
    owns_group = dist.is_available() and not dist.is_initialized()  # the Trainer creates it under torchrun
    try:
        return Trainer(conf).run(resume=resume)
    finally:
        # Tear the process group down before interpreter exit: left to the atexit order, gloo's threads can
        # abort a finished process ("terminate called without an active exception"), failing a good run.
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()
