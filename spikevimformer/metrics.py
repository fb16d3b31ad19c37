"""Retrieval metrics (Recall@K, Recall@top1%, AP) under the two protocols, plus report tables and files.

Everything runs as batched tensor operations on the descriptors' device, a chunk of queries
at a time, so a University-1652-sized evaluation costs seconds; the trainer's per-epoch
evaluation and the `evaluate` / `robustness` commands all call `retrieval_metrics`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .fileio import atomic_write_text

PROTOCOLS = ("paper", "official")
AP_CONVENTIONS = ("published", "textbook")
JUNK_LABEL = -1
_CHUNK_ELEMENTS = 1 << 22  # query x gallery scores sorted at once (~100 MB of temporaries)

ArrayLike = Tensor | np.ndarray | Sequence[Any]


def _tensor(x: ArrayLike, name: str, device: torch.device | None, dtype: torch.dtype) -> Tensor:
    try:
        t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
        return t.detach().to(device=device, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} is not a numeric array ({exc})") from exc


def _prepare(
    query_desc: ArrayLike, query_labels: ArrayLike, gallery_desc: ArrayLike, gallery_labels: ArrayLike,
    device: str | torch.device | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Check shapes and move everything to one device; descriptors as float32, labels as int64."""
    if device is None:
        device = query_desc.device if isinstance(query_desc, Tensor) else torch.device("cpu")
    device = torch.device(device)
    q = _tensor(query_desc, "query_desc", device, torch.float32)
    g = _tensor(gallery_desc, "gallery_desc", device, torch.float32)
    ql = _tensor(query_labels, "query_labels", device, torch.int64)
    gl = _tensor(gallery_labels, "gallery_labels", device, torch.int64)
    if q.ndim != 2 or g.ndim != 2:
        raise ValueError(f"descriptors must be 2-D (count, dim); got query {tuple(q.shape)}, gallery {tuple(g.shape)}")
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"query descriptors are {q.shape[1]}-d but gallery descriptors are {g.shape[1]}-d")
    if ql.shape != (q.shape[0],) or gl.shape != (g.shape[0],):
        raise ValueError(
            f"need one label per descriptor: {q.shape[0]} queries with labels {tuple(ql.shape)}, "
            f"{g.shape[0]} gallery items with labels {tuple(gl.shape)}"
        )
    if q.shape[0] == 0 or g.shape[0] == 0:
        raise ValueError(f"nothing to evaluate: {q.shape[0]} queries and {g.shape[0]} gallery items")
    # Similarity is the cosine: normalising again is a no-op for already normalised descriptors.
    return F.normalize(q, dim=1), ql, F.normalize(g, dim=1), gl


