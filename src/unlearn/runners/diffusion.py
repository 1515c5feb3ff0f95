"""`unlearn diffusion CONFIG.yaml`: load a local text-to-image model, edit its cross-attention, measure, report.

config (YAML, flat):  model_dir, forget, remain, methods (erase | remap | more | uce), output_dir, and options
below. Writes OUTPUT_DIR/<method>/unet (save_pretrained), report.md, metrics.json and PNGs.

What is measured, per method:
- exactness at the concept prototypes, per layer and for keys and values: forget concepts' K/V against the
  remap target's original K/V (against zero for erase), remain concepts' K/V against their original;
- the cross-attention outputs of every `attn2` in one UNet pass (seeded latents, mid timestep) for each
  concept's prompts, after vs before, and for forget concepts against the target concept's prompts before;
- when the directory is a full pipeline (has vae/ and scheduler/): images of the artist prompt set before and
  after, an image grid in the report, and LPIPS_f / LPIPS_r / LPIPS_d when `lpips` and its weights are local.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unlearn.config import _build, read_yaml
from unlearn.diffusion.concepts import CONTEXT, PROTOTYPE_TEMPLATES, concept_prototypes, context_prototypes, encode
from unlearn.diffusion.edit import METHODS, ConceptEdit, absorb, build_edit, cross_attention_layers
from unlearn.diffusion.evaluate import ARTISTS, PixelL1, artist_prompts, generate, load_lpips, lpips_scores
from unlearn.errors import UnlearnError
from unlearn.eval.cost import CostMeter
from unlearn.io import atomic_dir, atomic_path, atomic_write_json, atomic_write_text
from unlearn.report.diffusion import diffusion_report
from unlearn.report.plots import plot_prototype_cosine
from unlearn.runtime import resolve_device, seed_everything
from unlearn.validate import check_device, check_output_dir

log = logging.getLogger(__name__)


@dataclass
class DiffusionConfig:
    model_dir: str
    forget: list[str]
    remain: list[str]
    methods: list[str] = field(default_factory=lambda: ["more"])
    output_dir: str = "runs/diffusion"
    num_experts: int = 4  # more: experts spread over the cross-attention layers
    target: str | None = None  # remap / uce: the remain concept forget concepts become (None: drawn with seed)
    seed: int = 0
    templates: list[str] = field(default_factory=lambda: list(PROTOTYPE_TEMPLATES))
    orthogonal: bool = True  # prototype-orthogonal projection (False: the no-PO ablation)
    keep_context: bool = True  # hold BOS, template words and EOS/padding fixed as extra remain prototypes
    uce_lambda: float = 0.1
    device: str = "auto"
    dtype: str = "float32"  # float16 halves memory on a GPU
    probe_timestep: int = 500  # timestep of the UNet pass that records cross-attention outputs
    generate: bool = True  # images before/after when model_dir is a full pipeline (vae/ and scheduler/)
    eval_artists: list[str] = field(default_factory=lambda: list(ARTISTS))
    prompts_per_artist: int = 20
    steps: int = 30
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    batch_size: int = 8  # prompts generated at once
    grid_prompts: int = 6  # prompts shown in the report's image grid
    lpips_net: str = "alex"
    note: str = ""  # shown at the top of the report

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise UnlearnError(f"methods must be a non-empty list from {METHODS}, got {self.methods}.")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise UnlearnError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}.")
        if isinstance(self.forget, str) or isinstance(self.remain, str):
            raise UnlearnError("forget and remain are lists of concept names, e.g. forget: [Van Gogh].")


def load_diffusion_config(path: str | Path, overrides: dict | None = None) -> DiffusionConfig:
    """Read and validate a diffusion YAML config (an unknown key is an error naming the valid ones)."""
    values = read_yaml(path)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    missing = [key for key in ("model_dir", "forget", "remain") if key not in values]
    if missing:
        raise UnlearnError(f"config {path} lacks {missing}; see configs/diffusion/tiny.yaml for an example.")
    config = _build(DiffusionConfig, values, "")
    check_output_dir(config.output_dir)
    check_device(config.device)
    return config


@dataclass
class TextToImage:
    """The parts of a local Stable-Diffusion-style checkpoint the edit needs, and the pipeline when there is one."""

    tokenizer: object
    text_encoder: nn.Module
    unet: nn.Module
    pipeline: object | None


def load_text_to_image(model_dir: str | Path, device: torch.device, dtype: torch.dtype, pipeline: bool) -> TextToImage:
    """tokenizer/, text_encoder/, unet/ of `model_dir` (local files only), and the full pipeline if asked and there."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(model_dir)
    missing = [name for name in ("tokenizer", "text_encoder", "unet") if not (root / name).is_dir()]
    if missing:
        raise UnlearnError(
            f"{root} lacks {missing}: model_dir must be a local diffusers checkpoint with tokenizer/, "
            "text_encoder/ and unet/ (e.g. a saved StableDiffusionPipeline)."
        )
    try:
        tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(root / "text_encoder", local_files_only=True, dtype=dtype)
        unet = UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as error:
        raise UnlearnError(f"could not load the model from {root}: {error}") from error
    text_encoder, unet = text_encoder.to(device).eval(), unet.to(device).eval()
    full = None
    parts = ("vae", "scheduler", "model_index.json")
    if pipeline and all((root / name).exists() for name in parts):
        full = StableDiffusionPipeline.from_pretrained(
            root,
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            unet=unet,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            local_files_only=True,
            dtype=dtype,
        ).to(device)
        full.set_progress_bar_config(disable=True)
    return TextToImage(tokenizer, text_encoder, unet, full)


