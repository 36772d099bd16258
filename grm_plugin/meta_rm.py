"""Meta RM: a scalar model that rates each sampled judgement, for meta RM guided voting (paper: keep the top
k_meta = k/2 judgements by meta score, then sum-vote).

``MetaRM`` is the protocol (``async arate(request, judgements) -> one float per judgement``); ``FunctionMetaRM`` wraps
any function (a served classifier behind your own client, a rule), ``TransformersMetaRM`` runs a sequence
classification checkpoint locally (one logit, or the positive class of two). The input format follows the paper:
"Please score the responses." then ``#### Conversation Context ####`` (the query and the responses, in the order the
judgement saw them) and ``#### Responses to be Scored ####`` holding the judgement's principles, critique and scores.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, Awaitable, Callable, Protocol, Sequence, Union, runtime_checkable

from .types import Judgement, Message, ScoreRequest


@runtime_checkable
class MetaRM(Protocol):
    """Rates sampled judgements; higher is more trustworthy."""

    name: str

    async def arate(self, request: ScoreRequest, judgements: Sequence[Judgement]) -> list[float]: ...


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    parts = []
    for message in value:
        message = message if isinstance(message, Message) else Message.model_validate(message)
        parts.append(f"[{message.role}] {message.text()}".rstrip())
    return "\n".join(parts)


def meta_rm_prompt(request: ScoreRequest, judgement: Judgement) -> str:
    """The meta RM's input for one judgement (the paper's layout)."""
    order = judgement.order or list(range(request.n_responses))
    responses = "\n\n".join(f"[Response {slot + 1}]\n{_text(request.responses[index])}"
                            for slot, index in enumerate(order))
    shown = [judgement.scores[i] for i in order] if judgement.scores else []
    verdict = (f"Specific Criteria: {judgement.principles.strip()}\n\nAnalysis: {judgement.critique.strip()}\n\n"
               f"Scores: {', '.join(map(str, shown))}")
    return ("Please score the responses.\n\n#### Conversation Context ####\n"
            f"{_text(request.prompt)}\n\n{responses}\n\n#### Responses to be Scored ####\n{verdict}")


Rater = Callable[[ScoreRequest, Judgement], Union[float, Awaitable[float]]]


class FunctionMetaRM:
    """A meta RM from a function ``(request, judgement) -> float`` (sync or async)."""

    def __init__(self, function: Rater, name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__name__", type(function).__name__)

    async def arate(self, request: ScoreRequest, judgements: Sequence[Judgement]) -> list[float]:
        if inspect.iscoroutinefunction(self.function):
            return [float(x) for x in await asyncio.gather(*(self.function(request, j) for j in judgements))]
        return [float(self.function(request, j)) for j in judgements]  # type: ignore[arg-type]


class TransformersMetaRM:
    """A local sequence classification checkpoint as the meta RM (e.g. a model trained on correctness labels).

    Args:
        model: a folder (or a Hugging Face id already in the local cache; never downloaded) or a loaded model.
        tokenizer: needed when ``model`` is an object.
        device / dtype: as for the transformers engine ('auto' picks CUDA when present).
        batch_size: judgements per forward pass. max_length: tokens kept per input (from the left: the verdict
            at the end is what matters).
    """

    def __init__(self, model: Any, tokenizer: Any = None, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 16, max_length: int = 4096) -> None:
        import transformers

        from .backends.transformers import resolve_device, resolve_dtype

        self.device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, self.device)
        if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
            path = str(model)
            self.name = path
            self.tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = transformers.AutoModelForSequenceClassification.from_pretrained(
                path, dtype=torch_dtype, local_files_only=True)
        else:
            if tokenizer is None:
                raise TypeError("TransformersMetaRM(model=<object>) needs tokenizer=")
            self.name = getattr(model.config, "name_or_path", "") or type(model).__name__
            self.model, self.tokenizer = model, tokenizer
        self.model = self.model.to(self.device).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if getattr(self.model.config, "pad_token_id", None) is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.truncation_side = "left"
        self.batch_size = batch_size
        self.max_length = max_length

    def rate_texts(self, texts: Sequence[str]) -> list[float]:
        """Scores of raw meta RM inputs (blocking): the single logit, or log-odds of label 1 of two."""
        import torch

        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.batch_size]), return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length).to(self.device)
            with torch.no_grad():
                logits = self.model(**batch).logits.float()
            if logits.shape[-1] == 1:
                scores += logits[:, 0].tolist()
            else:
                scores += (logits[:, 1] - logits[:, 0]).tolist()
        return scores

    async def arate(self, request: ScoreRequest, judgements: Sequence[Judgement]) -> list[float]:
        texts = [meta_rm_prompt(request, j) for j in judgements]
        return await asyncio.to_thread(self.rate_texts, texts)


def keep_top(judgements: Sequence[Judgement], meta_scores: Sequence[float], k_meta: int) -> list[int]:
    """Indices of the ``k_meta`` valid judgements with the highest meta scores (earlier samples win ties)."""
    valid = [i for i, j in enumerate(judgements) if j.valid and j.scores is not None]
    ranked = sorted(valid, key=lambda i: (-meta_scores[i], i))
    return sorted(ranked[:k_meta])


__all__ = ["FunctionMetaRM", "MetaRM", "TransformersMetaRM", "keep_top", "meta_rm_prompt"]
