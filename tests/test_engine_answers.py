"""Engine answers are validated at the transport: any shape that is not a chat completion with exactly n choices is a
BackendError naming the field (never an AttributeError/TypeError that escapes the error model, never a vote over a
different number of samples). Pure function tests; no language model is involved."""

from __future__ import annotations

import pytest

from grm_plugin.backends.openai import read_chat_completion
from grm_plugin.errors import BackendError


def choice(text="Scores: \\boxed{7}", index=None):
    out = {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    return out if index is None else {**out, "index": index}


@pytest.mark.parametrize("answer, field", [
    (None, "NoneType, expected a chat completion"),
    ([], "list, expected a chat completion"),
    ({"choices": "x"}, "choices of type str"),
    ({"choices": ["text"] * 4}, r"choices\[0\] is str"),
    ({"choices": [{"message": "hi"}] * 4}, r"choices\[0\].message is str"),
    ({"choices": [{"message": {"content": 7}}] * 4}, r"choices\[0\].message.content is int"),
    ({"choices": [choice()] * 4, "usage": {"prompt_tokens": "many"}}, "usage.prompt_tokens is 'many'"),
    ({"choices": [choice()] * 4, "usage": [1]}, "usage is list"),
    ({"choices": [choice()] * 4, "usage": {"completion_tokens": float("nan")}}, "usage.completion_tokens is 'nan'"),
    ({"choices": [choice()] * 4, "usage": {"prompt_tokens": float("inf")}}, "usage.prompt_tokens is 'inf'"),
    ({"choices": [choice(index=0), choice(index="1"), choice(index=2), choice(index=3)]}, "index values"),
    ({"choices": [choice(index=0)] * 4}, "index values"),
    ({"choices": [choice()] * 2}, "holds 2 choices, expected 4"),
    ({"choices": [choice()] * 8}, "holds 8 choices, expected 4"),
])
def test_malformed_answers_are_backend_errors_naming_the_field(answer, field):
    with pytest.raises(BackendError, match=field):
        read_chat_completion(answer, 4)


def test_a_well_formed_answer_is_read_in_index_order_with_usage_split():
    answer = {"choices": [choice("b", index=1), choice("a", index=0), choice(None, index=2)],
              "usage": {"prompt_tokens": 30, "completion_tokens": 10}}
    completions = read_chat_completion(answer, 3)
    assert [c.text for c in completions] == ["a", "b", ""]
    assert [c.completion_tokens for c in completions] == [4, 3, 3] and completions[0].prompt_tokens == 30


def test_only_a_refusal_of_one_requests_content_is_that_requests_fault():
    from grm_plugin.errors import InvalidRequestError, caused_by_request

    def status(code, retryable=False):
        return BackendError("x", status=code, retryable=retryable)

    assert caused_by_request(status(400)) and caused_by_request(status(413)) and caused_by_request(status(422))
    assert caused_by_request(InvalidRequestError("bad")) and caused_by_request(UnicodeEncodeError("utf-8", "", 0, 1, "x"))
    # a wrong key, model or URL refuses everyone; overload and outages are the engine's
    assert not any(caused_by_request(status(code)) for code in (401, 403, 404))
    assert not caused_by_request(status(503, retryable=True)) and not caused_by_request(status(429, retryable=True))
    assert not caused_by_request(BackendError("connection failed", retryable=True))