def select_gallery(query_labels: Tensor, gallery_labels: Tensor, protocol: str) -> Tensor:
    """Boolean mask of the gallery items that are ranked: never junk (-1); under "paper" only query locations."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    keep = gallery_labels != JUNK_LABEL
    if protocol == "paper":
        keep &= torch.isin(gallery_labels, query_labels)
    return keep


def top1_percent_index(gallery_size: int) -> int:
    """CMC index read as Recall@top1%: round(0.01 * gallery size), one past 1 % (published convention).

    Python's round (half to even) as in the University-1652 evaluation script; e.g. 951 -> 10,
    701 -> 7, 51,355 -> 514, 200 -> 2, 80 -> 1. Clamped to the last index for tiny galleries.
    """
    return min(round(0.01 * gallery_size), gallery_size - 1)


def retrieval_metrics(
    query_desc: ArrayLike,
    query_labels: ArrayLike,
    gallery_desc: ArrayLike,
    gallery_labels: ArrayLike,
    protocol: str = "paper",
    ap: str = "published",
    ks: Sequence[int] = (1, 5, 10),
    device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Recall@K, Recall@top1% and AP (all in percent) of cosine-similarity retrieval.

    protocol: "paper" removes gallery items whose label is not among the query labels before
        ranking (Sample4Geo family); "official" ranks the whole gallery (the datasets' own code).
        Gallery items labelled -1 (junk) are removed under both.
    ap: "published" is the trapezoidal Market-1501 / University-1652 formula
        sum_i (1/n) (p_old + p_new) / 2 with p_new = (i+1)/(r_i+1), p_old = i/r_i (1 when r_i = 0);
        "textbook" is the mean precision at each positive.
    Recall@top1% reads the CMC at index round(0.01 * gallery size), i.e. one past 1 % (the
    published convention, see `top1_percent_index`). Queries without a positive in the
    ranked gallery are skipped and not counted, as in the published code. A negative that ties
    with a positive ranks above it (pessimistic), so constant descriptors cannot score.

    Returns {"R@1", "R@5", "R@10", "R@top1%", "AP", "queries", "gallery", "protocol",
    "ap_convention", "skipped_queries", "top1%_index"}; "gallery" is the size actually ranked.
    """
    if ap not in AP_CONVENTIONS:
        raise ValueError(f"ap must be one of {AP_CONVENTIONS}, got {ap!r}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive ranks, got {ks}")
    q, ql, g, gl = _prepare(query_desc, query_labels, gallery_desc, gallery_labels, device)
    keep = select_gallery(ql, gl, protocol)
    g, gl = g[keep], gl[keep]
    size = g.shape[0]
    if size == 0:
        raise ValueError(
            f"no gallery item is left to rank under the {protocol!r} protocol (all junk, or no query location)"
        )
    top_index = top1_percent_index(size)
    cutoffs = torch.tensor([*ks, top_index + 1], device=q.device)
    step = chunk_size or max(1, _CHUNK_ELEMENTS // size)
    positive_index, label_row = _positive_table(gl)

    hits_at = torch.zeros(len(cutoffs), dtype=torch.int64, device=q.device)
    ap_sum = torch.zeros((), dtype=torch.float64, device=q.device)
    counted = torch.zeros((), dtype=torch.int64, device=q.device)
    for start in range(0, q.shape[0], step):
        labels = ql[start : start + step]
        ranks, valid = _positive_ranks(q[start : start + step] @ g.T, labels, gl, positive_index, label_row)
        # ranks: (c, m) 0-based ranks of each query's positives, best first, padded with -1.
        n = valid.sum(dim=1)
        counted_rows = n > 0
        i = torch.arange(ranks.shape[1], device=q.device, dtype=torch.float64)
        r = ranks.clamp(min=0).to(torch.float64)
        p_new = (i + 1) / (r + 1)
        if ap == "published":
            p_old = torch.where(r == 0, 1.0, i / r.clamp(min=1))
            precision = (p_old + p_new) / 2
        else:
            precision = p_new
        ap_rows = (precision * valid).sum(dim=1)[counted_rows] / n[counted_rows]
        ap_sum += ap_rows.sum()
        first = ranks[counted_rows, 0]
        hits_at += (first[:, None] < cutoffs[None, :]).sum(dim=0)
        counted += counted_rows.sum()

    queries = int(counted)
    if queries == 0:
        raise ValueError(
            f"no query has a positive among the {size} ranked gallery items ({protocol} protocol); "
            "check that query and gallery labels use the same location ids"
        )
    recalls = (hits_at.to(torch.float64) * (100.0 / queries)).tolist()
    result: dict[str, Any] = {f"R@{k}": recalls[i] for i, k in enumerate(ks)}
    result["R@top1%"] = recalls[-1]
    result["AP"] = float(ap_sum) * 100.0 / queries
    result.update(
        queries=queries, gallery=size, protocol=protocol, ap_convention=ap,
        skipped_queries=q.shape[0] - queries, **{"top1%_index": top_index},
    )
    return result


def _positive_table(gallery_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Gallery indices of each distinct label as rows of a padded table (-1), and the sorted labels."""
    labels, order = torch.sort(gallery_labels, stable=True)
    unique, counts = torch.unique_consecutive(labels, return_counts=True)
    starts = counts.cumsum(0) - counts
    width = int(counts.max())
    column = torch.arange(labels.numel(), device=labels.device) - torch.repeat_interleave(starts, counts)
    row = torch.repeat_interleave(torch.arange(unique.numel(), device=labels.device), counts)
    table = torch.full((unique.numel(), width), -1, dtype=torch.int64, device=labels.device)
    table[row, column] = order
    return table, unique


def _positive_ranks(
    scores: Tensor, query_labels: Tensor, gallery_labels: Tensor, table: Tensor, table_labels: Tensor
) -> tuple[Tensor, Tensor]:
    """0-based ranks of each query's positives (best first) without sorting the gallery.

    A positive's rank is the number of negatives scoring at or above it plus the number
    of better positives: a per-query sorted list of positive scores is binary-searched for
    every gallery score and the negatives are histogrammed by how many positives they beat.
    Ties between a positive and a negative rank the positive last (pessimistic), so a model that
    gives every image the same descriptor scores nothing rather than everything. Returns
    (ranks padded with -1, validity mask), both (queries, max positives).
    """
    c = scores.shape[0]
    row = torch.searchsorted(table_labels, query_labels).clamp(max=table_labels.numel() - 1)
    has = table_labels[row] == query_labels
    index = torch.where(has[:, None], table[row], -1)  # (c, m) gallery indices of positives, -1 = pad
    pad = index < 0
    pos_scores = torch.gather(scores, 1, index.clamp(min=0)).masked_fill(pad, float("inf"))
    pos_sorted = torch.sort(pos_scores, dim=1).values  # ascending, pads (+inf) last
    m = pos_sorted.shape[1]
    # per gallery item: positives scoring lower or equal (a tie goes against the positive)
    beaten = torch.searchsorted(pos_sorted, scores, right=True)
    beaten.masked_fill_(gallery_labels[None, :] == query_labels[:, None], m + 1)  # positives: own bin
    offsets = torch.arange(c, device=scores.device)[:, None] * (m + 2)
    hist = torch.bincount((beaten + offsets).flatten(), minlength=c * (m + 2)).view(c, m + 2)[:, : m + 1]
    above = hist.flip(1).cumsum(1).flip(1)  # above[:, v]: negatives beating >= v positives
    n = (~pad).sum(dim=1, keepdim=True)
    k = torch.arange(m, device=scores.device)[None, :]
    # The i-th best positive is ascending entry n-1-i; negatives above it beat >= n-i positives.
    valid = k < n
    ranks = torch.gather(above, 1, (n - k).clamp(min=0, max=m)) + k
    return torch.where(valid, ranks, -1), valid


def rank_gallery(
    query_desc: ArrayLike, gallery_desc: ArrayLike, k: int = 10, device: str | torch.device | None = None,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """(scores, indices) of the k most similar gallery items per query, best first; for strips and demos."""
    q, _, g, _ = _prepare(query_desc, np.zeros(len(query_desc)), gallery_desc, np.zeros(len(gallery_desc)), device)
    k = min(int(k), g.shape[0])
    step = chunk_size or max(1, _CHUNK_ELEMENTS // g.shape[0])
    scores, indices = [], []
    for start in range(0, q.shape[0], step):
        s, i = torch.topk(q[start : start + step] @ g.T, k, dim=1)
        scores.append(s)
        indices.append(i)
    return torch.cat(scores), torch.cat(indices)


# ----------------------------------------------------------------------------- reports

_METRIC_ORDER = ("R@1", "R@5", "R@10", "R@top1%", "AP")
_TAIL_ORDER = ("queries", "gallery", "skipped_queries", "protocol", "ap_convention")
_HIDDEN = ("top1%_index",)


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Label columns first (first-seen order), then recalls and AP, then counts and protocol."""
    seen: list[str] = []
    for row in rows:
        for key, value in row.items():
            if key not in seen and key not in _HIDDEN and not isinstance(value, (Mapping, list, tuple)):
                seen.append(key)
    known = set(_METRIC_ORDER) | set(_TAIL_ORDER)
    recall_like = [c for c in seen if c.startswith("R@") and c not in known]
    labels = [c for c in seen if c not in known and c not in recall_like]
    metrics = [c for c in _METRIC_ORDER if c in seen]
    return labels + recall_like + metrics + [c for c in _TAIL_ORDER if c in seen]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "nan" if math.isnan(value) else f"{float(value):.2f}"
    return str(value)


def format_metrics_table(
    rows: Mapping[str, Any] | Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> str:
    """A fixed-width text table of metric dicts (one per row), so every report reads the same way."""
    rows = [rows] if isinstance(rows, Mapping) else list(rows)
    if not rows:
        return "(no results)"
    cols = list(columns) if columns is not None else _columns(rows)
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    numeric = [all(_is_number(row.get(c)) for row in rows) for c in cols]

    def line(values: Sequence[str]) -> str:
        parts = zip(values, widths, numeric, strict=True)
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in parts).rstrip()

    header = line(cols)
    return "\n".join([header, "-" * len(header), *(line(r) for r in cells)])


def _is_number(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool))


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, torch.device, torch.dtype)):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} to a JSON report")


def save_report(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write a JSON report atomically (temp file, then rename), so a crash never leaves half a report."""
    return atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")
