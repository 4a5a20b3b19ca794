"""How the study writes numbers and tables."""
import math


def fmt(value, digits=3):
    """A number for the text: 3 significant digits, '–' for missing, '∞' and 'NaN' spelled out."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e4):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:  # plain notation with `digits` significant digits (more for large numbers)
        return f"{value:.{max(digits - 1 - math.floor(math.log10(abs(value))), 0)}f}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)
