"""Text classifiers and their accuracy: a small TF-IDF softmax-regression classifier, and k-fold accuracy of any
classifier (one definition, used for the theme classifier and the sentiment probe).

The behavioural score of a text for a theme is the classifier's probability of that theme among all
themes and ``neutral``. It is trained on ``data/themes`` (no model hub, no external data) with
L-BFGS on an L2-penalised cross-entropy; words are lower-cased alphabetic tokens with a plural
``s`` stripped, weighted by log(1 + tf) x idf and L2-normalised per text.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from flowsteer.evals.text import words


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


def stratified_folds(labels: Sequence, folds: int, seed: int | None = None) -> list[int]:
    """The fold of each item: within each label, items go round-robin to the folds (after a seeded shuffle when
    ``seed`` is given), so every fold holds every label in proportion."""
    order = list(range(len(labels)))
    if seed is not None:
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist()
    fold_of, seen = [0] * len(labels), Counter()
    for i in order:
        fold_of[i] = seen[labels[i]] % folds
        seen[labels[i]] += 1
    return fold_of


def cross_validated_accuracy(
    items: Sequence,
    labels: Sequence,
    fit: Callable[[list, list], Callable[[list], Sequence]],
    *,
    folds: int = 5,
    seed: int | None = None,
) -> float:
    """Held-out accuracy of a classifier over stratified k folds: ``fit(train_items, train_labels)`` returns a
    ``predict(items) -> labels`` function, scored on the fold it did not see."""
    if len(items) != len(labels):
        raise ValueError(f"{len(items)} items but {len(labels)} labels")
    fold_of = stratified_folds(labels, folds, seed)
    correct = 0
    for fold in range(folds):
        train = [i for i, f in enumerate(fold_of) if f != fold]
        test = [i for i, f in enumerate(fold_of) if f == fold]
        if not test:
            continue
        predict = fit([items[i] for i in train], [labels[i] for i in train])
        predicted = predict([items[i] for i in test])
        correct += sum(p == labels[i] for p, i in zip(predicted, test, strict=True))
    return correct / len(items)


def theme_classifier_accuracy(texts_by_class: Mapping[str, Sequence[str]], folds: int = 5, **options) -> float:
    """`cross_validated_accuracy` of `ThemeClassifier` on ``{class: texts}``."""
    texts = [text for name in sorted(texts_by_class) for text in texts_by_class[name]]
    labels = [name for name in sorted(texts_by_class) for _ in texts_by_class[name]]

    def fit(train_texts: list, train_labels: list):
        by_class: dict[str, list[str]] = {}
        for text, label in zip(train_texts, train_labels, strict=True):
            by_class.setdefault(label, []).append(text)
        model = ThemeClassifier(**options).fit(by_class)
        return lambda batch: [model.classes[i] for i in model.probabilities(batch).argmax(-1).tolist()]

    return cross_validated_accuracy(texts, labels, fit, folds=folds)
