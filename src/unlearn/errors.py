"""The one exception type users catch: every bad input names the bad value and the fix."""


class UnlearnError(ValueError):
    """Raised at the public boundary (config, API, data) when an input cannot give a right answer."""


def accepted_params(target) -> list[str]:
    """Names `target` (a class or function) takes; a class whose __init__ passes **kwargs on to its base
    also takes the base's names."""
    import inspect

    names, forwards = [], False
    for name, param in inspect.signature(target).parameters.items():
        if param.kind is param.VAR_KEYWORD:
            forwards = True
        elif param.kind is not param.VAR_POSITIONAL:
            names.append(name)
    if forwards and isinstance(target, type):
        base = next((cls for cls in target.__mro__[1:] if "__init__" in vars(cls)), object)
        if base is not object:
            names += [name for name in accepted_params(base) if name not in names]
    return names


def check_params(target, params: dict, what: str, exclude: tuple[str, ...] = ()) -> list[str]:
    """Raise on a key of `params` that `target` (a class or function) does not take; return the valid keys."""
    valid = [key for key in accepted_params(target) if key not in ("self", *exclude)]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UnlearnError(f"unknown param(s) {unknown} for {what}; valid params: {valid}.")
    return valid
