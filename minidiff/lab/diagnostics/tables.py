"""The sweep's rows gathered into tables: what the stability figure and the study read."""
import numpy as np


def divergence_table(rows, row_key="target", col_key="lr"):
    """(row labels, column labels, rate (R, C), count (R, C)): the fraction of valid cells that diverged."""
    valid = [r for r in rows if r.get("status") in ("ok", "diverged", "blow-up")]
    row_labels = list(dict.fromkeys(r[row_key] for r in rows))
    col_labels = sorted(dict.fromkeys(r[col_key] for r in rows))
    rate, count = np.full((len(row_labels), len(col_labels)), np.nan), np.zeros((len(row_labels), len(col_labels)))
    for i, a in enumerate(row_labels):
        for j, b in enumerate(col_labels):
            hits = [r["diverged"] for r in valid if r[row_key] == a and r[col_key] == b]
            count[i, j] = len(hits)
            if hits:
                rate[i, j] = np.mean(hits)
    return row_labels, col_labels, rate, count
