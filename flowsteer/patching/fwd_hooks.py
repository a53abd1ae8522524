"""Patches as plain TransformerLens forward hooks, for the caller's own ``run_with_hooks``.

    hooks = patches_to_fwd_hooks(model, [Patch("6/res", AddVector(v, 4.0))])
    logits = model.run_with_hooks(tokens, fwd_hooks=hooks)
    with model.hooks(fwd_hooks=hooks):
        logits = model(tokens)

The hooks are written by `HookSession` (still the one place that writes hooks). TransformerLens owns
their lifetime: ``run_with_hooks`` and ``model.hooks`` remove them when the call ends.

Positions. Outside flowsteer's own calls a hook sees only the activation, not the padding or the
generation step, so the positions a patch selects are read off the activation's shape: every
column is a real prompt token and column j is position j, in every row.

- ``"all"`` and ``"prompt"`` edit every column; explicit positions (``[-1]``) and ranges
  (``slice(1, None)``) count columns from the left.
- Left-padded batches: positions then count from the first column, padding included, so
  ``[-1]`` is still the last column but ``[0]`` is a pad token in shorter rows. Use
  `run_with_patches`, which knows the padding, for padded batches.
- ``"generated"`` patches are refused: no column is a generated token here. Under TransformerLens's
  own cached ``model.generate`` each new token arrives as a one-column chunk that reads as position
  0 (and -1); use `generate_with_patches` for generation with position-selective patches.
- `FromSource` patches are refused: no source run exists (use `interchange`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transformer_lens import HookedTransformer

from flowsteer.patching.hooks import HookSession
from flowsteer.patching.interventions import Activation, FromSource
from flowsteer.patching.patch import Patch

FwdHook = tuple[str, Callable[[Activation, object], Activation]]


def patches_to_fwd_hooks(model: HookedTransformer, patches: Sequence[Patch]) -> list[FwdHook]:
    """TransformerLens ``(hook_name, hook_fn)`` pairs that apply ``patches`` (in order per site).

    Every activation the hooks see is read as unpadded prompt tokens (see the module docstring);
    equal to `run_with_patches` on unpadded input. Sites are validated against ``model``.
    """
    patches = list(patches)
    for patch in patches:
        if not isinstance(patch, Patch):
            raise TypeError(f"expected Patch objects, got {type(patch).__name__}: {patch!r}")
        if patch.positions == "generated":
            raise ValueError(
                f"patch at {patch.site} selects positions='generated', but a plain forward hook never sees "
                "generated tokens; use flowsteer.generate_with_patches, or positions='all'"
            )
        if isinstance(patch.intervention, FromSource):
            raise ValueError(
                f"patch at {patch.site} takes the source run's activation (FromSource), which plain hooks do "
                "not have; use flowsteer.interchange(model, base, source, patches)"
            )
    return HookSession(model, patches, positions_from_shape=True).fwd_hooks()
