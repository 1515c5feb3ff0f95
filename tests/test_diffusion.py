"""Concept erasure in cross-attention on a tiny random text-to-image model built from configs (no downloads).

The tokenizer is a real CLIPTokenizer over a small BPE vocabulary written to the tmp dir (unlearn.diffusion.tiny),
so prompts are tokenised exactly as a real checkpoint's would be.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from torch import nn

from unlearn.cli import main
from unlearn.diffusion import absorb, build_edit, concept_prototypes, cross_attention_layers, encode, uce_matrix
from unlearn.diffusion.concepts import CONTEXT, context_prototypes, token_ids
from unlearn.diffusion.evaluate import (
    ARTISTS,
    EVAL_TEMPLATES,
    PixelL1,
    artist_prompts,
    denoise,
    load_lpips,
    lpips_scores,
)
from unlearn.diffusion.tiny import build_tiny_pipeline
from unlearn.errors import UnlearnError
from unlearn.runners.diffusion import load_diffusion_config, load_text_to_image

FORGET = ["van gogh"]
REMAIN = ["picasso", "rembrandt", "kinkade", "dog"]
CONCEPTS = [*FORGET, *REMAIN]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="module")
def model(tiny_dir):
    return load_text_to_image(tiny_dir, torch.device("cpu"), torch.float32, pipeline=False)


@pytest.fixture(scope="module")
def prototypes(model):
    return concept_prototypes(model.text_encoder, model.tokenizer, CONCEPTS)


def edited(model, prototypes, method, **options):
    import copy

    layers = list(cross_attention_layers(model.unet))
    edit = build_edit(prototypes, CONCEPTS, FORGET, layers, method, **options)
    return edit, absorb(copy.deepcopy(model.unet), edit)


@torch.no_grad()
def kv(unet, layer, context):
    attn = cross_attention_layers(unet)[layer]
    return attn.to_k(context), attn.to_v(context)


def test_tiny_tokenizer_keeps_words_whole_and_prototypes_are_finite(model, prototypes):
    tokens = model.tokenizer.convert_ids_to_tokens(token_ids(model.tokenizer, ["art by van gogh"])[0].tolist())
    assert tokens[:5] == ["<|startoftext|>", "art</w>", "by</w>", "van</w>", "gogh</w>"]
    assert prototypes.shape == (32, len(CONCEPTS))
    assert torch.isfinite(prototypes).all()
    assert torch.linalg.matrix_rank(prototypes) == len(CONCEPTS)  # PO projection needs independent prototypes


@pytest.mark.parametrize("method", ["remap", "more"])
def test_forget_kv_become_the_targets_and_remain_kv_stay(model, prototypes, method):
    edit, unet = edited(model, prototypes, method, num_experts=3, seed=1)
    targets_seen = set()
    for layer in cross_attention_layers(unet):
        for index, concept in enumerate(CONCEPTS):
            after = kv(unet, layer, prototypes[:, index].float())
            if concept in FORGET:
                target = edit.targets[layer][concept]
                targets_seen.add(target)
                wanted = kv(model.unet, layer, prototypes[:, CONCEPTS.index(target)].float())
            else:
                wanted = kv(model.unet, layer, prototypes[:, index].float())
            for a, w in zip(after, wanted, strict=True):
                torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)
    assert targets_seen <= set(REMAIN)
    if method == "more":  # experts spread over layers send the forget concept to more than one remain concept
        assert len(targets_seen) > 1


def test_erase_makes_forget_kv_vanish(model, prototypes):
    _, unet = edited(model, prototypes, "erase")
    for layer in cross_attention_layers(unet):
        key, value = kv(unet, layer, prototypes[:, 0].float())
        assert key.abs().max() < 1e-5 and value.abs().max() < 1e-5
        for index in range(1, len(CONCEPTS)):
            for a, w in zip(
                kv(unet, layer, prototypes[:, index].float()),
                kv(model.unet, layer, prototypes[:, index].float()),
                strict=True,
            ):
                torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)


def test_single_template_edit_is_exact_at_the_concept_token_of_a_real_prompt(model):
    """With one template and a one-token concept the prototype is that token's hidden state, so the edited K/V of
    the prompt at the concept's position equal the target's K/V in its own prompt, token for token."""
    template = ["a painting in the style of {}"]
    concepts = ["rembrandt", "picasso", "dog"]
    protos = concept_prototypes(model.text_encoder, model.tokenizer, concepts, template)
    layers = list(cross_attention_layers(model.unet))
    edit = build_edit(protos, concepts, ["rembrandt"], layers, "remap", target="picasso")
    import copy

    unet = absorb(copy.deepcopy(model.unet), edit)
    forget_prompt = encode(model.text_encoder, model.tokenizer, [template[0].format("rembrandt")])[0]
    target_prompt = encode(model.text_encoder, model.tokenizer, [template[0].format("picasso")])[0]
    position = 7  # <bos> a painting in the style of [concept]
    for layer in layers:
        for a, w in zip(
            kv(unet, layer, forget_prompt[position]), kv(model.unet, layer, target_prompt[position]), strict=True
        ):
            torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-5)


def test_context_anchors_hold_bos_fixed_which_otherwise_moves(model, prototypes):
    """BOS has the same hidden state in every prompt (causal encoder), so as an anchor column its K/V stay exact."""
    import copy

    context = context_prototypes(model.text_encoder, model.tokenizer, CONCEPTS)
    layers = list(cross_attention_layers(model.unet))
    bos = encode(model.text_encoder, model.tokenizer, ["a photo of a dog"])[0, 0]
    moved = {}
    for anchored in (True, False):
        concepts = [*CONCEPTS, *CONTEXT] if anchored else CONCEPTS
        protos = torch.cat([prototypes, context], dim=1) if anchored else prototypes
        anchors = CONTEXT if anchored else ()
        edit = build_edit(protos, concepts, FORGET, layers, "remap", target="picasso", anchors=anchors)
        unet = absorb(copy.deepcopy(model.unet), edit)
        moved[anchored] = max(
            float((a - w).norm() / w.norm())
            for layer in layers
            for a, w in zip(kv(unet, layer, bos), kv(model.unet, layer, bos), strict=True)
        )
    assert moved[True] < 1e-5 < 0.01 < moved[False]
    with pytest.raises(UnlearnError, match="never targets|not a remain concept"):
        build_edit(
            torch.cat([prototypes, context], dim=1),
            [*CONCEPTS, *CONTEXT],
            FORGET,
            layers,
            "remap",
            target="[bos]",
            anchors=CONTEXT,
        )


def test_uce_is_the_closed_form_least_squares_solution(model, prototypes):
    """UCE's M minimises Σ‖M c_i − c*_i‖² + Σ‖M c_j − c_j‖² + λ‖M − I‖²: the gradient there is zero, and it is not
    exact at the forget concept (a ridge fit), unlike remap."""
    p = prototypes
    forget, target, preserve = p[:, :1], p[:, 1:2], p[:, 1:]
    lam = 0.1
    m = uce_matrix(forget, target, preserve, lam)
    gradient = (
        (m @ forget - target) @ forget.T
        + (m @ preserve - preserve) @ preserve.T
        + lam * (m - torch.eye(32, dtype=m.dtype))
    )
    assert gradient.abs().max() < 1e-8
    assert (m @ forget - target).norm() / target.norm() < 0.05  # close to the target, as the fit asks
    edit, unet = edited(model, prototypes, "uce", target="picasso")
    assert set(edit.targets[next(iter(edit.targets))].values()) == {"picasso"}


def test_a_guided_denoising_loop_runs_on_the_edited_unet(model, prototypes):
    from diffusers import DDIMScheduler

    _, unet = edited(model, prototypes, "remap", target="picasso")
    context = encode(model.text_encoder, model.tokenizer, ["art by van gogh", "art by rembrandt"])
    uncond = encode(model.text_encoder, model.tokenizer, ["", ""])
    scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    before = denoise(model.unet, scheduler, context, steps=4, seed=0, guidance_scale=7.5, uncond_embeddings=uncond)
    after = denoise(unet, scheduler, context, steps=4, seed=0, guidance_scale=7.5, uncond_embeddings=uncond)
    assert after.shape == (2, 4, 8, 8) and torch.isfinite(after).all()
    change = (after - before).flatten(1).norm(dim=1) / before.flatten(1).norm(dim=1)
    assert change[0] > 0  # the forget prompt's generation changed


def test_save_and_load_round_trip(model, prototypes, tmp_path):
    from diffusers import UNet2DConditionModel

    _, unet = edited(model, prototypes, "more", num_experts=2)
    unet.save_pretrained(tmp_path / "unet")
    loaded = UNet2DConditionModel.from_pretrained(tmp_path / "unet", local_files_only=True)
    for name, attn in cross_attention_layers(unet).items():
        other = cross_attention_layers(loaded)[name]
        assert torch.equal(attn.to_k.weight, other.to_k.weight) and torch.equal(attn.to_v.weight, other.to_v.weight)


def test_bad_inputs_give_clear_errors(model, prototypes, tmp_path):
    layers = list(cross_attention_layers(model.unet))
    with pytest.raises(UnlearnError, match=r"not among the concepts"):
        build_edit(prototypes, CONCEPTS, ["monet"], layers, "remap")
    with pytest.raises(UnlearnError, match=r"target 'van gogh' is not a remain concept"):
        build_edit(prototypes, CONCEPTS, FORGET, layers, "remap", target="van gogh")
    with pytest.raises(UnlearnError, match=r"method must be one of"):
        build_edit(prototypes, CONCEPTS, FORGET, layers, "esd")
    with pytest.raises(UnlearnError, match=r"every concept is a forget concept"):
        build_edit(prototypes, CONCEPTS, CONCEPTS, layers, "erase")
    with pytest.raises(UnlearnError, match=r"has no cross-attention layer named 'attn2'"):
        cross_attention_layers(nn.Sequential(nn.Linear(4, 4)))
    with pytest.raises(UnlearnError, match=r"lacks \['tokenizer', 'text_encoder', 'unet'\]"):
        load_text_to_image(tmp_path, torch.device("cpu"), torch.float32, pipeline=False)
    with pytest.raises(UnlearnError, match=r"do not appear in the tokenised prompt"):
        concept_prototypes(model.text_encoder, model.tokenizer, ["dog " * 30])
    narrow = build_edit(prototypes[:16], CONCEPTS, FORGET, layers, "erase")
    import copy

    with pytest.raises(UnlearnError, match=r"different text encoder"):
        absorb(copy.deepcopy(model.unet), narrow)


def test_prompt_set_is_20_templates_by_10_artists_and_lpips_needs_the_package():
    prompts = artist_prompts()
    assert len(ARTISTS) == 10 and len(EVAL_TEMPLATES) == 20 and len(prompts) == 200
    assert prompts[0] == ("Van Gogh", EVAL_TEMPLATES[0].format("Van Gogh"))
    try:
        metric = load_lpips()
    except UnlearnError as error:
        assert "lpips" in str(error).lower()
        metric = None
    if metric is None:  # lpips_scores itself is checked with a stand-in metric: the mean absolute difference
        metric = PixelL1()
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    scores = lpips_scores(metric, images, images.flip(0), ["a", "a", "b", "b"], ["a"])
    assert scores["LPIPS_d"] == pytest.approx(scores["LPIPS_f"] - scores["LPIPS_r"])
    with pytest.raises(UnlearnError, match="forget and of remain"):
        lpips_scores(metric, images, images, ["a"] * 4, ["a"])


def test_cli_writes_unets_report_metrics_heatmaps_and_images(tiny_dir, tmp_path, capsys):
    config = {
        "model_dir": str(tiny_dir),
        "forget": ["Van Gogh"],
        "remain": ["Pablo Picasso", "Rembrandt", "Thomas Kinkade"],
        "methods": ["more", "uce", "erase"],
        "num_experts": 2,
        "output_dir": str(tmp_path / "run"),
        "eval_artists": ["Van Gogh", "Rembrandt"],
        "prompts_per_artist": 2,
        "steps": 2,
        "grid_prompts": 2,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["diffusion", str(path), "--quiet"]) == 0
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    more = metrics["methods"]["more"]["kv_max_rel_error"]
    assert more["Van Gogh"] < 1e-5 and max(more[c] for c in config["remain"]) < 1e-5
    assert metrics["methods"]["erase"]["kv_max_rel_error"]["Van Gogh"] < 1e-5
    assert metrics["methods"]["uce"]["kv_max_rel_error"]["Van Gogh"] > 1e-5  # UCE is a least-squares fit
    for name in ("report.md", "kv_cosine_more.png", "images.png", "more/unet/config.json", "uce/unet/config.json"):
        assert (run / name).is_file(), name
    report = (run / "report.md").read_text()
    assert "Cross-attention outputs per concept" in report and "LPIPS" in report
    generated = {phase for phase in metrics["cost"] if phase.startswith("generate_")}
    assert generated == {"generate_Original", "generate_more", "generate_uce", "generate_erase"}
    assert "| generate_Original |" in report and "Generating images" in report  # the Cost table shows generation
    assert "more   K/V max rel. error: forget" in capsys.readouterr().out


def test_config_errors_name_the_problem(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"model_dir": "x", "forget": ["a"], "remain": ["b"], "mehtods": ["more"]}))
    with pytest.raises(UnlearnError, match=r"unknown config key\(s\) \['mehtods'\]"):
        load_diffusion_config(path)
    path.write_text(yaml.safe_dump({"model_dir": "x", "forget": ["a"], "remain": ["b"], "methods": ["esd"]}))
    with pytest.raises(UnlearnError, match="methods must be"):
        load_diffusion_config(path)
    path.write_text(yaml.safe_dump({"forget": ["a"], "remain": ["b"]}))
    with pytest.raises(UnlearnError, match="lacks"):
        load_diffusion_config(path)
