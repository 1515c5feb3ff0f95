"""The one exception type users catch: every bad input names the bad value and the fix."""


class UnlearnError(ValueError):
    """Raised at the public boundary (config, API, data) when an input cannot give a right answer."""


def check_classes(values, what: str = "forget_classes") -> list[int]:
    """Class ids as a list of ints: a bool, float, string or None (e.g. `["cat"]`, `[4.7]`, `[True]`) is refused,
    never rounded or cast (4.7 would silently forget class 4)."""
    if hasattr(values, "tolist") and not isinstance(values, (list, tuple)):  # a tensor or an array
        values = values.tolist()
    import numbers

    values = [values] if isinstance(values, numbers.Integral) and not isinstance(values, bool) else values
    if not isinstance(values, (list, tuple, set, range)):
        raise UnlearnError(f"{what} must be a list of integer class ids, got {values!r}.")
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, numbers.Integral)]
    if bad:
        raise UnlearnError(f"{what} must be integer class ids, got {bad!r} in {list(values)!r}.")
    return [int(v) for v in values]


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


def _given_params(cls: type, args: tuple, kwargs: dict) -> dict:
    """The arguments `cls(*args, **kwargs)` binds, defaults filled in; **kwargs passed on to a base are
    flattened and completed with the base's defaults. Empty when they do not bind (__init__ then raises)."""
    import inspect

    signature = inspect.signature(cls.__init__)
    try:
        bound = signature.bind(None, *args, **kwargs)
    except TypeError:
        return {}
    bound.apply_defaults()
    params: dict = {}
    forwarded = False
    for name, value in list(bound.arguments.items())[1:]:
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            params.update(value)
            forwarded = True
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            params[name] = value
    base = next((c for c in cls.__mro__[1:] if "__init__" in vars(c)), object)
    if forwarded and base is not object:
        for name, value in _given_params(base, (), {}).items():
            params.setdefault(name, value)
    return params


class Params:
    """Base of every method: records the arguments it was built with, so `get_params()` lists them.

    As scikit-learn's `get_params`: a dict of every constructor parameter (defaults included), which is what
    the runner writes into configs and reports, so it must hold plain JSON values for a registered method.
    """

    _params: dict

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self._params = _given_params(cls, args, kwargs)
        return self

    def get_params(self) -> dict:
        """The constructor parameters of this method, by name (defaults included)."""
        return dict(self._params)
