"""Evaluate a small dataset with the GRM as a LangSmith evaluator, offline.

`langsmith.evaluate(..., upload_results=False)` over in-memory examples needs neither network nor API key. The judge
is the embedded SmolLM2 smoke-test judge by default (its scores are not meaningful); point it at a real one with
`--judge-url http://host:8000/v1 --judge-model BBQGOD/DeepSeek-GRM-27B`. With a LangSmith API key, drop
`upload_results=False` and pass a dataset name to keep the experiment in LangSmith.

    python examples/langsmith_eval.py
"""

from __future__ import annotations

import argparse
import datetime
import uuid

from langsmith import evaluate
from langsmith.schemas import Example

from grm_plugin import GRMReward
from grm_plugin.adapters.langchain import create_grm_evaluator

DATASET = [
    ({"question": "What is 12 * 12?"}, {"answer": "144"}),
    ({"question": "Name the largest planet in the solar system."}, {"answer": "Jupiter"}),
    ({"question": "Give one tip for sleeping better."}, None),
]
APP_ANSWERS = {  # the "application" under evaluation: canned answers, one of them wrong
    "What is 12 * 12?": "12 * 12 = 144.",
    "Name the largest planet in the solar system.": "Saturn is the largest planet.",
    "Give one tip for sleeping better.": "Keep the same wake-up time every day, weekends included.",
}


def app(inputs: dict) -> dict:
    return {"answer": APP_ANSWERS[inputs["question"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description="LangSmith evaluation with the GRM as evaluator (offline).")
    parser.add_argument("--judge-url", default=None)
    parser.add_argument("--judge-model", default=None)
    parser.add_argument("--k", type=int, default=1)
    args = parser.parse_args()

    judge = {"base_url": args.judge_url, "model": args.judge_model} if args.judge_url else {"max_tokens": 128}
    evaluator = create_grm_evaluator(GRMReward(k=args.k, **judge), key="helpfulness")
    now = datetime.datetime.now(datetime.timezone.utc)
    dataset_id = uuid.uuid4()
    examples = [Example(id=uuid.uuid4(), dataset_id=dataset_id, inputs=inputs, outputs=outputs, created_at=now)
                for inputs, outputs in DATASET]
    results = evaluate(app, data=examples, evaluators=[evaluator], upload_results=False, max_concurrency=1)
    for row in results:
        [verdict] = row["evaluation_results"]["results"]
        score = "none" if verdict.score is None else f"{verdict.score:.2f}"
        print(f"{row['example'].inputs['question']!r}: helpfulness {score}, votes {verdict.metadata['votes']}")


if __name__ == "__main__":
    main()
