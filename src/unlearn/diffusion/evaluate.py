"""Evaluation of concept erasure in a text-to-image model: prompt sets, generation before/after, LPIPS (Table 2).

    LPIPS_f = mean LPIPS(before, after) over forget artists' prompts (↑),  LPIPS_r = the same over the other
    artists' prompts (↓),  LPIPS_d = LPIPS_f − LPIPS_r (↑)

The paper's set is 20 prompts for each of 10 artists (5 classical, 5 modern, §4.1). Its exact prompts come
from the prior works it follows and are not in the paper, so `EVAL_TEMPLATES` are our own 20 subject
templates, each filled with every artist: the same structure and size, not the same wording, so LPIPS values
are comparable between methods run here, not digit for digit with Table 2.

Before and after use the same seed per prompt (seed + prompt index), so LPIPS measures the edit alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from unlearn.errors import UnlearnError
from unlearn.runtime import module_device

ARTISTS = (
    "Van Gogh",
    "Pablo Picasso",
    "Rembrandt",
    "Andy Warhol",
    "Caravaggio",
    "Kelly McKernan",
    "Thomas Kinkade",
    "Tyler Edlin",
    "Kilian Eng",
    "Ajin: Demi-Human",
)

EVAL_TEMPLATES = (
    "a starry night over a quiet town in the style of {}",
    "a portrait of a woman in the style of {}",
    "a self-portrait by {}",
    "a field of sunflowers in the style of {}",
    "a still life with fruit and a vase by {}",
    "a city street at night painted by {}",
    "a landscape with mountains and a river in the style of {}",
    "a ship on a stormy sea by {}",
    "a quiet village in winter in the style of {}",
    "a garden full of flowers painted by {}",
    "a crowded market scene by {}",
    "an old man reading a book in the style of {}",
    "a cat sleeping on a chair by {}",
    "a forest path in autumn in the style of {}",
    "a lighthouse on a cliff painted by {}",
    "a dancer on a stage in the style of {}",
    "a bowl of soup on a wooden table by {}",
    "a futuristic city skyline in the style of {}",
    "a knight riding a horse by {}",
    "a cafe terrace at night in the style of {}",
)


def artist_prompts(
    artists: Sequence[str] = ARTISTS, templates: Sequence[str] = EVAL_TEMPLATES, per_artist: int | None = None
) -> list[tuple[str, str]]:
    """(artist, prompt) pairs: the first `per_artist` templates (all 20 by default) filled with each artist."""
    count = len(templates) if per_artist is None else per_artist
    if not 1 <= count <= len(templates):
        raise UnlearnError(f"per_artist must be between 1 and {len(templates)}, got {per_artist}.")
    return [(artist, template.format(artist)) for artist in artists for template in templates[:count]]


@torch.no_grad()
def denoise(
    unet: nn.Module,
    scheduler,
    text_embeddings: torch.Tensor,
    steps: int = 10,
    seed: int = 0,
    guidance_scale: float = 1.0,
    uncond_embeddings: torch.Tensor | None = None,
) -> torch.Tensor:
    """A full latent denoising loop: x_T ~ N(0, I) (seeded), then `steps` scheduler steps; returns x_0 latents.

    With `uncond_embeddings` and guidance_scale > 1, classifier-free guidance ε = ε_u + s (ε_c − ε_u).
    """
    device = next(unet.parameters()).device
    config = unet.config
    shape = (len(text_embeddings), config.in_channels, config.sample_size, config.sample_size)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(device)
    scheduler.set_timesteps(steps)
    latents = latents * scheduler.init_noise_sigma
    guided = uncond_embeddings is not None and guidance_scale > 1.0
    context = torch.cat([uncond_embeddings, text_embeddings]) if guided else text_embeddings
    for t in scheduler.timesteps:
        model_input = torch.cat([latents] * 2) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        noise = unet(model_input, t, encoder_hidden_states=context.to(device)).sample
        if guided:
            uncond, cond = noise.chunk(2)
            noise = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(noise, t, latents).prev_sample
    return latents


@torch.no_grad()
def generate(
    pipeline,
    prompts: Sequence[str],
    seed: int = 0,
    steps: int = 30,
    guidance_scale: float = 7.5,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> torch.Tensor:
    """Images (N x 3 x H x W in [0, 1]) from a diffusers text-to-image pipeline, prompt i seeded with seed + i.

    Prompts go through in batches, each with its own generator, so an image does not depend on the batching.
    """
    images = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress):
        batch = list(prompts[start : start + batch_size])
        generators = [torch.Generator(device="cpu").manual_seed(seed + start + i) for i in range(len(batch))]
        result = pipeline(
            batch,
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=height,
            width=width,
            generator=generators,
            output_type="pt",
        )
        images.append(result.images.float().cpu())
    return torch.cat(images)


class PixelL1(nn.Module):
    """Mean absolute pixel difference per image pair: a crude distance for when LPIPS is not available."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))  # gives the module a device

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().mean(dim=(1, 2, 3))


def load_lpips(net: str = "alex", device: str | torch.device = "cpu") -> nn.Module:
    """The `lpips` package's metric, only when it and its backbone weights are already on this machine."""
    try:
        import lpips
        import torchvision
    except ImportError as error:
        raise UnlearnError(
            "LPIPS needs the `lpips` package and torchvision (pip install lpips torchvision) with the backbone "
            "weights in torch's hub cache; without them only the cross-attention numbers and images are reported."
        ) from error
    weights = {
        "alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
        "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1,
        "squeeze": torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1,
    }
    if net not in weights:
        raise UnlearnError(f"lpips net must be one of {sorted(weights)}, got {net!r}.")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights[net].url).name
    if not cached.is_file():
        raise UnlearnError(
            f"LPIPS's {net} backbone weights are not at {cached}; copy them there first (nothing is downloaded "
            "at run time)."
        )
    return lpips.LPIPS(net=net, verbose=False).to(device).eval()


@torch.no_grad()
def lpips_scores(
    metric: nn.Module, before: torch.Tensor, after: torch.Tensor, artists: Sequence[str], forget: Sequence[str]
) -> dict:
    """LPIPS_f, LPIPS_r, LPIPS_d and the mean per artist, from paired images in [0, 1] (one artist per image)."""
    if before.shape != after.shape or len(before) != len(artists):
        raise UnlearnError(
            f"before/after must be paired N x 3 x H x W images with one artist each, got {tuple(before.shape)}, "
            f"{tuple(after.shape)} and {len(artists)} artists."
        )
    forget_rows = [i for i, artist in enumerate(artists) if artist in forget]
    remain_rows = [i for i, artist in enumerate(artists) if artist not in forget]
    if not forget_rows or not remain_rows:
        raise UnlearnError(
            f"LPIPS_f and LPIPS_r need prompts of forget and of remain artists; forget {list(forget)} vs artists "
            f"{sorted(set(artists))}."
        )
    device = module_device(metric)
    distances = torch.cat(
        [
            metric(b.to(device) * 2 - 1, a.to(device) * 2 - 1).flatten().cpu()
            for b, a in zip(before.split(8), after.split(8), strict=True)
        ]
    )
    per_artist = {
        name: float(distances[[i for i, a in enumerate(artists) if a == name]].mean())
        for name in dict.fromkeys(artists)
    }
    lpips_f, lpips_r = float(distances[forget_rows].mean()), float(distances[remain_rows].mean())
    return {"LPIPS_f": lpips_f, "LPIPS_r": lpips_r, "LPIPS_d": lpips_f - lpips_r, "per_artist": per_artist}
