"""The one exception type users catch: every bad input names the bad value and the fix."""


class UnlearnError(ValueError):
    """Raised at the public boundary (config, API, data) when an input cannot give a right answer."""


def check_params(target, params: dict, what: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Raise on a key of `params` that `target` (a class or function) does not take; return the valid keys."""
    import inspect

    valid = [key for key in inspect.signature(target).parameters if key not in ("self", *exclude)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UnlearnError(f"unknown param(s) {unknown} for {what}; valid params: {valid}.")
    return valid
