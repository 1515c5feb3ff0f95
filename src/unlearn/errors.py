"""The one exception type users catch: every bad input names the bad value and the fix."""


class UnlearnError(ValueError):
    """Raised at the public boundary (config, API, data) when an input cannot give a right answer."""
