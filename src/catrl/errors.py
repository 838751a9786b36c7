"""One base exception and a few kinds, so callers can catch exactly what they can handle."""


class CatrlError(Exception):
    """Base of every error catrl raises on purpose."""


class InputError(CatrlError):
    """Bad user input: a file, a line, a field. The message names where and what to do."""


class EngineError(CatrlError):
    """A model call failed for good (after retries). The message names the engine and the request."""


class ParseError(CatrlError):
    """Model output that could not be parsed into what was asked for."""


class IntegrityError(CatrlError):
    """A downloaded or assembled file does not match its pinned hash."""
