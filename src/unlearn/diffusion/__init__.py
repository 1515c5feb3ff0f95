"""MoRE for text-to-image diffusion: concept prototypes from the text encoder, edits folded into cross-attention.

>>> concepts = ["Van Gogh", "Claude Monet", "Rembrandt"]
>>> prototypes = concept_prototypes(text_encoder, tokenizer, concepts)  # d_text x 3
>>> edit = build_edit(prototypes, concepts, ["Van Gogh"], list(cross_attention_layers(unet)), method="more")
>>> edited = absorb(unet, edit)  # a copy with W_k' = W_k E, W_v' = W_v E in every attn2; `unet` is unchanged
"""

from unlearn.diffusion.concepts import concept_prototypes, encode
from unlearn.diffusion.edit import METHODS, ConceptEdit, absorb, build_edit, cross_attention_layers
from unlearn.diffusion.uce import uce_matrix

__all__ = [
    "METHODS",
    "ConceptEdit",
    "absorb",
    "build_edit",
    "concept_prototypes",
    "cross_attention_layers",
    "encode",
    "uce_matrix",
]
