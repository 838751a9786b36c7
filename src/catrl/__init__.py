"""catrl: Compute as Teacher (CaT) for test-time synthesis and CaT-RL rewards."""

from catrl.errors import CatrlError, EngineError, InputError, IntegrityError, ParseError
from catrl.types import ChatRequest, Completion, Sampling, TokenLogprob

__version__ = "0.1.0"
__all__ = [
    "CatrlError",
    "ChatRequest",
    "Completion",
    "EngineError",
    "InputError",
    "IntegrityError",
    "ParseError",
    "Sampling",
    "TokenLogprob",
]
