"""Training the content classifier (pipeline/detectors/content/classifier.py), from a labelled
corpus and from the review loop's verdicts (`qunguard learn`).

Logistic regression per class, one against the rest, by AdaGrad over the n-grams present, with an
L2 pull towards a prior model: the shipped weights when retraining from verdicts, so that a few
hundred reviewed messages move the weights they are about and leave the rest where the public
corpora put them (a prior-centred penalty, the usual way to adapt a linear model with little data).
Deterministic: the same examples give the same weights.

What `qunguard learn` reads is ClickHouse's `labelled_examples` view (review loop): a confirmed
content finding is a positive example of its rule's class, a withdrawn one a negative example of
that class. Only classes the model has are learned; other rules' verdicts are left out.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.detectors.content.classifier import BIAS, Model, features, scale_of
from pipeline.text.normalize import fold

MIN_WEIGHT = 0.02  # weights nearer zero are left out of the file: they change no decision


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str  # a class, or "" for none of them
    only: str | None = None  # a verdict's class: the example teaches that class alone


def train(examples: Sequence[Example], labels: Iterable[str], prior: Model | None = None, epochs: int = 6,
          rate: float = 0.5, l2: float = 1e-5, seed: int = 0, max_features: int = 20_000) -> Model:
    folded = [(fold(e.text), e) for e in examples if e.text]
    docs = [(features(f), scale_of(f), e.label, e.only) for f, e in folded]
    weights: dict[str, dict[str, float]] = {}
    for label in sorted(set(labels)):
        base = dict(prior.weights.get(label, {})) if prior is not None else {}
        mine = [(f, x, 1.0 if lab == label else 0.0) for f, x, lab, only in docs if only in (None, label)]
        positives = sum(y for _, _, y in mine)
        if not mine or positives == 0 and not base:
            continue
        weights[label] = _fit(mine, base, epochs, rate, l2, random.Random(seed), max_features)
    return Model(weights, "trained")


def _fit(docs: list[tuple[set[str], float, float]], prior: dict[str, float], epochs: int, rate: float,
         l2: float, rng: random.Random, max_features: int) -> dict[str, float]:
    w = dict(prior)
    squares: dict[str, float] = {}
    order = list(range(len(docs)))
    for _ in range(epochs):
        rng.shuffle(order)
        for i in order:
            grams, x, y = docs[i]
            z = w.get(BIAS, 0.0) + x * sum(w.get(g, 0.0) for g in grams)
            p = 1.0 / (1.0 + math.exp(-z)) if z >= -30 else 0.0
            if p == y:
                continue
            for f in grams:
                _step(w, squares, prior, f, (p - y) * x, rate, l2)
            _step(w, squares, prior, BIAS, p - y, rate, l2)
    kept = sorted(((f, v) for f, v in w.items() if f == BIAS or abs(v) >= MIN_WEIGHT),
                  key=lambda kv: (kv[0] != BIAS, -abs(kv[1])))
    return dict(kept[:max_features])


def _step(w: dict[str, float], squares: dict[str, float], prior: dict[str, float], f: str, g: float,
          rate: float, l2: float) -> None:
    """One AdaGrad step on one weight, with the pull towards its prior."""
    s = squares[f] = squares.get(f, 1e-6) + g * g
    old = w.get(f, 0.0)
    w[f] = old - rate * (g / math.sqrt(s) + l2 * (old - prior.get(f, 0.0)))


def verdict_examples(reviewed: Iterable[Sequence[object]], labels: Iterable[str]) -> list[Example]:
    """Reviewed content findings (org, rule, evidence, text, status; queries.reviewed_content) as
    examples for the classes the model has: confirmed → the class, withdrawn → not the class."""
    known = set(labels)
    out = []
    for _org, rule, _evidence, text, status in reviewed:
        label = str(rule).removeprefix("content.")
        if label in known and text:
            out.append(Example(str(text), label if status == "confirmed" else "", only=label))
    return out


def relearn(prior: Model, examples: Sequence[Example],
            epochs: int = 20) -> tuple[Model, list[tuple[Example, float, float]]]:
    """The prior model moved by the verdicts; with each example's score before and after."""
    labels = sorted({e.only or e.label for e in examples} & set(prior.labels))
    moved = train(examples, labels, prior=prior, epochs=epochs, l2=0.05)
    # the classes no verdict was about stay as they were (a Model indexes its weights when made)
    model = Model({**prior.weights, **moved.weights}, moved.source)
    changes = []
    for e in examples:
        label = e.only or e.label
        before = prior.score(fold(e.text), [label])
        after = model.score(fold(e.text), [label])
        if before and after:
            changes.append((e, before[0].probability, after[0].probability))
    return model, changes
