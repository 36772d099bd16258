"""grm-plugin: a generative reward model (principles, critiques, 1-10 scores, inference-time voting) for the RL
frameworks you already use. See README.md for the quickstart."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .config import GRMConfig
from .errors import BackendError, ConfigError, GRMError, InvalidRequestError, NoValidJudgementError, ParseError
from .grm import GRMReward
from .parsing import parse_judgement
from .reward import RewardFunction
from .types import Judgement, Message, ScoreRequest, ScoreResult
from .voting import vote_sum

try:
    __version__ = _version("grm-plugin")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+unknown"

__all__ = [
    "BackendError",
    "ConfigError",
    "GRMConfig",
    "GRMError",
    "GRMReward",
    "InvalidRequestError",
    "Judgement",
    "Message",
    "NoValidJudgementError",
    "ParseError",
    "RewardFunction",
    "ScoreRequest",
    "ScoreResult",
    "parse_judgement",
    "vote_sum",
    "__version__",
]
