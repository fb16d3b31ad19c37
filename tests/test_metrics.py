"""Retrieval metrics against a per-query loop written from the spec's definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikevimformer.metrics import (
    format_metrics_table,
    rank_gallery,
    retrieval_metrics,
    save_report,
    top1_percent_index,
)


def reference(q, ql, g, gl, protocol, ap, ks=(1, 5, 10)):
    """Plain Python: rank each query's gallery by cosine, read recalls and AP per the spec."""
    keep = [i for i, lab in enumerate(gl) if lab != -1 and (protocol == "official" or lab in set(ql))]
    g, gl = g[keep], [gl[i] for i in keep]
    size = len(gl)
    top = round(0.01 * size)
    recall = {k: 0 for k in ks}
    top_hits = 0
    ap_total = 0.0
    counted = 0
    for qi in range(len(ql)):
        scores = [float(np.dot(q[qi], g[j])) for j in range(size)]
        order = sorted(range(size), key=lambda j: -scores[j])
        good = [r for r, j in enumerate(order) if gl[j] == ql[qi]]
        if not good:
            continue
        counted += 1
        for k in ks:
            recall[k] += good[0] < k
        top_hits += good[0] <= top
        value = 0.0
        for i, r in enumerate(good):
            p_new = (i + 1) / (r + 1)
            if ap == "published":
                p_old = 1.0 if r == 0 else i / r
                value += (p_old + p_new) / 2 / len(good)
            else:
                value += p_new / len(good)
        ap_total += value
    out = {f"R@{k}": 100 * recall[k] / counted for k in ks}
    out.update({"R@top1%": 100 * top_hits / counted, "AP": 100 * ap_total / counted})
    return out, counted, size


def random_world(seed, queries=40, locations=12, distractors=5, per_location=3, junk=4, dim=8):
    """Queries of `locations` ids; gallery with several images per location, distractors, junk."""
    rng = np.random.default_rng(seed)
    ql = rng.integers(0, locations, queries).tolist()
    ql += [locations + distractors + 7]  # a query whose location is nowhere in the gallery
    gl = [loc for loc in range(locations + distractors) for _ in range(per_location)] + [-1] * junk
    gl = rng.permutation(gl).tolist()

    def unit(n):
        x = rng.normal(size=(n, dim))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    return unit(len(ql)), ql, unit(len(gl)), gl


