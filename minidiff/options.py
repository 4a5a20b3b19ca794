"""Names that carry numbers: 'edm:sigma_data=0.57', 'p2:k=1,gamma=0.5', 'logit-normal:m=0,s=1'.

A target, a weighting or a time sampler is chosen by name, and some have numbers of their own (EDM's σ_data,
P2's k and γ, the logit-normal's m and s). They travel as one string, `name` or `name:key=value,key=value`, so that
every function that takes a name takes them too, and a run's config.json says exactly what was trained. A key left
out keeps its published default.
"""

import math

KEY_ALIASES = {"γ": "gamma", "σ_data": "sigma_data", "sigma_d": "sigma_data", "P_mean": "p_mean", "P_std": "p_std"}


def parse(spec, known, kind, aliases=None):
    """(name, {key: value}) of `spec`; known = {name: {key: default}}, aliases = {other name: name}.

    A ValueError names what was wrong and what is allowed: an unknown name, an unknown key, a value that is not a
    finite number.
    """
    if not isinstance(spec, str):
        raise ValueError(f"a {kind} is a name, got {spec!r}")
    name, _, rest = spec.partition(":")
    name = (aliases or {}).get(name.strip(), name.strip())
    if name not in known:
        names = list(known) + list(aliases or {})
        raise ValueError(f"unknown {kind} {spec!r}; choose one of: {', '.join(names)}")
    values = dict(known[name])
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, equals, text = (part.strip() for part in item.partition("="))
        key = KEY_ALIASES.get(key, key)
        if not equals or key not in values:
            allowed = ", ".join(values) or "none"
            raise ValueError(f"{kind} {name} has no option {key!r} (write {name}:key=value); its options are: "
                             f"{allowed}")
        try:
            values[key] = float(text)
        except ValueError:
            raise ValueError(f"{kind} {name}: {key} must be a number, got {text!r}") from None
        if not math.isfinite(values[key]):
            raise ValueError(f"{kind} {name}: {key} must be a finite number, got {text!r}")
    return name, values


def spec(name, values, defaults):
    """The canonical string of (name, values): the name alone, then `:key=value,…` for values off their defaults
    (each value written in full, so that parsing the string gives the same floats back)."""
    changed = [f"{key}={float(values[key])!r}" for key in defaults if values[key] != defaults[key]]
    return name + (":" + ",".join(changed) if changed else "")
