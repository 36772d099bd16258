"""GRMConfig: the one configuration model shared by Python, the CLI and the server.

Sources, lowest priority first: defaults < a YAML/JSON file (``config_file=`` or ``GRM_CONFIG_FILE``) <
``GRM_*`` environment variables < keyword arguments. Values are validated here, once, with messages naming the field.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError, format_validation_error

if TYPE_CHECKING:
    from .backends import Backend

ENV_PREFIX = "GRM_"
# Settings the embedded smoke-test judge uses unless they are set explicitly (see GRMConfig.with_embedded_defaults).
EMBEDDED_DEFAULTS = {"max_tokens": 256, "structured_output": "on"}


class GRMConfig(BaseSettings):
    """Everything that shapes a GRM judge.

    Every field can be set as a keyword (``GRMConfig(k=8)``), as an environment variable (``GRM_K=8``; lists and
    dicts as JSON) or in a YAML/JSON config file.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_assignment=True,
                                      frozen=False, populate_by_name=True)

    # --- the engine -------------------------------------------------------------------------------------------
    engine: Literal["auto", "openai", "transformers", "langchain"] = Field(
        "auto", description="Which engine runs the judge. 'auto': 'openai' when base_url is set, else 'transformers' "
                            "(model, or the embedded default judge when model is unset).")
    model: str | None = Field(
        None, description="Judge model: the served name (openai engine) or a Hugging Face id / local path / .gguf "
                          "file (transformers engine); unset = the embedded default judge.")
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM, SGLang, hosted APIs); "
                          "several replicas as a list or comma-separated (least outstanding requests, affinity, "
                          "ejection of failing replicas).")
    api_key: SecretStr | None = Field(
        None, description="API key; falls back to OPENAI_API_KEY, then to 'EMPTY' (what vLLM accepts).")
    max_concurrency: int = Field(64, ge=1, description="Engine requests in flight at once, per event loop.")
    timeout: float = Field(300.0, gt=0, description="Seconds one engine request may take in all (a deadline, "
                                                    "however slowly the answer trickles) before it counts as failed.")
    max_retries: int = Field(4, ge=0, description="Retries on 429, 5xx, connection errors and timeouts.")
    retry_backoff: float = Field(0.5, ge=0, description="First retry delay in seconds; doubles per attempt, jittered.")
    retry_backoff_max: float = Field(20.0, ge=0, description="Upper bound on one retry delay, seconds.")
    use_n: bool = Field(True, description="Ask for all samples of a prompt in one request with n=...; off for APIs "
                                          "that reject n>1 (then one request per sample).")
    structured_output: Literal["off", "on", "vllm", "vllm-legacy", "sglang"] = Field(
        "off", description="Guarantee a well-formed scores line. Over HTTP it is a regex: 'on'/'vllm' "
                           "(structured_outputs), 'vllm-legacy' (guided_regex, vLLM < 0.10), 'sglang' (regex).")
    extra_body: dict[str, Any] = Field(default_factory=dict,
                                       description="Extra JSON merged into every chat-completions request body.")

    # --- local (transformers) engine ------------------------------------------------------------------------------
    device: str = Field("auto", description="Torch device for the transformers engine: 'auto' (CUDA when present), "
                                            "'cpu', 'cuda', 'cuda:1', ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype for the transformers engine; 'auto': bfloat16 on CUDA, float32 on CPU.")
    gguf_file: str | None = Field(None, description="GGUF file name inside `model` (a folder or hub id) to load.")
    max_batch_tokens: int = Field(32768, ge=1, description="Upper bound on (prompt + new) tokens x sequences in one "
                                                          "generate call; larger batches are split, never dropped.")
    max_batch_size: int = Field(64, ge=1, description="Most sequences (prompts x samples) in one generate call.")
    batch_window_ms: float = Field(5.0, ge=0, description="How long the transformers engine waits to gather "
                                                          "concurrent requests into one batch.")
    embedded_adapter: Optional[str] = Field(
        "auto", description="LoRA adapter merged into the embedded default judge's weights at load: 'auto' (the one "
                            "shipped in grm_plugin/data/embedded-adapter/ when there is one, else none), 'none' "
                            "(the base SmolLM2-135M-Instruct), or the path of an adapter folder (adapter.safetensors "
                            "and card.json) or .safetensors file (grm-lora-v1; a missing path is an error). Ignored "
                            "when model, gguf_file or base_url names the judge.")
    kv_cache: Literal["dynamic", "static"] = Field(
        "dynamic", description="KV cache of the transformers engine: 'static' reuses fixed-shape buffers and, on CUDA, "
                               "compiles the decoding step with CUDA graphs (faster on GPU after a warm-up per shape).")

    # --- sampling ---------------------------------------------------------------------------------------------
    k: int = Field(1, ge=1, le=1024, description="Judgements sampled per request and summed (inference-time scaling).")
    temperature: float | None = Field(
        None, ge=0, description="Sampling temperature; None means greedy (0) for k=1 and 0.5 for k>1, as the paper.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(2048, ge=1, description="Token budget of one judgement.")
    seed: int = Field(0, description="Seeds the per-sample shuffles and tie-breaks (deterministic per request).")

    # --- the GRM ----------------------------------------------------------------------------------------------
    template: Union[str, dict[str, Any]] = Field(
        "deepseek-grm", description="Built-in name (deepseek-grm, deepseek-grm-single, tagged, compact), a file path, "
                                    "or a dict with 'user' (and 'system', 'score_format').")
    mode: Literal["group", "pointwise"] = Field(
        "group", description="'group': completions of the same prompt are judged together in one prompt; "
                             "'pointwise': each completion alone.")
    max_responses_per_call: int = Field(8, ge=1, description="Largest group shown to the judge at once; larger "
                                                             "groups are split into balanced chunks.")
    shuffle: bool = Field(True, description="Shuffle the responses independently for every sample.")
    score_range: tuple[int, int] = Field((1, 10), description="Inclusive range of a valid score.")
    reward_scale: Literal["mean", "sum", "unit"] = Field(
        "mean", description="'mean': average valid score; 'sum': the paper's raw votes; 'unit': mean mapped to 0..1.")
    max_prompt_tokens: Optional[int] = Field(
        None, ge=64, description="Most tokens a judge prompt may hold; a longer one has its responses shortened "
                                 "(head and tail kept, the middle marked as omitted). None: the judge's context length "
                                 "minus max_tokens when the engine reports it (vLLM/SGLang /v1/models, a local "
                                 "model's config), else no limit.")
    resample_invalid: bool = Field(True, description="Draw a replacement (same order of responses) for each sample "
                                   "that does not parse, so the vote has k valid samples when the judge can give them.")
    floor_contentless: bool = Field(False, description="Give a response with no substantive content (empty, only "
                                    "punctuation, or a bare opener such as 'Solution' or 'Let's solve this step by "
                                    "step.': templates.BARE_OPENERS) the lowest score without showing it to the judge "
                                    "(counted as ScoreResult.floored).")
    max_resamples: Optional[int] = Field(None, ge=0, description="Most replacement samples per request (default: k, "
                                         "or k_max with adaptive k).")
    k_meta: Optional[int] = Field(None, ge=1, description="With a meta RM: judgements kept for voting (the top "
                                                          "k_meta by meta score); default k/2, rounded up.")
    on_no_valid: Union[Literal["none", "raise"], float] = Field(
        "none", description="Reward when no sample parses: 'none' (None), 'raise', or a fixed number.")
    cache_size: int = Field(4096, ge=0, description="Results kept in the LRU cache of identical requests (0 = off).")
    cache_max_bytes: int = Field(256 * 1024 * 1024, ge=0, description="Most bytes the LRU cache holds (judgement "
                                 "texts, estimated): long judgements of long requests evict the oldest sooner.")
    reference_column: str = Field("reference", description="Keyword (dataset column) holding reference answers.")
    principles_column: str = Field("principles", description="Keyword (dataset column) holding given principles.")
    on_engine_error: Literal["raise", "none"] = Field(
        "raise", description="When the judge engine fails after its retries, in a trainer call: 'raise' the "
                             "BackendError, or 'none' (every reward of the batch None, so TRL skips it, with a warning).")

    # --- inference-time scaling beyond the paper ----------------------------------------------------------------
    k_max: Optional[int] = Field(
        None, ge=1, le=1024, description="Adaptive k: draw samples in rounds (k in the first, round_size in each later "
                                         "one) until the stopping rule holds or k_max samples are drawn; None = "
                                         "always k samples.")
    round_size: Optional[int] = Field(None, ge=1, description="Adaptive k: samples per round after the first; "
                                                              "None = k.")
    stopping: Literal["lead", "exact", "statistical"] = Field(
        "lead", description="Adaptive k's stopping rule. 'lead': the current leader stays the best of all k_max "
                            "samples with probability at least stop_confidence (a predictive paired t-test of its "
                            "lead over every other response; at least 4 samples); 'exact': the best response can no "
                            "longer change even if every remaining sample went against it; 'statistical': every "
                            "response's mean score is known within stop_tolerance at stop_confidence.")
    stop_tolerance: float = Field(0.5, gt=0, description="Statistical stopping: half-width of the confidence interval "
                                                         "of each mean score, in score points.")
    stop_confidence: float = Field(0.95, gt=0, lt=1, description="Lead and statistical stopping: confidence level "
                                                                 "(lead: that the best response stays the same).")
    ordering: Literal["random", "balanced"] = Field(
        "random", description="How the samples' response orders are drawn (with shuffle on): 'random' (an independent "
                              "shuffle per sample, the paper's), 'balanced' (rotations of one shuffle, Latin-square "
                              "style: each response in each slot as evenly as k allows).")
    principles: Literal["joint", "upfront", "given"] = Field(
        "joint", description="Who writes the specific criteria: 'joint' (every sample, with its critique: the "
                             "paper's), 'upfront' (once per prompt from the prompt alone, cached, reused), 'given' "
                             "(the request's principles, e.g. the principles_column).")
    principles_cache_dir: Optional[str] = Field(
        None, description="With principles='upfront': a folder where written principles are also kept on disk "
                          "(one JSON file per prompt), so they survive restarts.")
    expected_scores: bool = Field(
        False, description="Read each score's probability distribution from the engine's token log-probabilities and "
                           "use the expected score per sample (continuous even at k=1); the parsed integer where "
                           "log-probabilities are absent.")
    top_logprobs: int = Field(20, ge=1, le=100, description="With expected_scores: alternatives per token asked from "
                                                             "the engine (OpenAI's and vLLM's default maximum is 20).")

    @field_validator("base_url", mode="before")
    @classmethod
    def _replicas(cls, value: Any) -> Any:
        """A list of replica URLs is kept as one comma-separated string (what the environment variable holds)."""
        if isinstance(value, (list, tuple)):
            urls = [str(u).strip() for u in value if str(u).strip()]
            if not urls:
                raise ValueError("expected at least one URL")
            return ",".join(urls)
        return value

    @field_validator("embedded_adapter", mode="before")
    @classmethod
    def _adapter_setting(cls, value: Any) -> Any:
        """'none' (any case) is stored as None, 'auto' as 'auto', a path as text; an empty value is refused."""
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise ValueError("expected 'auto', 'none' or the path of an adapter folder or .safetensors file")
            if text.lower() in ("none", "auto"):
                return None if text.lower() == "none" else "auto"
            return text
        return value

    @field_validator("score_range")
    @classmethod
    def _range_ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] >= value[1]:
            raise ValueError(f"expected (low, high) with low < high, got {value}")
        return value

    @field_validator("on_no_valid", mode="before")
    @classmethod
    def _on_no_valid_text(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() not in ("none", "raise"):
            try:
                return float(value)
            except ValueError:
                raise ValueError(f"expected 'none', 'raise' or a number, got {value!r}") from None
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _k_max_covers_k(self) -> "GRMConfig":
        if self.k_max is not None and self.k_max < self.k:
            raise ValueError(f"k_max ({self.k_max}) must be at least k ({self.k}), the first round's samples")
        return self

    @model_validator(mode="after")
    def _resolve_api_key(self) -> "GRMConfig":
        if self.api_key is None and os.environ.get("OPENAI_API_KEY"):
            object.__setattr__(self, "api_key", SecretStr(os.environ["OPENAI_API_KEY"]))
        return self

    # --- derived ----------------------------------------------------------------------------------------------
    @property
    def sampling_temperature(self) -> float:
        if self.temperature is not None:
            return self.temperature
        return 0.0 if self.k == 1 and self.k_max is None else 0.5

    def resolved_engine(self) -> str:
        """The engine to build: an explicit choice, else 'openai' with a base_url, else 'transformers'."""
        if self.engine != "auto":
            return self.engine
        return "openai" if self.base_url else "transformers"

    @property
    def uses_embedded_judge(self) -> bool:
        """True when nothing names a judge: the transformers engine runs the embedded smoke-test model."""
        return self.resolved_engine() == "transformers" and not self.model and not self.gguf_file

    def with_embedded_defaults(self) -> "GRMConfig":
        """For the embedded 135M judge, settings that keep it quick and usable unless set explicitly: a short
        token budget and guaranteed-format decoding (a tiny model rarely ends with a well-formed scores line), and
        the template and token budget its adapter was trained with (the adapter card's ``judge_defaults``)."""
        if not self.uses_embedded_judge:
            return self
        from .embedded import adapter_judge_defaults

        wanted = {**EMBEDDED_DEFAULTS, **adapter_judge_defaults(self.embedded_adapter)}
        defaults = {name: value for name, value in wanted.items() if name not in self.model_fields_set}
        return self.replace(**defaults) if defaults else self

    def judge_fingerprint(self) -> str:
        """The fields that change what the judge returns, as a string (part of the cache key)."""
        fields = ("engine", "model", "base_url", "gguf_file", "k", "temperature", "top_p", "max_tokens", "seed", "template",
                  "shuffle", "score_range", "reward_scale", "on_no_valid", "structured_output", "extra_body", "k_meta",
                  "k_max", "round_size", "stopping", "stop_tolerance", "stop_confidence", "ordering", "principles",
                  "expected_scores", "top_logprobs", "resample_invalid", "max_resamples",
                  "max_prompt_tokens", "floor_contentless")
        values = {f: getattr(self, f) for f in fields}
        if self.uses_embedded_judge:  # which weights the embedded judge has: base, or the adapter's file digest
            from .embedded import adapter_identity

            values["embedded_adapter"] = adapter_identity(self.embedded_adapter)
        return json.dumps(values, sort_keys=True, default=str)

    @classmethod
    def load(cls, config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> "GRMConfig":
        """Build a config from a file, the environment and keyword overrides (highest priority).

        ``config_file`` defaults to the ``GRM_CONFIG_FILE`` environment variable. Raises ConfigError naming the
        field and the expected value on any invalid input.
        """
        config_file = config_file or os.environ.get("GRM_CONFIG_FILE")
        overrides = {key: value for key, value in overrides.items() if value is not None}
        try:
            file_values = read_config_file(config_file) if config_file else {}
            from_env = cls()
            env_values = {name: getattr(from_env, name) for name in from_env.model_fields_set}
            return cls(**{**file_values, **env_values, **overrides})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "GRM configuration")) from None

    def replace(self, **overrides: Any) -> "GRMConfig":
        """A copy with some fields changed (validated; the environment is not consulted again)."""
        try:
            return type(self)(**{**self.model_dump(), **overrides})
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, "GRM configuration")) from None

    def public_dict(self) -> dict[str, Any]:
        """The configuration without secrets, for logs and reports."""
        data = self.model_dump(mode="json")
        data["api_key"] = "***" if self.api_key else None
        return data


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    import yaml

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(file)!r} is not valid YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(file)!r} must hold a mapping of field names to values")
    return data


