"""Cost of the whole content rule set beside tokenization, on simulated messages.

In one run, on the same messages:
  - bare `jieba.lcut` on every text (the tokenization the pipeline does anyway);
  - the full content check (ContentDetector.on_event: every content rule and quiet hours);
  - matching the lexicon: the Aho-Corasick automaton against a naive regular-expression
    alternation of the same terms, both over the same normalised texts.
Last line: ratio=R, R = jieba time / (jieba time + content time): 1.0 means the content check is
free, 0.8 means it adds 25% on top of tokenization. A benchmark: it prints, it asserts nothing.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jieba  # noqa: E402

from pipeline.detectors import Context  # noqa: E402
from pipeline.detectors.content.detector import ContentDetector  # noqa: E402
from pipeline.detectors.content.lexicon import matcher_for  # noqa: E402
from pipeline.devtools.simulate import Simulator  # noqa: E402
from pipeline.policy import Policy  # noqa: E402
from pipeline.text.normalize import fold  # noqa: E402
from pipeline.text.tokenize import get_tokenizer  # noqa: E402
from schemas.records import validate_event  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()

    sim = Simulator(orgs=4, groups=400, members=15, seed=args.seed)
    events = []
    for ev in sim.events(10**9):
        if ev["kind"] == "message":
            events.append(validate_event(ev))
            if len(events) >= args.messages:
                break
    texts = [e["text"] for e in events]
    print(f"data: {len(events):,} simulated messages, {len(set(texts)) / len(texts):.0%} distinct texts")

    jieba.initialize()
    t_jieba = timed(lambda: [jieba.lcut(t) for t in texts])
    print(f"bare jieba.lcut: {len(texts) / t_jieba:,.0f} messages/s")

    policy = Policy()
    detector = ContentDetector(policy)
    # Start-up work outside the timing, as in the worker: the automaton, and the tokenizer that
    # checks word boundaries for ambiguous terms (loading jieba's dictionary takes about a second).
    detector.on_event(events[0], None, Context(0))
    get_tokenizer()
    found = []
    t_content = timed(lambda: found.extend(f for e in events for f in detector.on_event(e, None, Context(0)).findings))
    print(f"content check (all rules): {len(texts) / t_content:,.0f} messages/s, {len(found):,} findings")
    seen: set[str] = set()
    distinct = [e for e in events if not (e["text"] in seen or seen.add(e["text"]))]
    cold = ContentDetector(policy)
    t_cold = timed(lambda: [cold.on_event(e, None, Context(0)) for e in distinct])
    print(f"content check on distinct texts only (no repeat to remember): {len(distinct) / t_cold:,.0f} messages/s")

    matcher = matcher_for(policy.default.lexicon, policy.base_dir)
    terms = sorted({k for k in matcher._auto.keys()}, key=len, reverse=True)  # noqa: SLF001
    folded = [fold(t) for t in texts]
    alternation = re.compile("|".join(map(re.escape, terms)))
    t_auto = timed(lambda: [matcher.scan(f) for f in folded])
    t_regex = timed(lambda: [alternation.findall(f) for f in folded])
    print(f"lexicon of {len(terms):,} terms: automaton {len(folded) / t_auto:,.0f} messages/s, "
          f"naive regex alternation {len(folded) / t_regex:,.0f} messages/s ({t_regex / t_auto:.1f}x slower)")
    print(f"jieba + content: {len(texts) / (t_jieba + t_content):,.0f} messages/s")
    print(f"ratio={t_jieba / (t_jieba + t_content):.2f}")


if __name__ == "__main__":
    main()
