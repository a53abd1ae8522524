"""SAEs: a SAELens-compatible bank, multi-site training from one activation pass, and quality metrics."""

from flowsteer.saes.bank import SAEBank, SAEBankError
from flowsteer.saes.default import bank_cache_path, default_bank
from flowsteer.saes.metrics import BankMetrics, ce_losses, evaluate_bank, metrics_markdown, reconstruction_metrics
from flowsteer.saes.splice import SAEReconstruction
from flowsteer.saes.trainable import LensTrainable, SparseTopK
from flowsteer.saes.training import ARCHITECTURES, SAETrainingConfig, train_saes

__all__ = [
    "ARCHITECTURES",
    "BankMetrics",
    "LensTrainable",
    "SAEBank",
    "SAEBankError",
    "SAEReconstruction",
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
