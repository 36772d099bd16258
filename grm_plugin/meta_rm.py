"""Meta RM: a scalar model that rates each sampled judgement, for meta RM guided voting (paper: keep the top
k_meta = k/2 judgements by meta score, then sum-vote).

``MetaRM`` is the protocol (``async arate(request, judgements) -> one float per judgement``); ``FunctionMetaRM`` wraps
any function (a rule, your own client), ``TransformersMetaRM`` runs a sequence classification checkpoint locally (one
logit, or the positive class of two), ``HTTPMetaRM`` calls a served classifier through the classification API of vLLM
and SGLang (``POST /classify``), which ``grm serve --meta-rm FOLDER`` also speaks. The input format follows the paper:
"Please score the responses." then ``#### Conversation Context ####`` (the query and the responses, in the order the
judgement saw them) and ``#### Responses to be Scored ####`` holding the judgement's principles, critique and scores.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from typing import Any, Awaitable, Callable, Protocol, Sequence, Union, runtime_checkable

from .errors import BackendError
from .templates import render_response
from .types import Judgement, ScoreRequest


@runtime_checkable
class MetaRM(Protocol):
    """Rates sampled judgements; higher is more trustworthy."""

    name: str

    async def arate(self, request: ScoreRequest, judgements: Sequence[Judgement]) -> list[float]: ...


def meta_rm_prompt(request: ScoreRequest, judgement: Judgement) -> str:
    """The meta RM's input for one judgement (the paper's layout); the conversation and the responses are rendered as
    the judge sees them (``templates.render_response``)."""
    order = judgement.order or list(range(request.n_responses))
    responses = "\n\n".join(f"[Response {slot + 1}]\n{render_response(request.responses[index])}"
                            for slot, index in enumerate(order))
    shown = [judgement.scores[i] for i in order] if judgement.scores else []
    verdict = (f"Specific Criteria: {judgement.principles.strip()}\n\nAnalysis: {judgement.critique.strip()}\n\n"
               f"Scores: {', '.join(map(str, shown))}")
    return ("Please score the responses.\n\n#### Conversation Context ####\n"
            f"{render_response(request.prompt)}\n\n{responses}\n\n#### Responses to be Scored ####\n{verdict}")


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
        self.tokenizer.padding_side = "right"  # no fully masked query rows (NaN on CUDA); the last real token is read
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


class HTTPMetaRM:
    """A served sequence-classification meta RM behind vLLM's / SGLang's classification API (``grm serve --meta-rm``
    speaks it too): ``POST url`` with ``{"model", "input": [texts]}``, answered ``{"data": [{"index", "probs"}]}``.
    A judgement's meta score is the probability of the positive class (the last of ``probs``).

    Args:
        url: the endpoint, e.g. ``http://host:8000/classify`` (vLLM) or ``http://host:30000/v1/classify`` (SGLang).
        model: the served model name (vLLM needs it when it serves several).
        timeout / max_retries: as for the judge engine; requests go through the engines' HTTP transport (a pooled
            client per event loop; 408, 409, 425, 429, 5xx, timeouts and connection errors are retried).
    """

    def __init__(self, url: str, model: str | None = None, *, api_key: str | None = None, timeout: float = 120.0,
                 max_retries: int = 4, batch_size: int = 64) -> None:
        from .backends.http import HTTPTransport, RetryPolicy

        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url: expected an http(s) URL of a /classify endpoint, got {url!r}")
        self.url, self.model, self.name = url, model, f"{url}#{model or ''}"
        self.batch_size = batch_size
        self.transport = HTTPTransport(api_key=api_key, timeout=timeout, retry=RetryPolicy(max_retries=max_retries))

    async def rate_texts(self, texts: Sequence[str]) -> list[float]:
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start:start + self.batch_size])
            body: dict[str, Any] = {"input": chunk}
            if self.model:
                body["model"] = self.model
            reply = await self.transport.request_json("POST", self.url, body)
            data = sorted(reply.get("data") or [], key=lambda d: d.get("index", 0))
            if len(data) != len(chunk) or not all(isinstance(d.get("probs"), list) and d["probs"] for d in data):
                raise BackendError(f"POST {self.url}: expected {len(chunk)} results with probs, got "
                                   f"{str(reply)[:200]}", endpoint=self.url)
            scores += [float(d["probs"][-1]) for d in data]
        return scores

    async def arate(self, request: ScoreRequest, judgements: Sequence[Judgement]) -> list[float]:
        return await self.rate_texts([meta_rm_prompt(request, j) for j in judgements])

    async def aclose(self) -> None:
        """Close this event loop's connections."""
        await self.transport.aclose()


def classify_reply(scores: Sequence[float], model: str) -> dict[str, Any]:
    """A classification-API reply (vLLM's /classify shape) for meta RM scores (logits or log-odds): the positive
    class's probability as ``probs`` of one class."""
    data = [{"index": i, "label": "correct" if s >= 0 else "incorrect", "probs": [0.5 * (1.0 + math.tanh(s / 2))],
             "num_classes": 1} for i, s in enumerate(scores)]
    return {"object": "list", "model": model, "data": data}


def keep_top(judgements: Sequence[Judgement], meta_scores: Sequence[float], k_meta: int) -> list[int]:
    """Indices of the ``k_meta`` valid judgements with the highest meta scores (earlier samples win ties; NaN and
    infinite scores rank last)."""
    valid = [i for i, j in enumerate(judgements) if j.valid and j.scores is not None]
    # a non-finite meta score (a diverged classifier) ranks below every finite one instead of scrambling the sort
    ranked = sorted(valid, key=lambda i: (-meta_scores[i] if math.isfinite(meta_scores[i]) else math.inf, i))
    return sorted(ranked[:k_meta])


async def meta_guided(meta_rm: MetaRM, request: ScoreRequest, judgements: list[Judgement],
                      k_meta: int) -> tuple[list[Judgement], list[int]]:
    """Meta RM guided voting: rate the valid judgements, keep the top ``k_meta`` for the vote. Returns the
    judgements (every rated one carrying its ``meta_score``) and the indices kept. A meta RM that answers with the
    wrong number of scores fails like an engine (BackendError naming it), never with a bare ValueError."""
    valid = [i for i, j in enumerate(judgements) if j.valid and j.scores is not None]
    if not valid:
        return judgements, []
    rated = await meta_rm.arate(request, [judgements[i] for i in valid])
    if len(rated) != len(valid):
        name = getattr(meta_rm, "name", repr(meta_rm))
        raise BackendError(f"meta RM {name!r} returned {len(rated)} scores for {len(valid)} judgements",
                           endpoint=str(name))
    scores = [float("-inf")] * len(judgements)
    updated = list(judgements)
    for i, score in zip(valid, rated):
        scores[i] = float(score)
        updated[i] = judgements[i].model_copy(update={"meta_score": float(score)})
    return updated, keep_top(updated, scores, k_meta)


__all__ = ["FunctionMetaRM", "HTTPMetaRM", "MetaRM", "TransformersMetaRM", "classify_reply", "keep_top",
           "meta_guided", "meta_rm_prompt"]
