"""The GRM as a LangSmith / openevals / langchain-classic evaluator, run through the real LangSmith machinery
(``langsmith.evaluate`` / ``aevaluate`` with ``upload_results=False`` over in-memory Examples: no network, no API key)
and real ``Run``/``Example`` objects. Judges: the simulated judge (an OpenAI-compatible HTTP server standing in for a
language model) and a LangChain chat-model engine built on langchain-core's own fake chat model."""

from __future__ import annotations

import asyncio
import datetime
import itertools
import uuid

import pytest

langsmith = pytest.importorskip("langsmith")
pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage  # noqa: E402
from langsmith.evaluation import EvaluationResult  # noqa: E402
from langsmith.schemas import Example, Run  # noqa: E402

from grm_plugin import GRMReward  # noqa: E402
from grm_plugin.adapters.langchain import (  # noqa: E402
    GRMPairwiseStringEvaluator,
    GRMRunEvaluator,
    GRMStringEvaluator,
    create_async_grm_evaluator,
    create_async_pairwise_grm_evaluator,
    create_grm_evaluator,
    create_pairwise_grm_evaluator,
)
from grm_plugin.templates import render_judgement  # noqa: E402
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality  # noqa: E402


@pytest.fixture(autouse=True)
def _offline_langsmith(monkeypatch):
    for name in ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY", "LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANGSMITH_TRACING", "false")


@pytest.fixture(scope="module")
def judge():
    with SimulatedJudge(noise=0.0, seed=0) as server:
        yield server


def sim(judge, **kwargs):
    return GRMReward(base_url=judge.base_url, model="sim", **{"k": 2, **kwargs})


def example(inputs, outputs):
    return Example(id=uuid.uuid4(), dataset_id=uuid.uuid4(), inputs=inputs, outputs=outputs,
                   created_at=datetime.datetime.now(datetime.timezone.utc))


def run_of(inputs, outputs):
    now = datetime.datetime.now(datetime.timezone.utc)
    return Run(id=uuid.uuid4(), name="target", start_time=now, end_time=now, run_type="chain", inputs=inputs,
               outputs=outputs, trace_id=uuid.uuid4())


# --- the openevals / LangSmith function evaluator ---------------------------------------------------------------------


def test_function_evaluator_scores_in_0_1_with_critique_and_votes(judge):
    evaluator = create_grm_evaluator(sim(judge))
    good = evaluator(inputs={"question": "2 + 3?"}, outputs={"answer": with_quality("5", 10)},
                     reference_outputs={"answer": "5"})
    bad = evaluator(inputs="2 + 3?", outputs=with_quality("6", 1))
    assert evaluator.__name__ == "grm_score" and good["key"] == "grm_score"
    assert good["score"] == 1.0 and bad["score"] == 0.0
    assert "Principles:" in good["comment"] and "Critique:" in good["comment"]
    assert good["metadata"]["votes"] == [20] and good["metadata"]["k"] == 2 and good["metadata"]["samples"] == 2


def test_langsmith_evaluate_runs_our_evaluators_offline(judge):
    """langsmith.evaluate with upload_results=False over in-memory Examples is the lowest public layer of LangSmith's
    evaluation that runs with neither network nor API key."""
    data = [example({"question": "2 + 3?"}, {"answer": "5"}), example({"question": "Capital of France?"},
                                                                      {"answer": "Paris"})]
    answers = {"2 + 3?": with_quality("5", 9), "Capital of France?": with_quality("Lyon", 2)}

    def target(inputs: dict) -> dict:
        return {"answer": answers[inputs["question"]]}

    results = langsmith.evaluate(target, data=data, upload_results=False,
                                 evaluators=[create_grm_evaluator(sim(judge), key="helpfulness")])
    rows = list(results)
    scores = {row["example"].inputs["question"]: row["evaluation_results"]["results"][0] for row in rows}
    assert scores["2 + 3?"].key == "helpfulness" and scores["2 + 3?"].score == pytest.approx(8 / 9)
    assert scores["Capital of France?"].score == pytest.approx(1 / 9)
    assert "Critique:" in scores["2 + 3?"].comment


