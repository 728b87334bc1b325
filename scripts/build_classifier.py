"""Build the content classifier's weights from the public corpora (pipeline/data/classifier/README.md).

    .venv/bin/python scripts/build_classifier.py --cold DIR --swsr DIR --telefraud DIR --kdconv DIR --crosswoz DIR

Each DIR is a checkout of the corpus's repository at the commit the README names. Writes
pipeline/data/classifier/model.tsv and the held-out sample tests/data/classifier_heldout.tsv
(never trained on: a split by a hash of each item's id, and COLD's own test split).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import sys
import time
import zipfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.detectors.content.classifier import MODEL_FILE  # noqa: E402
from pipeline.review.learn import Example, train  # noqa: E402

HELDOUT = ROOT / "tests" / "data" / "classifier_heldout.tsv"
PER_SOURCE_TRAIN = {"telefraud": 9000, "telenormal": 9000, "cold": 14000, "swsr": 7000, "kdconv": 12000,
                    "crosswoz": 12000}
PER_SOURCE_HELDOUT = {"telefraud": 700, "telenormal": 700, "cold": 900, "swsr": 500, "kdconv": 600, "crosswoz": 600}


def held_out(key: str) -> bool:
    return hashlib.sha1(key.encode()).digest()[0] < 51  # a fifth


def cold(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    train_rows, test_rows = [], []
    for name in ("train", "dev", "test"):
        with (root / "COLDataset" / f"{name}.csv").open(encoding="utf-8-sig") as f:
            for row in csv.DictReader(f):
                item = ("cold", "insult" if row["label"] == "1" else "", row["TEXT"].strip())
                (test_rows if name == "test" else train_rows).append(item)
    return train_rows, test_rows


def swsr(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    train_rows, test_rows = [], []
    with (root / "SWSR" / "SexComment.csv").open(encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            item = ("swsr", "insult" if row["label"] == "1" else "", row["comment_text"].strip())
            (test_rows if held_out("swsr" + row["index"]) else train_rows).append(item)
    return train_rows, test_rows


def telefraud(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """The caller's turns of fraud dialogues (the fraudster speaks first, as "left"); every turn of
    the ordinary service dialogues."""
    train_rows, test_rows = [], []
    base = root / "multi-agents-tools"
    for path in sorted(base.glob("AntiFraudMatrix*/results/*/*.json")):
        normal = "normal" in path.parent.name
        try:
            turns = orjson.loads(path.read_bytes())["dialogue_history"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
        rel = str(path.relative_to(root))
        for t in turns:
            text = (t.get("content") or "").strip()
            if not text or (not normal and t.get("role") != "left"):
                continue
            item = ("telenormal" if normal else "telefraud", "" if normal else "fraud", text)
            (test_rows if held_out(rel) else train_rows).append(item)
    return train_rows, test_rows


def kdconv(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Ordinary conversation about films, music and travel: dev for training, test held out."""
    out: dict[str, list[tuple[str, str, str]]] = {"dev": [], "test": []}
    for split in out:
        for path in sorted((root / "data").glob(f"*/{split}.json")):
            for dialogue in orjson.loads(path.read_bytes()):
                out[split] += [("kdconv", "", m["message"].strip()) for m in dialogue["messages"] if m.get("message")]
    return out["dev"], out["test"]


def crosswoz(root: Path) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]]]:
    """Task dialogues (hotels, restaurants, metro: telephone numbers and addresses in ordinary use):
    val for training, test held out."""
    out: dict[str, list[tuple[str, str, str]]] = {"val": [], "test": []}
    for split in out:
        with zipfile.ZipFile(root / "data" / "crosswoz" / f"{split}.json.zip") as z:
            data = orjson.loads(z.read(f"{split}.json"))
        for dialogue in data.values():
            out[split] += [("crosswoz", "", m["content"].strip()) for m in dialogue["messages"] if m.get("content")]
    return out["val"], out["test"]


def sample(rows: list[tuple[str, str, str]], limits: dict[str, int], rng: random.Random) -> list[tuple[str, str, str]]:
    out = []
    for source, limit in limits.items():
        mine = sorted({r for r in rows if r[0] == source})
        rng.shuffle(mine)
        out += mine[:limit]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold", type=Path, required=True)
    ap.add_argument("--swsr", type=Path, required=True)
    ap.add_argument("--telefraud", type=Path, required=True)
    ap.add_argument("--kdconv", type=Path, required=True)
    ap.add_argument("--crosswoz", type=Path, required=True)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    rng = random.Random(20261202)
    train_rows: list[tuple[str, str, str]] = []
    test_rows: list[tuple[str, str, str]] = []
    for load, root in ((cold, args.cold), (swsr, args.swsr), (telefraud, args.telefraud), (kdconv, args.kdconv),
                       (crosswoz, args.crosswoz)):
        a, b = load(root)
        train_rows += a
        test_rows += b
    train_rows = sample(train_rows, PER_SOURCE_TRAIN, rng)
    test_rows = sample(test_rows, PER_SOURCE_HELDOUT, rng)
    started = time.monotonic()
    model = train([Example(text, label) for _, label, text in train_rows], ["fraud", "insult"], epochs=args.epochs)
    counts = {s: sum(1 for r in train_rows if r[0] == s) for s in PER_SOURCE_TRAIN}
    model.dump(MODEL_FILE, header=[
        "qunguard content classifier: class, folded character n-gram, weight (logistic regression)",
        "trained by scripts/build_classifier.py on " + ", ".join(f"{s} {n}" for s, n in counts.items()),
        "sources and licences: pipeline/data/classifier/README.md"])
    with HELDOUT.open("w", encoding="utf-8") as f:
        f.write("# held out from scripts/build_classifier.py (source, class, text); never trained on\n")
        for source, label, text in test_rows:
            f.write(f"{source}\t{label}\t{' '.join(text.split())}\n")
    print(f"trained on {len(train_rows)} in {time.monotonic() - started:.0f}s; "
          f"{sum(len(w) for w in model.weights.values())} weights; held out {len(test_rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
