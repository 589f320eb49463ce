"""The FA-GAN training loop: pixel-loss pre-training, then the GAN phase; EMA, validation, checkpoints.

Iteration ``t`` (0-based) is one optimisation step on the global batch of samples
``t*B .. t*B+B-1`` (see ``data.PatchDataset``). Iterations ``t < pretrain_iterations`` train
the generator on the pixel loss alone; later ones add the content loss and the adversarial
loss (eq. 14) with the discriminator frozen (``requires_grad=False``) during the generator
step, then update the discriminator. The learning-rate schedule is a pure function of ``t``
(set on both optimisers before each step), so restoring ``t`` restores it exactly.

On CUDA: bf16 autocast (fp16 + GradScaler on GPUs without bf16; bf16 has fp32's exponent
range and needs no loss scaling), channels_last, cudnn.benchmark, optional torch.compile.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from fagan_engine._version import __version__
from fagan_engine.inference.runners import resolve_device
from fagan_engine.models.archs import build_discriminator, build_generator
from fagan_engine.models.checkpoint import CheckpointMetadata, load_generator, read_metadata, save_checkpoint
from fagan_engine.mri.forward_model import AcquisitionConfig
from fagan_engine.training.data import IterationBatchSampler, PatchDataset, PreparedData, build_loader, build_synthesizer
from fagan_engine.training.ddp import Dist, any_rank, barrier, init_distributed, shutdown
from fagan_engine.training.ema import EMA
from fagan_engine.training.evaluation import EvalCase, baseline, make_case, validate
from fagan_engine.training.losses import (
    CONTENT_VGG,
    ContentLoss,
    band_overshoot_loss,
    discriminator_loss,
    generator_adversarial_loss,
    highband_loss,
    load_vgg19,
    pixel_loss,
)
from fagan_engine.training.profile import data_profile
from fagan_engine.training.runlog import RunLog
from fagan_engine.training.state import load_state, save_state
from fagan_engine.training.stop import STOP_FILE, StopRequest  # noqa: F401  (STOP_FILE: the Slicer module's contract)
from fagan_engine.util.atomic import atomic_write_bytes
from fagan_engine.util.config import FAGANConfig, TrainConfig
from fagan_engine.util.errors import CheckpointError, ConfigError, FAGANError
from fagan_engine.util.run_folder import CHECKPOINT_FOLDER, CONFIG_FILE, SPLIT_FILE, STATE_FILE, check_run_folder

RESUMABLE_CHANGES = (
    "train.iterations",
    "train.val_every",
    "train.checkpoint_every",
    "train.log_every",
    "train.device",
    "train.compile",
    "train.output_dir",
    "data.num_workers",
)
"""Config keys a resumed run may change; any other difference is refused. The run folder may be
named differently (relative, absolute) or moved: the state describes the run, not its path."""


def initial_weights(path: str, cfg: FAGANConfig, target: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], str]:
    """Generator weights to fine-tune from (``train.init_checkpoint``), and a note for the log.

    The same architecture is required, except with ``train.init_from_scale``: then a checkpoint of
    another scale (and the same other settings) gives every tensor whose name and shape match
    ``target``, e.g. a ×4 model everything of a ×8 one but its third upsampling stage, which keeps
    its fresh initialisation. A resumed run restores its own state afterwards, so this only
    matters at iteration 0.
    """
    partial = cfg.train.init_from_scale
    try:
        model, metadata = load_generator(path, expected_scale=None if partial else cfg.model.scale)
    except CheckpointError as exc:  # named as the setting the user gave, not as fagan-sr's --checkpoint
        raise CheckpointError(f"train.init_checkpoint: {exc}") from None
    source = metadata.model_config()
    name = Path(path).name
    if partial:
        if dataclasses.replace(source, scale=cfg.model.scale) != cfg.model:
            raise ConfigError(f"train.init_checkpoint {name} differs from model in more than the scale: "
                              f"{_first_difference(dataclasses.replace(source, scale=cfg.model.scale), cfg.model)}")
        stored = model.state_dict()
        weights = {k: v for k, v in stored.items() if k in target and tuple(v.shape) == tuple(target[k].shape)}
        fresh = sorted(set(target) - set(weights))
        note = f"initialised from x{source.scale} checkpoint {name}: {len(weights)} of {len(target)} tensors; new: {', '.join(fresh) or 'none'}"
        return {**target, **weights}, note
    if source != cfg.model:
        raise ConfigError(f"train.init_checkpoint {name} has another architecture than model: {_first_difference(source, cfg.model)}")
    return model.state_dict(), ""


def _first_difference(checkpoint: Any, recipe: Any) -> str:
    """``model.<key> is <value> in the checkpoint, <value> here`` for the first field where two model configs differ."""
    key = next(f.name for f in dataclasses.fields(recipe) if getattr(checkpoint, f.name) != getattr(recipe, f.name))
    return f"model.{key} is {getattr(checkpoint, key)!r} in the checkpoint, {getattr(recipe, key)!r} here"


def schedule(train: TrainConfig) -> Callable[[int], float]:
    """Learning-rate factor of iteration t: constant, multistep (× gamma per milestone passed) or cosine."""
    if train.lr_schedule == "multistep":
        return lambda t: train.lr_gamma ** sum(1 for m in train.lr_milestones if t >= m)
    if train.lr_schedule == "cosine":
        return lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, train.iterations) / train.iterations))
    return lambda t: 1.0


def preflight(cfg: FAGANConfig, resume: bool) -> None:
    """Checks before any data is read: the device, and the run folder.

    A run's state is never overwritten without ``--resume``, nor resumed with another recipe.
    """
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is usable; set train.device=auto or cpu")
    if not check_run_folder(Path(cfg.train.output_dir), resume):
        return
    state = Path(cfg.train.output_dir) / STATE_FILE
    structure = load_state(state)[1]
    saved = structure.get("config")
    if not isinstance(saved, dict) or not all(isinstance(v, dict) for v in saved.values()):
        raise CheckpointError(f"training state {state} is malformed: no valid config")
    iteration = structure.get("iteration")
    if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
        raise CheckpointError(f"training state {state} is malformed: invalid iteration {iteration!r}")
    if iteration > cfg.train.iterations:
        raise ConfigError(
            f"--resume: the state is at iteration {iteration}, beyond train.iterations={cfg.train.iterations}; "
            "raise train.iterations to continue"
        )
    current = cfg.to_dict()
    for section, values in current.items():
        for key, value in values.items():
            name = f"{section}.{key}"
            old = saved.get(section, {}).get(key)
            if old != value and name not in RESUMABLE_CHANGES:
                raise ConfigError(
                    f"--resume: {name} is {value!r} but the run was started with {old!r}; "
                    f"only {', '.join(RESUMABLE_CHANGES)} may change"
                )


class Trainer:
    """One training run in ``cfg.train.output_dir``; ``run()`` returns the exit code (0)."""

    def __init__(
        self,
        cfg: FAGANConfig,
        data: PreparedData,
        progress: str = "bar",
        resume: bool = False,
        stop: Optional[StopRequest] = None,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.progress_mode = progress
        self.resume = resume
        train = cfg.train
        kind = resolve_device(train.device)
        self.dist: Dist = init_distributed(kind)
        if train.batch_size % self.dist.world_size:
            raise ConfigError(f"train.batch_size {train.batch_size} must divide by the {self.dist.world_size} processes")
        self.device = torch.device(f"cuda:{self.dist.local_rank}" if kind == "cuda" else "cpu")
        self.cuda = kind == "cuda"
        self.run_dir = Path(train.output_dir)
        random.seed(train.seed)
        np.random.seed(train.seed % 2**32)
        torch.manual_seed(train.seed)
        self.G = build_generator(cfg.model).to(self.device)
        self.init_note = ""
        resuming = resume and (self.run_dir / STATE_FILE).is_file()
        if train.init_checkpoint and not resuming:  # a resumed run's weights come from its state
            weights, self.init_note = initial_weights(train.init_checkpoint, cfg, self.G.state_dict())
            self.G.load_state_dict(weights)
        self.D = build_discriminator(cfg.model).to(self.device)
        self.content = ContentLoss(load_vgg19(train.vgg_weights) if train.vgg_weights else None).to(self.device)
        if self.cuda:
            torch.backends.cudnn.benchmark = True
            if train.channels_last:
                for module in (self.G, self.D, self.content):
                    module.to(memory_format=torch.channels_last)
        self.ema = EMA(self.G, train.ema_decay)
        betas = (train.beta1, train.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=train.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=train.lr, betas=betas)
        self.lr_factor = schedule(train)
        self.amp_dtype: Optional[torch.dtype] = None
        if self.cuda and train.bf16:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.g_train: nn.Module = self.G
        self.d_train: nn.Module = self.D
        if self.dist.enabled:
            ids = [self.dist.local_rank] if self.cuda else None
            self.g_train, self.d_train = DDP(self.G, device_ids=ids), DDP(self.D, device_ids=ids)
        if train.compile and self.cuda:
            self.g_train = torch.compile(self.g_train)
        self.iteration = 0
        self.best_psnr: Optional[float] = None
        self.last_validation: Optional[Dict[str, float]] = None
        if resuming:
            self._load_state()
        self.stop = stop or StopRequest()
        if self.stop.stop_file is None:  # fagan-train watches the folder from the moment it holds its lock
            self.stop.watch(self.run_dir)
        self.synthesizer = build_synthesizer(cfg, data)  # its refusals come before the run folder is written
        self.log: Optional[RunLog] = None
        self.cases: List[EvalCase] = []
        self.baseline: Dict[str, float] = {}

    # ----------------------------------------------------------------- run
    def run(self) -> int:
        train = self.cfg.train
        started = time.perf_counter()
        if self.dist.is_main:
            self._open_run_folder()
        self.stop.install()
        try:
            stopped = self._loop()
        finally:
            self.stop.restore()
            if self.log is not None:
                self.log.close()
            barrier(self.dist)
            shutdown(self.dist)
        if self.log is not None:
            if stopped:
                state = self.run_dir / STATE_FILE
                self.log.log(f"stopped at iteration {self.iteration}; resume with --resume" if state.is_file() else
                             f"stopped at iteration {self.iteration}, before any training state was saved: nothing to resume")
                self.log.event("stopped", iteration=self.iteration, state=str(state) if state.is_file() else None)
            else:
                best = self._checkpoint_path("best")
                self.log.event(
                    "finished",
                    iteration=self.iteration,
                    best_checkpoint=str(best) if best.is_file() else None,
                    latest_checkpoint=str(self._checkpoint_path("latest")),
                    seconds=round(time.perf_counter() - started, 3),
                )
                self.log.log(f"finished {train.iterations} iterations; checkpoints in {self.run_dir / CHECKPOINT_FOLDER}")
        return 0

    def _open_run_folder(self) -> None:
        train = self.cfg.train
        (self.run_dir / CHECKPOINT_FOLDER).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.run_dir / CONFIG_FILE, _json(self.cfg.to_dict()))
        atomic_write_bytes(self.run_dir / SPLIT_FILE, _json(self.data.split))
        self.log = RunLog(self.run_dir, self.progress_mode, train.iterations, self.iteration)
        if self.resume and self.iteration == 0:
            self.log.log(f"--resume: no training state in {self.run_dir}; starting a new run")
        if self.content.kind != CONTENT_VGG:
            self.log.log("no train.vgg_weights: the content loss falls back to pixel MSE (recorded in checkpoint metadata)")
        if self.data.split.get("caveat"):
            self.log.log(f"note: {self.data.split['caveat']}")
        if self.init_note and self.iteration == 0:
            self.log.log(self.init_note)
        if self.iteration > 0:
            self._republish()
        primary = AcquisitionConfig(model=self.cfg.data.degradation.primary)
        self.cases = [make_case(v.name, v.hr, self.cfg.model.scale, v.axes, primary) for v in self.data.val]
        if self.cases:
            self.baseline = baseline(self.cases, "bicubic")
        self.log.event(
            "start", run_dir=str(self.run_dir), iteration=self.iteration, total=train.iterations, config=self.cfg.to_dict()
        )

    def _loop(self) -> bool:
        """Train until the last iteration (False) or a stop request (True)."""
        train = self.cfg.train
        dataset = PatchDataset(self.data.train, self.cfg.data, self.cfg.model.scale, train.seed, self.synthesizer)
        sampler = IterationBatchSampler(self.iteration, train.iterations, train.batch_size, self.dist.rank, self.dist.world_size)
        loader = build_loader(dataset, sampler, self.cfg.data.num_workers, pin_memory=self.cuda)
        sums: Dict[str, torch.Tensor] = {}
        count, window_start, saved_at = 0, time.perf_counter(), -1
        if any_rank(self.stop.requested, self.dist, self.device):  # e.g. SIGTERM while data was loading
            return True
        for hr, lr in loader:
            for name, value in self._step(hr, lr).items():
                sums[name] = sums.get(name, 0.0) + value
            count += 1
            done = self.iteration
            last = done == train.iterations
            if done % train.log_every == 0 or last:
                if self.log is not None:
                    self._report(sums, count, time.perf_counter() - window_start)
                sums, count = {}, 0
            if self.log is not None:
                validate_now = bool(self.cases) and (done % train.val_every == 0 or last)
                periodic = done % train.checkpoint_every == 0
                if validate_now or periodic or last:
                    self._check_finite(sums, count)  # a diverged model is neither validated nor saved
                if validate_now:
                    self._validate()
                if validate_now or periodic or last:
                    saved_at = self._save(periodic)
            if count == 0:  # throughput leaves validation and checkpoint time out
                window_start = time.perf_counter()
            if any_rank(self.stop.requested, self.dist, self.device) and not last:
                if self.log is not None and saved_at != done:
                    self._save(periodic=False)
                return True
        return False

    # ---------------------------------------------------------------- step
    def _autocast(self) -> ContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if self.cuda and self.cfg.train.channels_last:
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)

    def _step(self, hr: torch.Tensor, lr: torch.Tensor) -> Dict[str, torch.Tensor]:
        """One iteration; returns the detached losses."""
        train = self.cfg.train
        hr, lr = self._to_device(hr), self._to_device(lr)
        gan = self.iteration >= train.pretrain_iterations
        for optimizer in (self.opt_g, self.opt_d):
            for group in optimizer.param_groups:
                group["lr"] = train.lr * self.lr_factor(self.iteration)
        with self._autocast():
            sr = self.g_train(lr)
        pixel = pixel_loss(train.pixel_loss, sr, hr)
        losses = {"pixel": pixel}
        g_loss = train.pixel_weight * pixel
        if train.overshoot_weight > 0:
            overshoot = band_overshoot_loss(sr, hr, self.cfg.model.scale)
            g_loss = g_loss + train.overshoot_weight * overshoot
            losses["overshoot"] = overshoot
        if train.highband_weight > 0:
            highband = highband_loss(sr, hr, self.cfg.model.scale)
            g_loss = g_loss + train.highband_weight * highband
            losses["highband"] = highband
        if gan:
            self.D.requires_grad_(False)
            with self._autocast():
                fake_logits = self.D(sr)  # the bare module: D is not updated in this step
                content = self.content(sr, hr)
            adversarial = generator_adversarial_loss(fake_logits)
            g_loss = g_loss + train.perceptual_weight * content + train.adversarial_weight * adversarial
            losses.update(content=content, adversarial=adversarial)
        self._backward(g_loss, self.opt_g)
        if gan:
            self.D.requires_grad_(True)
            with self._autocast():
                real_logits, fake_logits = self.d_train(torch.cat([hr, sr.detach()])).chunk(2)
            d_loss = discriminator_loss(real_logits, fake_logits)
            self._backward(d_loss, self.opt_d)
            losses["discriminator"] = d_loss
        if self.scaler is not None:
            self.scaler.update()
        self.iteration += 1
        self.ema.update(self.G, self.iteration)
        losses["generator"] = g_loss
        return {name: value.detach().float() for name, value in losses.items()}

    # ----------------------------------------------------------- reporting
    def _phase(self, iteration: int) -> str:
        return "pretrain" if iteration <= self.cfg.train.pretrain_iterations else "gan"

    def _check_finite(self, sums: Dict[str, torch.Tensor], count: int) -> Dict[str, float]:
        """The mean losses since the last report; FAGANError when one is not finite (the run diverged)."""
        losses = {name: float(value) / count for name, value in sums.items()}
        if not all(math.isfinite(v) for v in losses.values()):
            raise FAGANError(f"training diverged at iteration {self.iteration} (non-finite loss); lower train.lr")
        return losses

    def _report(self, sums: Dict[str, torch.Tensor], count: int, seconds: float) -> None:
        train = self.cfg.train
        losses = self._check_finite(sums, count)
        rate = count / max(seconds, 1e-9)
        self.log.progress(
            {
                "epoch": round(self.iteration * train.batch_size / max(self.data.n_slices, 1), 3),
                "iteration": self.iteration,
                "total": train.iterations,
                "losses": {k: round(v, 6) for k, v in losses.items()},
                "lr": self.opt_g.param_groups[0]["lr"],
                "throughput": round(rate * train.batch_size, 2),
                "eta_s": round((train.iterations - self.iteration) / rate, 1),
                "phase": self._phase(self.iteration),
            }
        )

    def _validate(self) -> None:
        scores = validate(self.ema.model, self.cfg.normalization, self.cases)
        result = {
            "iteration": self.iteration,
            "psnr": round(scores["psnr"], 4),
            "ssim": round(scores["ssim"], 5),
            "bicubic_psnr": round(self.baseline["psnr"], 4),
            "bicubic_ssim": round(self.baseline["ssim"], 5),
        }
        self.last_validation = result
        self.log.record({"kind": "validation", **result})
        self.log.event("validation", **result)
        self.log.log(
            f"validation it {self.iteration}: PSNR {result['psnr']:.2f} dB SSIM {result['ssim']:.4f} "
            f"(bicubic {result['bicubic_psnr']:.2f} dB {result['bicubic_ssim']:.4f})"
        )
        self.log.plot()

    # -------------------------------------------------------- checkpoints
    def _checkpoint_path(self, name: str) -> Path:
        return self.run_dir / CHECKPOINT_FOLDER / f"{name}.safetensors"

    def _metadata(self) -> CheckpointMetadata:
        cfg, split = self.cfg, self.data.split
        training: Dict[str, Any] = {
            "iterations": self.iteration,
            "phase": self._phase(self.iteration),
            "pretrain_iterations": cfg.train.pretrain_iterations,
            "content_loss": self.content.kind,
            "init_checkpoint": Path(cfg.train.init_checkpoint).name if cfg.train.init_checkpoint else None,
            "synthetic_fraction": cfg.data.synthetic_fraction,
            "synthesis": dataclasses.asdict(cfg.data.synthesis),
            "pixel_loss": cfg.train.pixel_loss,
            "weights": "ema",
            "ema_decay": cfg.train.ema_decay,
            "seed": cfg.train.seed,
            "batch_size": cfg.train.batch_size,
            "patch_size": cfg.data.patch_size,
            "degradation": dataclasses.asdict(cfg.data.degradation),
            "split": split["mode"],
            "train_data": split["train"],
            "train_data_digests": self.data.digests,
            "validation_data": split["val"],
            "validation": self.last_validation,
            "engine_version": __version__,
        }
        if "validation_slab" in split:
            training["validation_slab"] = split["validation_slab"]
            training["through_plane_axis"] = split["through_plane_axis"]
        return dataclasses.replace(CheckpointMetadata.create(
            cfg.model, cfg.normalization, plane=cfg.data.plane, training=training, acquisitions=cfg.data.degradation.acquisitions()
        ), data_profile=data_profile(cfg, self.data))

    def _save(self, periodic: bool) -> int:
        """Write latest (and best / periodic) EMA checkpoints and the resumable state; rank 0 only."""
        metadata = self._metadata()
        weights = self.ema.model.state_dict()
        improved = self.last_validation is not None and self.last_validation["iteration"] == self.iteration and (
            self.best_psnr is None or self.last_validation["psnr"] > self.best_psnr
        )
        if improved:
            self.best_psnr = self.last_validation["psnr"]
        kinds = ["latest"] + (["best"] if improved else []) + (["periodic"] if periodic else [])
        self._save_state()  # first: a kill -9 before the checkpoints leaves a state that resumes (and rewrites them)
        for kind in kinds:
            path = self._checkpoint_path(f"iter_{self.iteration:07d}" if kind == "periodic" else kind)
            save_checkpoint(str(path), weights, metadata)
            self.log.event("checkpoint", iteration=self.iteration, path=str(path), kind=kind)
        return self.iteration

    def _republish(self) -> None:
        """On resume: a kill -9 between a state and its checkpoints left ``latest`` (and ``best``, when the state's own
        validation was the best) older than the state; they are written again from it."""
        kinds = ["latest"]
        last = self.last_validation
        if last is not None and last["iteration"] == self.iteration and self.best_psnr == last["psnr"]:
            kinds.append("best")
        stale = [kind for kind in kinds if _checkpoint_iteration(self._checkpoint_path(kind)) != self.iteration]
        if stale:
            metadata, weights = self._metadata(), self.ema.model.state_dict()
            for kind in stale:
                save_checkpoint(str(self._checkpoint_path(kind)), weights, metadata)

    def _save_state(self) -> None:
        modules = {"G": self.G.state_dict(), "EMA": self.ema.model.state_dict(), "D": self.D.state_dict()}
        numpy_state = np.random.get_state()
        structure = {
            "iteration": self.iteration,
            "best_psnr": self.best_psnr,
            "last_validation": self.last_validation,
            "config": self.cfg.to_dict(),
            "split": self.data.split,
            "optimizers": {"G": self.opt_g.state_dict(), "D": self.opt_d.state_dict()},
            "lr_schedule": {"name": self.cfg.train.lr_schedule, "factor": self.lr_factor(self.iteration)},
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": {
                "python": random.getstate(),
                "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.cuda else [],
            },
            "engine_version": __version__,
        }
        save_state(self.run_dir / STATE_FILE, modules, structure)

    def _load_state(self) -> None:
        """Restore a saved state; any missing or mistyped part is a one-line CheckpointError."""
        path = self.run_dir / STATE_FILE
        modules, structure = load_state(path)
        self._check_same_split(structure.get("split"))
        try:
            self._restore(modules, structure)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"training state {path} does not fit this run: {detail[:200]}") from None

    def _check_same_split(self, saved: Any) -> None:
        """ConfigError when the data now split differently from the run's (a volume added to or removed from a folder
        reshuffles the seeded split): validation scores and the best checkpoint would compare different sets. The run's
        split comes from its state (``split.json`` for a state written before the state kept it)."""
        if saved is None:
            try:
                saved = json.loads((self.run_dir / SPLIT_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return
        if _plain(saved) == _plain(self.data.split):
            return
        was = saved.get("val") if isinstance(saved, dict) else None
        raise ConfigError(
            f"--resume: the data now splits into training and validation differently from the run's (validation was {was!r}, now "
            f"{self.data.split.get('val')!r}): resume with the same data (adding or removing a volume changes the split), "
            "or start a new run in another train.output_dir"
        )

    def _restore(self, modules: Dict[str, Dict[str, torch.Tensor]], structure: Dict[str, Any]) -> None:
        iteration = structure["iteration"]
        if not isinstance(iteration, int) or isinstance(iteration, bool) or iteration < 0:
            raise ValueError(f"invalid iteration {iteration!r}")
        if structure["best_psnr"] is not None and not isinstance(structure["best_psnr"], (int, float)):
            raise TypeError("best_psnr is not a number")
        if structure["last_validation"] is not None and not isinstance(structure["last_validation"], dict):
            raise TypeError("last_validation is not a record")
        self.G.load_state_dict(modules["G"])
        self.ema.model.load_state_dict(modules["EMA"])
        self.D.load_state_dict(modules["D"])
        self.opt_g.load_state_dict(structure["optimizers"]["G"])
        self.opt_d.load_state_dict(structure["optimizers"]["D"])
        if self.scaler is not None and structure["scaler"] is not None:
            self.scaler.load_state_dict(structure["scaler"])
        rng = structure["rng"]
        random.setstate(rng["python"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(rng["torch"])
        if self.cuda and rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.iteration = int(structure["iteration"])
        self.best_psnr = structure["best_psnr"]
        self.last_validation = structure["last_validation"]


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back (tuples as lists), for comparing a saved structure with a live one."""
    return json.loads(json.dumps(value))


def _checkpoint_iteration(path: Path) -> Optional[int]:
    """The training iteration a run's checkpoint records; None when it is missing or unreadable."""
    try:
        return int(read_metadata(str(path)).training.get("iterations"))
    except (FAGANError, OSError, TypeError, ValueError):
        return None


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")