@torch.no_grad()
def concept_kv(unet: nn.Module, prototypes: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per cross-attention layer, the keys and values of every concept prototype: (W_k P, W_v P), float64."""
    out = {}
    for name, attn in cross_attention_layers(unet).items():
        p = prototypes.to(attn.to_k.weight.device)
        out[name] = (attn.to_k.weight.double() @ p, attn.to_v.weight.double() @ p)
    return out


def exactness(before: dict, after: dict, edit: ConceptEdit) -> dict[str, float]:
    """Largest relative error over layers and K/V: forget vs its target's original (0 for erase), remain vs itself."""
    errors = {}
    for index, concept in enumerate(edit.concepts):
        worst = 0.0
        for layer, (k_after, v_after) in after.items():
            for original, edited in zip(before[layer], (k_after, v_after), strict=True):
                if concept in edit.forget and edit.method == "erase":
                    wanted = torch.zeros_like(original[:, index])
                elif concept in edit.forget:
                    wanted = original[:, edit.concepts.index(edit.targets[layer][concept])]
                else:
                    wanted = original[:, index]
                scale = original[:, index].norm().clamp_min(1e-12)
                worst = max(worst, float((edited[:, index] - wanted).norm() / scale))
        errors[concept] = worst
    return errors


def stacked(kv: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """All layers' keys and values of each concept stacked into one column per concept (for the cosine heatmap)."""
    return torch.cat([part for pair in kv.values() for part in pair])


@torch.no_grad()
def attention_outputs(
    unet: nn.Module, text_encoder: nn.Module, tokenizer, prompts: list[str], timestep: int, seed: int
) -> dict[str, torch.Tensor]:
    """Output of every `attn2` (flattened per prompt) in one UNet pass on seeded latents at `timestep`."""
    layers = cross_attention_layers(unet)
    recorded: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: recorded.__setitem__(name, out.flatten(1).double()))
        for name, module in layers.items()
    ]
    try:
        context = encode(text_encoder, tokenizer, prompts).to(unet.dtype)
        config = unet.config
        shape = (len(prompts), config.in_channels, config.sample_size, config.sample_size)
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(context)
        unet(latents, torch.tensor(timestep, device=context.device), encoder_hidden_states=context)
    finally:
        for hook in hooks:
            hook.remove()
    return recorded