# --- the engine factory: a GRMConfig -> the engine's keyword arguments -> the engine ----------------------------------


def openai_arguments(config: GRMConfig) -> dict[str, Any]:
    """The keyword arguments of ``OpenAIBackend`` that ``config`` describes."""
    if not config.base_url:
        raise ConfigError("the 'openai' engine needs base_url (e.g. http://localhost:8000/v1); set base_url= "
                          "or GRM_BASE_URL")
    return dict(base_url=config.base_url, model=config.model,
                api_key=config.api_key.get_secret_value() if config.api_key else None,
                max_concurrency=config.max_concurrency, timeout=config.timeout, max_retries=config.max_retries,
                retry_backoff=config.retry_backoff, retry_backoff_max=config.retry_backoff_max, use_n=config.use_n,
                extra_body=config.extra_body, structured_output=config.structured_output)


def transformers_arguments(config: GRMConfig) -> dict[str, Any]:
    """The keyword arguments of ``TransformersBackend`` that ``config`` describes. No model and no GGUF file: the
    embedded smoke-test judge (``embedded.embedded_judge``: raises when its weights are not installed or
    ``embedded_adapter`` names a missing path, converts nothing yet, logs the smoke-test warning once), with its
    adapter merged on load."""
    if config.uses_embedded_judge:
        from . import embedded

        model = embedded.embedded_judge(adapter=config.embedded_adapter)
    else:
        model = dict(model=config.model, gguf_file=config.gguf_file)
    return dict(**model, device=config.device, dtype=config.dtype, max_batch_tokens=config.max_batch_tokens,
                max_batch_size=config.max_batch_size, batch_window_ms=config.batch_window_ms,
                cache_implementation=None if config.kv_cache == "dynamic" else config.kv_cache)


