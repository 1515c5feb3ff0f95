"""unlearn: make a trained model forget a class, a concept or a set of samples, and prove it.

from unlearn import MoRE, split_model
features, head = split_model(model)
edit = MoRE(num_experts=8, seed=0).fit(features, train_loader, forget_classes=[4])
unlearned = edit.apply(model)          # a new model; `model` itself is left exactly as it was
save_edit(edit, "edits/more")          # edit.safetensors + edit.json, written atomically
unlearned = load_edit("edits/more").apply(model)
"""

from unlearn.errors import UnlearnError
from unlearn.methods import ESC, METHODS, Erase, MoRE, Remap, build_method
from unlearn.methods.saved import load_edit, load_model, save_edit, save_model
from unlearn.models.split import split_model

__all__ = [
    "ESC",
    "METHODS",
    "Erase",
    "MoRE",
    "Remap",
    "UnlearnError",
    "build_method",
    "load_edit",
    "load_model",
    "save_edit",
    "save_model",
    "split_model",
]
__version__ = "0.1.0"
