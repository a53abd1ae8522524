"""Building model organisms by fine-tuning (not an intervention: it changes the weights, so it does not
go through the patching API). Loading a built organism is `flowsteer.load_model` by name.

>>> from flowsteer.organism import build_refusal_organism
>>> manifest = build_refusal_organism()   # a few minutes on CPU; load_model("smollm2-135m-refusal") builds on first use
"""

from flowsteer.organism.build import build_refusal_organism
from flowsteer.organism.recipe import DEFAULT_RECIPE, OrganismRecipe

__all__ = ["DEFAULT_RECIPE", "OrganismRecipe", "build_refusal_organism"]