def langchain_arguments(config: GRMConfig) -> dict[str, Any]:
    """The keyword arguments of ``LangChainBackend`` (besides the chat model) that ``config`` describes."""
    return dict(max_concurrency=config.max_concurrency, max_retries=config.max_retries,
                retry_backoff=config.retry_backoff, retry_backoff_max=config.retry_backoff_max,
                timeout=config.timeout, use_n=config.use_n)


def make_backend(config: GRMConfig, chat_model: Any = None) -> Backend:
    """Build the engine ``config`` names (``resolved_engine()``; it explains what is missing), or, given a LangChain
    ``chat_model``, the LangChain engine around it. Engines are imported here, when needed (each has its extra).

    Example:
        >>> make_backend(GRMConfig(base_url="http://localhost:8000/v1", model="judge")).endpoint
        'http://localhost:8000/v1/chat/completions'
    """
    if chat_model is not None:
        from .backends.langchain import LangChainBackend

        return LangChainBackend(chat_model, **langchain_arguments(config))
    engine = config.resolved_engine()
    if engine == "openai":
        from .backends.openai import OpenAIBackend

        return OpenAIBackend(**openai_arguments(config))
    if engine == "transformers":
        from .backends.transformers import TransformersBackend

        return TransformersBackend(**transformers_arguments(config))
    if engine == "langchain":
        raise ConfigError("engine 'langchain' needs a chat model object: GRMReward(chat_model=ChatOpenAI(...)) or "
                          "GRMReward(backend=LangChainBackend(chat_model))")
    raise ValueError(f"unknown engine {engine!r}")  # pragma: no cover - the config's Literal prevents it
