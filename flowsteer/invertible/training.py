"""`fit`: the small, seeded training loop shared by every map (progress bar, early stopping)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from flowsteer.invertible.iresnet import refresh_spectral_norms

LossFn = Callable[[Tensor], tuple[Tensor, dict[str, float]]]


@dataclass
class TrainConfig:
    """Optimiser and loop settings (AdamW; gradient clipping; early stopping on validation loss).

    ``eval_every`` steps the validation loss is measured; after ``patience`` evaluations without a
    new best the loop stops, and the best parameters are restored in any case.
    """

    steps: int = 200
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    eval_every: int = 20
    patience: int = 5
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_every", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")


@dataclass
class History:
    """What happened: losses per step, validation losses, the best step, wall time."""

    train: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    best_step: int = 0
    best_val: float = float("inf")
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def initial_val(self) -> float:
        return self.val[0]["loss"]

    def to_dict(self) -> dict:
        return asdict(self)


def _batches(n: int, size: int, generator: torch.Generator):
    """Index batches over shuffled epochs, forever."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - min(size, n) + 1, min(size, n)):
            yield order[start : start + size]


def fit(
    module: nn.Module,
    loss_fn: LossFn,
    n_train: int,
    val_loss: Callable[[], float],
    config: TrainConfig,
    desc: str = "train",
) -> History:
    """Minimise ``loss_fn(indices)`` over the trainable parameters of ``module``.

    ``loss_fn`` gets a batch of training-example indices and returns ``(loss, parts)`` (parts are
    logged floats). ``val_loss()`` runs in eval mode without gradients. The best parameters (lowest
    validation loss, step 0 included) are restored at the end; spectral norms are made exact before
    each validation (`refresh_spectral_norms`).
    """
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("nothing to train: the module has no parameters that require grad")
    if n_train < 1:
        raise ValueError("no training examples")
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    history = History()
    start = time.perf_counter()

    def evaluate(step: int) -> bool:
        refresh_spectral_norms(module)  # validate (and keep) weights that meet their Lipschitz bounds
        module.eval()
        with torch.no_grad():
            value = float(val_loss())
        history.val.append({"step": step, "loss": value})
        improved = value < history.best_val
        if improved:
            history.best_val, history.best_step = value, step
            best.update({k: v.detach().clone() for k, v in module.state_dict().items()})
        return improved

    best: dict[str, Tensor] = {}
    evaluate(0)
    stale = 0
    batches = _batches(n_train, config.batch_size, generator)
    bar = tqdm(range(1, config.steps + 1), desc=desc, disable=not config.progress, leave=False)
    for step in bar:
        module.train()
        loss, parts = loss_fn(next(batches))
        if not bool(torch.isfinite(loss.detach())):
            raise FloatingPointError(f"{desc}: loss is {float(loss.detach())} at step {step}; lower the learning rate")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimiser.step()
        history.train.append({"step": step, "loss": float(loss.detach()), **parts})
        bar.set_postfix(loss=f"{history.train[-1]['loss']:.4g}", best_val=f"{history.best_val:.4g}")
        if step % config.eval_every == 0 or step == config.steps:
            stale = 0 if evaluate(step) else stale + 1
            if stale >= config.patience:
                history.stopped_early = True
                break
    bar.close()
    module.load_state_dict(best)
    module.eval()
    history.seconds = time.perf_counter() - start
    return history
