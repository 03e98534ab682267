"""Measure revocation detection on the labelled replies in tests/data/revocation_messages.yaml.

A message counts as detected when ``classify`` returns STOP or REVIEW (no OptOutType: the
bridge must find revocations on its own). Prints precision, recall, every misclassified
message and the mean classification time, so the README can quote measured numbers.

    python bench/phrase_eval.py                 # every shipped language
    python bench/phrase_eval.py --languages en  # an English-only project
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bridge.config import KeywordConfig  # noqa: E402
from bridge.consent import KEYWORDS_DIR, Intent, classify, load_keyword_sets  # noqa: E402

LABELS = ROOT / "tests" / "data" / "revocation_messages.yaml"
DETECTED = {Intent.STOP, Intent.REVIEW}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--languages",
        default=",".join(sorted(p.stem for p in KEYWORDS_DIR.glob("*.yaml"))),
        help="comma-separated keyword languages (default: all shipped)",
    )
    args = parser.parse_args()
    languages = tuple(code for code in args.languages.split(",") if code)
    keywords = load_keyword_sets(KeywordConfig(languages=languages))
    messages = yaml.safe_load(LABELS.read_text(encoding="utf-8"))["messages"]

    missed, false_alarms, true_positives = [], [], 0
    for message in messages:
        intent = classify(message["text"], None, keywords)
        detected = intent in DETECTED
        if detected and message["revocation"]:
            true_positives += 1
        elif detected:
            false_alarms.append((message["text"], intent))
        elif message["revocation"]:
            missed.append((message["text"], intent))

    positives = sum(1 for m in messages if m["revocation"])
    flagged = true_positives + len(false_alarms)
    precision = true_positives / flagged if flagged else 1.0
    recall = true_positives / positives if positives else 1.0

    rounds = 20
    began = time.perf_counter()
    for _ in range(rounds):
        for message in messages:
            classify(message["text"], None, keywords)
    per_message_us = (time.perf_counter() - began) / (rounds * len(messages)) * 1e6

    print(f"languages: {', '.join(languages)}")
    print(f"messages: {len(messages)} ({positives} revocations, {len(messages) - positives} not)")
    print(f"precision: {precision:.3f} ({true_positives}/{flagged})")
    print(f"recall:    {recall:.3f} ({true_positives}/{positives})")
    print(f"mean classify time: {per_message_us:.1f} µs")
    print(f"\nfalse alarms ({len(false_alarms)}):")
    for text, intent in false_alarms:
        print(f"  {intent.value:6} {text!r}")
    print(f"\nmissed revocations ({len(missed)}):")
    for text, intent in missed:
        print(f"  {intent.value:6} {text!r}")


if __name__ == "__main__":
    main()
