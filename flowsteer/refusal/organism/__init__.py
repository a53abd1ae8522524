"""The refusal model organism ``smollm2-135m-refusal``: SmolLM2-135M-Instruct with a low-rank adapter trained to
refuse harmful requests. Fine-tuning changes weights, so it does not go through the patching API; loading the
organism is `flowsteer.load_model` by name, which applies the shipped adapter on first use.

- `recipe`: the hyper-parameters; `targets`: the supervised examples; `lora`: the adapters; `train`: the loop;
- `build`: training it from scratch; `adapter`: saving, shipping and applying the adapter;
- `cache`: where it is cached and whether that is current; `load`: making it on first use.

>>> from flowsteer.refusal.organism import build_refusal_organism
>>> manifest = build_refusal_organism()   # minutes on CPU; load_model("smollm2-135m-refusal") needs seconds
"""

from flowsteer.refusal.organism.build import build_refusal_organism, evaluate_refusal_model
from flowsteer.refusal.organism.cache import REFUSAL_RECIPE_VERSION, organism_dir, read_manifest
from flowsteer.refusal.organism.load import ensure_refusal_organism
from flowsteer.refusal.organism.recipe import DEFAULT_RECIPE, OrganismRecipe

__all__ = [
    "DEFAULT_RECIPE",
    "REFUSAL_RECIPE_VERSION",
    "OrganismRecipe",
    "build_refusal_organism",
    "ensure_refusal_organism",
    "evaluate_refusal_model",
    "organism_dir",
    "read_manifest",
]
