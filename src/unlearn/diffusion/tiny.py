"""A tiny random Stable-Diffusion-shaped pipeline saved to a local directory, for tests and the offline benchmark.

Nothing is downloaded: the CLIP tokenizer gets a small BPE vocabulary written here (every printable ASCII
character, with and without the end-of-word mark, plus merges that make each word of `WORDS` one token), and
the text encoder, UNet, VAE and scheduler are built from configs with seeded random weights. The directory has
the layout of a real diffusers checkpoint (model_index.json, tokenizer/, text_encoder/, unet/, vae/,
scheduler/), so everything that reads a real model reads this one. Its images mean nothing; it exists to check
the structure and exactness of an edit.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch

from unlearn.diffusion.concepts import PROTOTYPE_TEMPLATES
from unlearn.diffusion.evaluate import ARTISTS, EVAL_TEMPLATES
from unlearn.io import atomic_dir, atomic_write_json, atomic_write_text

TEXT_DIM = 32
MAX_TOKENS = 24
EXTRA_WORDS = ("a", "photo", "of", "dog", "cat", "art", "painting", "style", "the", "in")


def _words() -> list[str]:
    """Lower-case words of the shipped templates, artist names and a few common words (one token each)."""
    text = " ".join([*PROTOTYPE_TEMPLATES, *EVAL_TEMPLATES, *ARTISTS, *EXTRA_WORDS]).replace("{}", " ").lower()
    words = "".join(c if c.isalnum() else " " for c in text).split()
    return list(dict.fromkeys(words))


def _bpe(pieces: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE on one word: merge the lowest-ranked adjacent pair (every occurrence) until none is known."""
    while len(pieces) > 1:
        pairs = [(ranks[pair], pair) for pair in zip(pieces, pieces[1:], strict=False) if pair in ranks]
        if not pairs:
            break
        first, second = min(pairs)[1]
        merged, index = [], 0
        while index < len(pieces):
            if index + 1 < len(pieces) and (pieces[index], pieces[index + 1]) == (first, second):
                merged.append(first + second)
                index += 2
            else:
                merged.append(pieces[index])
                index += 1
        pieces = merged
    return pieces


def write_tokenizer_files(directory: Path) -> tuple[Path, Path]:
    """vocab.json and merges.txt of a small CLIP BPE: all characters, then for each word the merges that finish it.

    Each word is first split by the merges made so far; new merges (ranked after all earlier ones, so earlier
    words keep their single token) then join what is left from left to right.
    """
    chars = sorted(set(string.printable.strip().lower()))
    vocab = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    ranks: dict[tuple[str, str], int] = {}
    for word in _words():
        pieces = _bpe([*word[:-1], word[-1] + "</w>"], ranks)
        while len(pieces) > 1:
            ranks.setdefault((pieces[0], pieces[1]), len(ranks))
            pieces = [pieces[0] + pieces[1], *pieces[2:]]
            if pieces[0] not in vocab:
                vocab.append(pieces[0])
    vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
    atomic_write_json(vocab_file, {token: index for index, token in enumerate(vocab)}, indent=None)
    atomic_write_text(merges_file, "#version: 0.2\n" + "\n".join(" ".join(pair) for pair in ranks) + "\n")
    return vocab_file, merges_file


def build_tiny_pipeline(directory: str | Path, seed: int = 0) -> Path:
    """Write a random tiny text-to-image pipeline (d_text 32, UNet (32, 64), 8x8 latents, 8x8 images) and return it.

    Written whole into a temp directory, then swapped in (`unlearn.io.atomic_dir`).
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        _write_pipeline(tmp, seed)
    return directory


def _write_pipeline(directory: Path, seed: int) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_file, merges_file = write_tokenizer_files(directory / "tokenizer")
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=MAX_TOKENS)
    torch.manual_seed(seed)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=TEXT_DIM,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32,),
        down_block_types=("DownEncoderBlock2D",),
        up_block_types=("UpDecoderBlock2D",),
        latent_channels=4,
        norm_num_groups=32,
        sample_size=8,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=CLIPTextModel(text_config).eval(),
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(directory)


if __name__ == "__main__":
    import sys

    print(build_tiny_pipeline(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny_sd"))
