"""A small theme classifier built from the project's own texts: TF-IDF words, softmax regression.

The behavioural score of a text for a theme is the classifier's probability of that theme among all
themes and ``neutral``. It is trained on ``data/themes`` (no model hub, no external data) with
L-BFGS on an L2-penalised cross-entropy; words are lower-cased alphabetic tokens with a plural
``s`` stripped, weighted by log(1 + tf) x idf and L2-normalised per text.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

WORD = re.compile(r"[a-z]+")


def words(text: str) -> list[str]:
    """Lower-cased alphabetic words, a trailing plural ``s`` stripped (``rings`` -> ``ring``)."""
    found = WORD.findall(text.lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in found]


class ThemeClassifier:
    """Softmax regression on TF-IDF word features; `probability(texts, theme)` is the behaviour score."""

    def __init__(self, l2: float = 1e-3, min_count: int = 1):
        self.l2, self.min_count = l2, min_count
        self.classes: list[str] = []
        self.vocab: dict[str, int] = {}
        self.idf = torch.zeros(0)
        self.weight = torch.zeros(0, 0)
        self.bias = torch.zeros(0)

    def features(self, texts: Sequence[str]) -> Float[Tensor, "n vocab"]:
        x = torch.zeros(len(texts), len(self.vocab))
        for row, text in enumerate(texts):
            for word, count in Counter(words(text)).items():
                if word in self.vocab:
                    x[row, self.vocab[word]] = math.log1p(count)
        x = x * self.idf
        return x / x.norm(dim=1, keepdim=True).clamp_min(1e-9)

    def fit(self, texts_by_class: Mapping[str, Sequence[str]]) -> ThemeClassifier:
        self.classes = sorted(texts_by_class)
        if len(self.classes) < 2:
            raise ValueError("the classifier needs texts of at least two classes")
        texts = [t for c in self.classes for t in texts_by_class[c]]
        labels = torch.tensor([i for i, c in enumerate(self.classes) for _ in texts_by_class[c]])
        document_counts = Counter(w for t in texts for w in set(words(t)))
        kept = sorted(w for w, n in document_counts.items() if n >= self.min_count)
        self.vocab = {w: i for i, w in enumerate(kept)}
        self.idf = torch.tensor([math.log((1 + len(texts)) / (1 + document_counts[w])) + 1 for w in kept])
        x = self.features(texts)
        weight = torch.zeros(len(kept), len(self.classes), requires_grad=True)
        bias = torch.zeros(len(self.classes), requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(x @ weight + bias, labels) + self.l2 * weight.square().sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weight, self.bias = weight.detach(), bias.detach()
        return self

    def probabilities(self, texts: Sequence[str]) -> Float[Tensor, "n classes"]:
        if not self.classes:
            raise RuntimeError("fit the classifier first")
        return (self.features(texts) @ self.weight + self.bias).softmax(-1)

    def probability(self, texts: Sequence[str], theme: str) -> Float[Tensor, " n"]:
        """P(theme | text) for each text: the behavioural score in [0, 1]."""
        if theme not in self.classes:
            raise KeyError(f"unknown theme {theme!r}; the classifier knows {', '.join(self.classes)}")
        return self.probabilities(texts)[:, self.classes.index(theme)]


def cross_validated_accuracy(texts_by_class: Mapping[str, Sequence[str]], folds: int = 5, **options) -> float:
    """Accuracy of `ThemeClassifier` on held-out texts, k-fold by position within each class."""
    correct = total = 0
    for fold in range(folds):
        train = {c: [t for i, t in enumerate(ts) if i % folds != fold] for c, ts in texts_by_class.items()}
        test = {c: [t for i, t in enumerate(ts) if i % folds == fold] for c, ts in texts_by_class.items()}
        model = ThemeClassifier(**options).fit(train)
        for c, ts in test.items():
            if ts:
                predicted = model.probabilities(ts).argmax(-1)
                correct += int((predicted == model.classes.index(c)).sum())
                total += len(ts)
    return correct / total
