"""The default ×4 GAN training step (G + D + losses), timed and FLOP-counted in a worker.

The step mirrors ``fagan_engine.training.trainer.Trainer._step`` in its GAN phase, with the
trainer's loss functions: G update on pixel (L1) + content + 1e-3·adversarial, then D update
on [HR, SR.detach()], then the EMA update of G; on CUDA with the trainer's set-up (cuDNN autotuning, channels_last for G, D
and the content network). The trainer's step is a method of a Trainer bound to a run folder and a
data set, so it is reproduced here on random patches. ``vgg``: content loss through VGG19 φ5,4
(random weights: the same cost as the real ones, which are not shipped) or the pixel-MSE
fallback used when ``train.vgg_weights`` is unset.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any, Callable, Dict

from .common import peak_rss_mib


def training(p: Dict[str, Any]) -> Dict[str, Any]:
    import torch

    from fagan_engine.util.config import TrainConfig

    from .flops import counted_flops

    torch.manual_seed(0)
    step = make_step(p["device"], p["precision"], p["batch"], p["patch"], p["vgg"], TrainConfig())
    step()
    sync = torch.cuda.synchronize if p["device"] == "cuda" else (lambda: None)
    sync()
    flops = counted_flops(step)
    sync()
    if p["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(p["steps"]):
        step()
    sync()
    step_s = (time.perf_counter() - start) / p["steps"]
    result = {
        "step_s": step_s,
        "iterations_per_s": 1 / step_s,
        "patches_per_s": p["batch"] / step_s,
        "flops_per_step": flops,
        "peak_rss_mib": peak_rss_mib(),
    }
    if p["device"] == "cuda":
        result["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def make_step(device: str, precision: str, batch: int, patch: int, vgg: bool, train: Any) -> Callable[[], None]:
    """A closure running one GAN-phase iteration on fixed random HR patches."""
    import torch

    from fagan_engine.models.archs import build_discriminator, build_generator, preset_config
    from fagan_engine.mri.forward_model import AcquisitionConfig, degrade
    from fagan_engine.training.ema import EMA
    from fagan_engine.training.losses import (
        ContentLoss,
        VGG19Features,
        discriminator_loss,
        generator_adversarial_loss,
        pixel_loss,
    )

    cfg = preset_config("fagan", 4)
    cuda = device == "cuda"
    memory_format = torch.channels_last if cuda and train.channels_last else torch.contiguous_format
    if cuda:
        torch.backends.cudnn.benchmark = True
    G = build_generator(cfg).to(device, memory_format=memory_format).train()
    D = build_discriminator(cfg).to(device, memory_format=memory_format).train()
    content = ContentLoss(VGG19Features().requires_grad_(False).eval() if vgg else None).to(device, memory_format=memory_format)
    ema = EMA(G, train.ema_decay)
    iteration = [0]
    opt_g = torch.optim.Adam(G.parameters(), lr=train.lr, betas=(train.beta1, train.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=train.lr, betas=(train.beta1, train.beta2))
    hr = torch.rand(batch, 1, patch, patch, device=device).contiguous(memory_format=memory_format)
    lr_array = degrade(hr.cpu().numpy(), 4, AcquisitionConfig(model="kspace"))
    lr = torch.from_numpy(lr_array).to(device).contiguous(memory_format=memory_format)
    bf16 = precision == "bf16"

    def autocast() -> Any:
        return torch.autocast(device_type=device, dtype=torch.bfloat16) if bf16 else nullcontext()

    def step() -> None:
        with autocast():
            sr = G(lr)
        D.requires_grad_(False)
        with autocast():
            fake_logits = D(sr)
            content_value = content(sr, hr)
        g_loss = (
            train.pixel_weight * pixel_loss(train.pixel_loss, sr, hr)
            + train.perceptual_weight * content_value
            + train.adversarial_weight * generator_adversarial_loss(fake_logits)
        )
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        with autocast():
            real_logits, fake_logits = D(torch.cat([hr, sr.detach()])).chunk(2)
        d_loss = discriminator_loss(real_logits, fake_logits)
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        iteration[0] += 1
        ema.update(G, iteration[0])

    return step
