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


def scale_of(n: int) -> float:
    """Each present n-gram's value: 1/√n, so that a long text is not a scam for its many small weights."""
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

    @property
    def labels(self) -> list[str]:
        return sorted(self.weights)

    def score(self, folded: str, labels: Iterable[str] | None = None) -> list[Score]:
        grams = features(folded) if folded else set()
        out = []
        for label in labels if labels is not None else self.labels:
            w = self.weights.get(label)
            if w is None:
                continue
            scale = scale_of(len(grams))
            present = [(g, w[g] * scale) for g in grams if g in w]
            z = w.get(BIAS, 0.0) + sum(v for _, v in present)
            top = sorted((p for p in present if p[1] > 0), key=lambda p: (-p[1], p[0]))[:EXPLAIN]
            out.append(Score(label, _sigmoid(z), tuple(top)))
        return out

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