@pytest.mark.parametrize("protocol", ["paper", "official"])
@pytest.mark.parametrize("ap", ["published", "textbook"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_per_query_loop(protocol, ap, seed):
    q, ql, g, gl = random_world(seed)
    expected, counted, size = reference(q, ql, g, gl, protocol, ap)
    got = retrieval_metrics(q, ql, g, gl, protocol=protocol, ap=ap, chunk_size=7)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
    assert got["queries"] == counted
    assert got["gallery"] == size
    assert got["skipped_queries"] == len(ql) - counted
    assert got["protocol"] == protocol and got["ap_convention"] == ap


def test_gallery_sizes_follow_the_protocol():
    q, ql, g, gl = random_world(3, queries=60, locations=12, distractors=5, per_location=3, junk=4)
    present = len(set(ql) & set(range(12)))
    official = retrieval_metrics(q, ql, g, gl, protocol="official")
    paper = retrieval_metrics(q, ql, g, gl, protocol="paper")
    assert official["gallery"] == 17 * 3  # junk removed, distractors kept
    assert paper["gallery"] == present * 3  # only the queries' locations
    assert official["skipped_queries"] == paper["skipped_queries"] == 1


def test_single_positive_ap_values():
    """One positive at 0-based rank r: published AP 1 at r = 0 and 1/(2(r+1)) after; textbook 1/(r+1)."""
    dim = 12
    gallery = torch.eye(dim)
    for r in range(6):
        # Query closest to item 0, then 1, ...: scores strictly decreasing along the gallery order.
        query = torch.nn.functional.normalize(torch.linspace(1.0, 0.5, dim)[None], dim=1)
        labels = torch.arange(dim) + 100
        labels[r] = 7
        pub = retrieval_metrics(query, [7], gallery, labels, protocol="official", ap="published")
        text = retrieval_metrics(query, [7], gallery, labels, protocol="official", ap="textbook")
        assert pub["AP"] == pytest.approx(100.0 if r == 0 else 100 / (2 * (r + 1)))
        assert text["AP"] == pytest.approx(100 / (r + 1))
        assert pub["R@1"] == (100.0 if r == 0 else 0.0)
        assert pub["R@5"] == (100.0 if r < 5 else 0.0)


def test_top1_percent_reads_one_past_one_percent():
    assert [top1_percent_index(n) for n in (951, 701, 51_355, 200, 80, 3)] == [10, 7, 514, 2, 1, 0]
    # 300 gallery items: index round(3.0) = 3, so a positive at 0-based rank 3 counts, rank 4 does not.
    dim = 300
    query = torch.nn.functional.normalize(torch.linspace(1.0, 0.1, dim)[None], dim=1)
    for rank, expected in ((3, 100.0), (4, 0.0)):
        labels = torch.arange(dim) + 1000
        labels[rank] = 1
        assert retrieval_metrics(query, [1], torch.eye(dim), labels, protocol="official")["R@top1%"] == expected


def test_junk_is_never_ranked():
    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    g = torch.nn.functional.normalize(g, dim=1)
    without_junk = retrieval_metrics(q, [5], g, [-1, 5, 6], protocol="official")
    assert without_junk["R@1"] == 100.0 and without_junk["gallery"] == 2
    with_distractor = retrieval_metrics(q, [5], g, [6, 5, 6], protocol="official")
    assert with_distractor["R@1"] == 0.0 and with_distractor["AP"] == pytest.approx(25.0)


def test_torch_and_numpy_inputs_agree():
    q, ql, g, gl = random_world(4)
    a = retrieval_metrics(q, ql, g, gl)
    b = retrieval_metrics(torch.from_numpy(q), torch.tensor(ql), torch.from_numpy(g), torch.tensor(gl))
    assert a == b


def test_bad_input_is_a_readable_error():
    q, ql, g, gl = random_world(5)
    with pytest.raises(ValueError, match="protocol"):
        retrieval_metrics(q, ql, g, gl, protocol="sample4geo")
    with pytest.raises(ValueError, match="one label per descriptor"):
        retrieval_metrics(q, ql[:-1], g, gl)
    with pytest.raises(ValueError, match="no query has a positive"):
        retrieval_metrics(q, [999] * len(ql), g, gl, protocol="official")


def test_rank_gallery_returns_best_first():
    q, _, g, _ = random_world(6)
    scores, idx = rank_gallery(q, g, k=4, chunk_size=5)
    full = q @ g.T
    assert torch.equal(idx[:, 0], torch.from_numpy(full.argmax(1)))
    assert (scores[:, :-1] >= scores[:, 1:]).all()


def test_table_and_report(tmp_path):
    q, ql, g, gl = random_world(7)
    rows = [
        {"direction": "drone->satellite", **retrieval_metrics(q, ql, g, gl, protocol=p)} for p in ("paper", "official")
    ]
    table = format_metrics_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:6] == ["direction", "R@1", "R@5", "R@10", "R@top1%", "AP"]
    assert len(lines) == 4 and "official" in lines[3] and f"{rows[0]['R@1']:.2f}" in lines[2]
    path = save_report(tmp_path / "sub" / "report.json", {"rows": rows, "desc": torch.tensor([1.5]), "n": np.int64(3)})
    loaded = json.loads(path.read_text())
    assert loaded["rows"][1]["protocol"] == "official" and loaded["desc"] == 1.5 and loaded["n"] == 3
    assert [p.name for p in path.parent.iterdir()] == ["report.json"]  # no temp file left behind


def test_ties_count_against_the_positive():
    """A model that gives every image the same descriptor must not score: ties rank positives last."""
    desc = np.ones((8, 4), dtype=np.float32) / 2
    q_labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    g_desc = np.ones((4, 4), dtype=np.float32) / 2
    m = retrieval_metrics(desc, q_labels, g_desc, np.arange(4), protocol="paper")
    assert m["R@1"] == 0.0 and m["R@5"] == 100.0
    # one positive behind 3 tied negatives: published AP = 1 / (2 * 4)
    assert abs(m["AP"] - 12.5) < 1e-6