def test_langsmith_aevaluate_runs_the_async_evaluator(judge):
    data = [example({"input": "Say hi"}, None)]

    async def target(inputs: dict) -> dict:
        return {"output": with_quality("Hi!", 7)}

    async def run():
        results = await langsmith.aevaluate(target, data=data, upload_results=False,
                                            evaluators=[create_async_grm_evaluator(sim(judge))])
        return [row async for row in results]

    [row] = asyncio.run(run())
    assert row["evaluation_results"]["results"][0].score == pytest.approx(6 / 9)


def test_inputs_and_outputs_in_every_accepted_shape(judge):
    evaluator = create_grm_evaluator(sim(judge, k=1))
    answer = with_quality("4", 8)
    shapes = [
        dict(inputs="2 + 2?", outputs=answer),
        dict(inputs={"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}]},
             outputs={"messages": [AIMessage(content=answer)]}),
        dict(inputs=[SystemMessage("Be brief."), HumanMessage("2 + 2?")], outputs=AIMessage(content=answer)),
        dict(inputs={"input": "2 + 2?"}, outputs={"output": answer}),
        dict(inputs={"prompt": "2 + 2?"}, outputs={"response": {"role": "assistant", "content": answer}}),
        # a whole conversation as outputs: the assistant turn after the last user message is judged
        dict(inputs={"question": "2 + 2?"}, outputs={"messages": [HumanMessage("2 + 2?"), AIMessage(answer)]}),
    ]
    assert [evaluator(**shape)["score"] for shape in shapes] == [pytest.approx(7 / 9)] * len(shapes)
    with pytest.raises(TypeError, match="outputs: expected a string.*got int"):
        evaluator(inputs="q", outputs=3)
    with pytest.raises(TypeError, match=r"inputs: a dict without any of the keys .* \(got keys \['a', 'b'\]\)"):
        evaluator(inputs={"a": 1, "b": 2}, outputs="x")
    with pytest.raises(TypeError, match="inputs: the GRM judges a response to an input"):
        evaluator(outputs="x")


# --- pairwise ----------------------------------------------------------------------------------------------------------


def test_pairwise_evaluator_says_which_is_better_by_how_much(judge):
    evaluator = create_pairwise_grm_evaluator(sim(judge))
    verdict = evaluator(inputs="2 + 3?", outputs=[with_quality("6", 3), with_quality("5", 9)])
    assert verdict["key"] == "grm_preference" and verdict["value"] == "B" and verdict["score"] == 0.0
    assert verdict["metadata"]["margin"] == pytest.approx((3 - 9) / 9)
    assert "Shown as: Response 1 = " in verdict["comment"]
    tie = evaluator(inputs="2 + 3?", outputs=with_quality("5", 5), outputs_b=with_quality("five", 5))
    assert tie["value"] is None and tie["score"] == 0.5
    with pytest.raises(TypeError, match="needs two outputs"):
        evaluator(inputs="q", outputs="only one")


def test_pairwise_evaluator_as_a_langsmith_comparative_evaluator(judge):
    evaluator = create_pairwise_grm_evaluator(sim(judge))
    ex = example({"question": "2 + 3?"}, {"answer": "5"})
    first, second = run_of(ex.inputs, {"answer": with_quality("5", 9)}), run_of(ex.inputs, {"answer": "7"})
    verdict = evaluator([first, second], ex)
    assert verdict["scores"] == {str(first.id): 1.0, str(second.id): 0.0}


def test_async_pairwise_evaluator(judge):
    evaluator = create_async_pairwise_grm_evaluator(sim(judge))
    verdict = asyncio.run(evaluator(inputs="q", outputs=[with_quality("a", 8), with_quality("b", 4)]))
    assert verdict["value"] == "A" and verdict["score"] == 1.0


# --- RunEvaluator ------------------------------------------------------------------------------------------------------


def test_run_evaluator_on_real_run_and_example_objects(judge):
    evaluator = GRMRunEvaluator(sim(judge), key="grm")
    ex = example({"question": "2 + 3?"}, {"answer": "5"})
    run = run_of(ex.inputs, {"output": with_quality("5", 10)})
    result = evaluator.evaluate_run(run, ex)
    assert isinstance(result, EvaluationResult) and result.key == "grm" and result.score == 1.0
    assert result.target_run_id == run.id and "Critique:" in result.comment
    again = asyncio.run(evaluator.aevaluate_run(run_of(ex.inputs, {"output": with_quality("7", 1)}), ex))
    assert again.score == 0.0
    assert isinstance(evaluator, langsmith.evaluation.RunEvaluator)


class FeedbackInMemory(langsmith.Client):
    """LangSmith's client with its feedback endpoint kept in memory (the network service is not reachable here)."""

    def __init__(self) -> None:
        super().__init__(api_key="offline", api_url="http://127.0.0.1:9", auto_batch_tracing=False)
        self.feedback: list[dict] = []

    def create_feedback(self, run_id, key, **kwargs):  # noqa: ANN001
        self.feedback.append({"run_id": run_id, "key": key, **kwargs})


def test_run_evaluator_through_langchain_cores_evaluator_callback_handler(judge):
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tracers.evaluation import EvaluatorCallbackHandler

    client = FeedbackInMemory()
    handler = EvaluatorCallbackHandler(evaluators=[GRMRunEvaluator(sim(judge), key="grm")], client=client,
                                       project_name="offline")
    chain = RunnableLambda(lambda question: with_quality("5", 9))
    chain.invoke("2 + 3?", config={"callbacks": [handler]})
    handler.wait_for_futures()
    [feedback] = client.feedback
    assert feedback["key"] == "grm" and feedback["score"] == pytest.approx(8 / 9) and "Critique:" in feedback["comment"]
    [[result]] = handler.logged_eval_results.values()
    assert result.score == pytest.approx(8 / 9)


# --- langchain-classic -------------------------------------------------------------------------------------------------


def test_classic_string_and_pairwise_evaluators(judge):
    pytest.importorskip("langchain_classic")
    from langchain_classic.evaluation.schema import PairwiseStringEvaluator, StringEvaluator

    single = GRMStringEvaluator(sim(judge))
    assert isinstance(single, StringEvaluator) and single.evaluation_name == "grm_score"
    out = single.evaluate_strings(prediction=with_quality("5", 10), input="2 + 3?", reference="5")
    assert out["score"] == 1.0 and out["value"] == 10.0 and "Critique:" in out["reasoning"]
    pair = GRMPairwiseStringEvaluator(sim(judge))
    assert isinstance(pair, PairwiseStringEvaluator)
    verdict = pair.evaluate_string_pairs(prediction=with_quality("5", 9), prediction_b=with_quality("6", 2),
                                         input="2 + 3?")
    assert verdict["value"] == "A" and verdict["score"] == 1.0 and verdict["reasoning"]
    averdict = asyncio.run(pair.aevaluate_string_pairs(prediction=with_quality("x", 1), prediction_b=with_quality(
        "y", 8), input="q"))
    assert averdict["value"] == "B"


# --- a LangChain chat model as the engine ------------------------------------------------------------------------------


def test_evaluator_with_a_langchain_chat_model_engine():
    fake = GenericFakeChatModel(messages=itertools.repeat(AIMessage(
        render_judgement("Correctness (100%)", "The response is right.", [9], "boxed"))))
    evaluator = create_grm_evaluator(GRMReward(chat_model=fake, k=2), key="fake_judge")
    verdict = evaluator(inputs="2 + 3?", outputs="5")
    assert verdict["score"] == pytest.approx(8 / 9) and verdict["metadata"]["votes"] == [18]
    assert "The response is right." in verdict["comment"]


def test_the_langsmith_example_runs_offline_with_the_embedded_judge(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "langsmith_eval.py"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRM_", "LANGSMITH_", "LANGCHAIN_"))}
    env.update(LANGSMITH_TRACING="false", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [x for x in result.stdout.splitlines() if ": helpfulness " in x]
    assert len(lines) == 3 and all("votes [" in x for x in lines)  # guaranteed format: every example got a vote
