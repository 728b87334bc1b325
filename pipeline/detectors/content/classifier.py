"""The statistical side of the content rules: a linear text classifier per class (one-vs-rest
logistic regression over the character 2–3-grams of the folded text).

A lexicon of terms and the cue combinations see what is written in the words someone listed; a
scam or an insult in ordinary words needs weights learned from labelled text. The model is a plain
data file (pipeline/data/classifier/model.tsv: class, n-gram, weight; `<bias>` per class), never
a pickle, so a reviewer can read why a message scored as it did: the decision is the sum of the
weights of the n-grams present, and the evidence names the n-grams that weighed most.

Where the weights come from (pipeline/data/classifier/README.md) and how verdicts retrain them
(`qunguard learn`, pipeline/review/learn.py) are written beside the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import ahocorasick

MODEL_FILE = Path(__file__).resolve().parents[2] / "data" / "classifier" / "model.tsv"
BIAS = "<bias>"
MAX_N = 3
EXPLAIN = 5  # n-grams named in a finding's evidence


def features(folded: str) -> set[str]:
    """The distinct character 2–3-grams of a folded text (fold: pipeline/text/normalize.py); a
    lone character is too weak a sign to weigh."""
    out: set[str] = set()
    for n in range(2, MAX_N + 1):
        out.update(folded[i:i + n] for i in range(len(folded) - n + 1))
    return out


def scale_of(folded: str) -> float:
    """Each present n-gram's value: 1/√(the text's 2- and 3-grams), so that a long text is not a
    scam for its many small weights. Counted from the length, repeats included, so that the check
    need not build the text's n-grams at all (it finds the model's in one automaton pass)."""
    n = max(0, len(folded) - 1) + max(0, len(folded) - 2)
    return 1.0 / math.sqrt(n) if n else 0.0


@dataclass(frozen=True, slots=True)
class Score:
    label: str
    probability: float
    ngrams: tuple[tuple[str, float], ...]  # the n-grams that weighed most towards the class

    def evidence(self, threshold: float) -> dict[str, object]:
        return {"class": self.label, "score": round(self.probability, 3), "threshold": threshold,
                "ngrams": [[g, round(w, 2)] for g, w in self.ngrams]}


class Model:
    def __init__(self, weights: Mapping[str, Mapping[str, float]], source: str = "") -> None:
        self.weights = {label: dict(w) for label, w in weights.items()}
        self.source = source
        # One lookup per n-gram for every class at once: the check runs on every message.
        order = self.labels
        self._index = {label: i for i, label in enumerate(order)}
        self._bias = [self.weights[label].get(BIAS, 0.0) for label in order]
        table: dict[str, list[float]] = {}
        for i, label in enumerate(order):
            for g, v in self.weights[label].items():
                if g != BIAS:
                    table.setdefault(g, [0.0] * len(order))[i] = v
        self._auto = ahocorasick.Automaton()
        for g, row in table.items():
            self._auto.add_word(g, (g, tuple(row)))
        if table:
            self._auto.make_automaton()

    @property
    def labels(self) -> list[str]:
        return sorted(self.weights)

    def probabilities(self, folded: str) -> dict[str, float]:
        """Every class's probability for one folded text."""
        sums = [0.0] * len(self._bias)
        if folded and self._auto.kind == ahocorasick.AHOCORASICK:
            present = dict(item for _, item in self._auto.iter(folded))  # each n-gram once
            for row in present.values():
                for i, v in enumerate(row):
                    sums[i] += v
        scale = scale_of(folded)
        return {label: _sigmoid(self._bias[i] + scale * sums[i]) for label, i in self._index.items()}

    def explain(self, folded: str, label: str) -> tuple[tuple[str, float], ...]:
        """The n-grams that weighed most towards `label`, with their share of the decision."""
        w = self.weights[label]
        scale = scale_of(folded)
        present = [(g, w[g] * scale) for g in features(folded) if w.get(g, 0.0) > 0]
        return tuple(sorted(present, key=lambda p: (-p[1], p[0]))[:EXPLAIN])

    def score(self, folded: str, labels: Iterable[str] | None = None) -> list[Score]:
        probs = self.probabilities(folded)
        return [Score(label, probs[label], self.explain(folded, label))
                for label in (labels if labels is not None else self.labels) if label in probs]

    def dump(self, path: Path, header: Iterable[str] = ()) -> None:
        lines = [f"# {h}" for h in header]
        for label in self.labels:
            for g, v in sorted(self.weights[label].items(), key=lambda kv: (kv[0] != BIAS, -abs(kv[1]), kv[0])):
                lines.append(f"{label}\t{g}\t{v:.4f}")  # folded n-grams hold no tab, space or newline
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(path)


def load(path: Path) -> Model:
    """A model file; a malformed line stops with its file and line number."""
    weights: dict[str, dict[str, float]] = {}
    header = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            header.append(line[1:].strip())
            continue
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            label, gram, value = parts
            weights.setdefault(label, {})[gram] = float(value)
        except ValueError:
            raise ValueError(f"{path}:{n}: expected class, n-gram and weight separated by tabs") from None
    return Model(weights, "; ".join(header))


@lru_cache(maxsize=8)
def model_at(path: str) -> Model:
    return load(Path(path))


def default_model() -> Model:
    return model_at(str(MODEL_FILE))


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)

