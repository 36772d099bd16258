"""Judge with a LangChain chat model: ChatOpenAI pointed at the simulated judge, so it runs anywhere.

    pip install -e ".[server,langchain]" langchain-openai
    python examples/langchain_judge.py

Swap in any LangChain chat model (ChatOpenAI(model="gpt-4o-mini"), ChatAnthropic(...), ChatOllama(...)). The
simulated judge is an OpenAI-compatible stand-in for a language model, not a model: it scores each response by the
hidden quality that ``with_quality`` attaches, plus noise.
"""

from __future__ import annotations

from langchain_openai import ChatOpenAI

from grm_plugin import GRMReward, ScoreRequest
from grm_plugin.testing.simulated_judge import SimulatedJudge, with_quality


def main() -> None:
    with SimulatedJudge(noise=1.0) as judge:
        chat_model = ChatOpenAI(base_url=judge.base_url, api_key="EMPTY", model="simulated-judge")
        reward = GRMReward(chat_model=chat_model, k=8)
        [result] = reward.score([ScoreRequest(
            prompt="What is 17 * 24?",
            responses=[with_quality("17 * 24 = 408.", 9), with_quality("17 * 24 = 418.", 2)],
            reference="408",
        )])
        print(f"rewards {result.rewards}  votes {result.votes}  best {result.best}  "
              f"valid {result.valid_samples}/{result.samples}")
        print("critique of the first sample:", result.judgements[0].critique)


if __name__ == "__main__":
    main()