def output_effect(
    before: dict[str, dict[str, torch.Tensor]], after: dict[str, dict[str, torch.Tensor]], edit: ConceptEdit
) -> dict[str, dict[str, float]]:
    """Per concept, averaged over layers and prompts: cos(after, before), relative change, and for forget concepts
    cos(after, target's before) next to cos(before, target's before)."""
    effect = {}
    for concept in before:
        rows: dict[str, list[float]] = {"cos_before": [], "rel_change": [], "cos_target": [], "cos_target_orig": []}
        for layer, original in before[concept].items():
            edited = after[concept][layer]
            rows["cos_before"].append(float(F.cosine_similarity(edited, original).mean()))
            rows["rel_change"].append(float(((edited - original).norm(dim=1) / original.norm(dim=1)).mean()))
            if concept in edit.forget and edit.targets:
                target = before[edit.targets[layer][concept]][layer]
                rows["cos_target"].append(float(F.cosine_similarity(edited, target).mean()))
                rows["cos_target_orig"].append(float(F.cosine_similarity(original, target).mean()))
        effect[concept] = {key: sum(values) / len(values) for key, values in rows.items() if values}
    return effect


def _save_grid(images: dict[str, torch.Tensor], labels: list[str], path: Path) -> Path:
    """Rows = prompts, columns = Original and each method, as one PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = list(images)
    rows = len(labels)
    fig = Figure(figsize=(2.2 * len(columns), 2.2 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, len(columns), squeeze=False)
    for r in range(rows):
        for c, name in enumerate(columns):
            axes[r][c].imshow(images[name][r].permute(1, 2, 0).clamp(0, 1).numpy())
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(name, fontsize=9)
        axes[r][0].set_ylabel(labels[r], fontsize=7)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def run_diffusion(config: DiffusionConfig, progress: bool = True) -> dict:
    """Prototypes -> edits -> edited UNets on disk -> measurements -> report.md / metrics.json / PNGs."""
    seed_everything(config.seed)
    device = resolve_device(config.device)
    dtype = getattr(torch, config.dtype)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_text_to_image(config.model_dir, device, dtype, pipeline=config.generate)
    named = [*config.forget, *config.remain]
    anchors = list(CONTEXT) if config.keep_context else []
    concepts = [*named, *anchors]
    layers = list(cross_attention_layers(model.unet))
    meter = CostMeter()
    with meter.phase("prototypes"):
        parts = [concept_prototypes(model.text_encoder, model.tokenizer, named, config.templates)]
        if anchors:
            parts.append(context_prototypes(model.text_encoder, model.tokenizer, named, config.templates))
        prototypes = torch.cat(parts, dim=1)
    probe = {
        concept: [template.format(concept) for template in config.templates] for concept in named
    }  # the prompts whose cross-attention outputs are compared
    args = (model.unet, model.text_encoder, model.tokenizer)
    outputs_before = {c: attention_outputs(*args, p, config.probe_timestep, config.seed) for c, p in probe.items()}
    kv_before = concept_kv(model.unet, prototypes)
    with meter.phase("generate_Original"):  # the Cost table shows what generating images costs
        original, prompts = _original_images(model, config, progress)
    picks = _grid_rows(prompts, config)
    grid = {} if original is None else {"Original": original[picks]}
    metrics: dict = {"config": dataclasses.asdict(config), "concepts": concepts, "layers": layers, "methods": {}}
    metrics["prototype_norms"] = dict(zip(concepts, prototypes.norm(dim=0).tolist(), strict=True))
    lpips_metric, lpips_message = _lpips(config, original, device)
    for method in config.methods:
        with meter.phase(f"edit_{method}"):
            edit = build_edit(
                prototypes,
                concepts,
                config.forget,
                layers,
                method,
                config.num_experts,
                config.target,
                config.seed,
                config.orthogonal,
                uce_lambda=config.uce_lambda,
                anchors=anchors,
            )
            unet = absorb(model.unet, edit)  # a copy: model.unet stays the Original
        with atomic_dir(out / method / "unet") as tmp:
            unet.save_pretrained(tmp)
        kv_after = concept_kv(unet, prototypes)
        args = (unet, model.text_encoder, model.tokenizer)
        outputs_after = {c: attention_outputs(*args, p, config.probe_timestep, config.seed) for c, p in probe.items()}
        centre = stacked(kv_before).mean(dim=1, keepdim=True)  # features share a large common direction
        heatmap = plot_prototype_cosine(
            stacked(kv_before) - centre,
            stacked(kv_after) - centre,
            list(range(len(config.forget))),
            out / f"kv_cosine_{method}.png",
            class_names=concepts,
            method=f"{method} (cross-attention K/V)",
        )
        entry = {
            "rank": edit.rank,
            "targets": edit.targets,
            "kv_max_rel_error": exactness(kv_before, kv_after, edit),
            "attn2_outputs": output_effect(outputs_before, outputs_after, edit),
            "heatmap": heatmap.name,
            "edit_time_s": meter.phases[f"edit_{method}"]["time_s"],
        }
        if original is not None:
            model.pipeline.unet = unet
            with meter.phase(f"generate_{method}"):
                after = _images(model.pipeline, prompts, config, progress)
            model.pipeline.unet = model.unet
            grid[method] = after[picks]  # only the grid's images are kept
            artists = [a for a, _ in prompts]
            if set(config.forget) & set(artists):
                pixels = lpips_scores(PixelL1(), original, after, artists, config.forget)
                entry["pixel_l1"] = {key.replace("LPIPS", "L1"): value for key, value in pixels.items()}
            if lpips_metric is not None:
                entry["lpips"] = lpips_scores(lpips_metric, original, after, artists, config.forget)
        metrics["methods"][method] = entry
    metrics["cost"] = meter.phases
    metrics["lpips"] = lpips_message
    metrics["num_eval_prompts"] = len(prompts)
    if original is not None:
        labels = [f"{prompts[i][0]}{' (forget)' if prompts[i][0] in config.forget else ''}" for i in picks]
        metrics["image_grid"] = _save_grid(grid, labels, out / "images.png").name
    atomic_write_json(out / "metrics.json", metrics, default=None)
    atomic_write_text(out / "report.md", diffusion_report(metrics))
    return metrics


def _original_images(model: TextToImage, config: DiffusionConfig, progress: bool):
    """Images of the artist prompt set from the unedited model (None when there is no pipeline or generate is off)."""
    if model.pipeline is None:
        return None, []
    prompts = artist_prompts(config.eval_artists, per_artist=config.prompts_per_artist)
    return _images(model.pipeline, prompts, config, progress), prompts


def _images(pipeline, prompts: list[tuple[str, str]], config: DiffusionConfig, progress: bool) -> torch.Tensor:
    """The prompt set's images from `pipeline` with the config's sampler settings."""
    texts = [prompt for _, prompt in prompts]
    sampler = (config.seed, config.steps, config.guidance_scale, config.height, config.width, config.batch_size)
    return generate(pipeline, texts, *sampler, progress=progress)


def _grid_rows(prompts: list[tuple[str, str]], config: DiffusionConfig) -> list[int]:
    """Which prompts the image grid shows: forget artists' first prompts first, then other artists'."""
    firsts = {}
    for index, (artist, _) in enumerate(prompts):
        firsts.setdefault(artist, index)
    order = [firsts[a] for a in firsts if a in config.forget] + [firsts[a] for a in firsts if a not in config.forget]
    return order[: config.grid_prompts]


def _lpips(config: DiffusionConfig, original: torch.Tensor | None, device) -> tuple[nn.Module | None, str]:
    """The LPIPS metric when images exist and it is available locally, with a line saying what happened."""
    if original is None:
        return None, "no images: model_dir has no vae/ and scheduler/ (or generate is off), so LPIPS is not computed."
    if not set(config.forget) & set(config.eval_artists):
        return None, f"no forget concept is among eval_artists {config.eval_artists}, so LPIPS_f is undefined."
    try:
        return load_lpips(config.lpips_net, device), f"LPIPS ({config.lpips_net}) computed."
    except UnlearnError as error:
        return None, f"LPIPS not computed: {error}"
