"""SAEs: a SAELens-compatible bank, multi-site training from one activation pass, and quality metrics.

Training is in parts that `train_saes` composes and sweeps reuse: `SAETrainingConfig` (settings), `activations`
(`ActivationRounds` harvests rounds from the model, `CachedRounds` serves activations held in memory), `SAEStepper`
(the SAEs and their fused optimiser: the step, dead latents, scales, checkpoint state, export), and `metrics`
(`evaluate_bank`)."""

from flowsteer.saes.bank import SAEBank, SAEBankError
from flowsteer.saes.config import ARCHITECTURES, SAETrainingConfig
from flowsteer.saes.default import bank_cache_path, default_bank
from flowsteer.saes.metrics import BankMetrics, ce_losses, evaluate_bank, metrics_markdown, reconstruction_metrics
from flowsteer.saes.splice import SAEReconstruction
from flowsteer.saes.stepper import SAEStepper
from flowsteer.saes.trainable import LensTrainable, SparseTopK
from flowsteer.saes.training import train_saes

__all__ = [
    "ARCHITECTURES",
    "BankMetrics",
    "LensTrainable",
    "SAEBank",
    "SAEBankError",
    "SAEReconstruction",
    "SAEStepper",
    "SAETrainingConfig",
    "SparseTopK",
    "bank_cache_path",
    "ce_losses",
    "default_bank",
    "evaluate_bank",
    "metrics_markdown",
    "reconstruction_metrics",
    "train_saes",
]
