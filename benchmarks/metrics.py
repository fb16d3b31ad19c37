"""Time `retrieval_metrics` at University-1652 test sizes on random L2-normalised 240-d descriptors.

Drone -> satellite: 37,855 queries x 951 gallery (701 query locations + 250 distractors, one
positive each); satellite -> drone: 701 queries x 51,355 gallery (54 positives each).
Prints the median of several runs per shape, protocol and AP convention.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from spikevimformer.metrics import retrieval_metrics

DIM = 240


def drone_to_satellite(gen: torch.Generator) -> tuple:
    q_labels = torch.arange(701).repeat_interleave(54)[:37_855]
    q_labels = torch.cat([q_labels, torch.arange(37_855 - len(q_labels))])  # 37,854 + 1 extra query
    g_labels = torch.arange(951)
    return _descs(len(q_labels), gen), q_labels, _descs(951, gen), g_labels


def satellite_to_drone(gen: torch.Generator) -> tuple:
    q_labels = torch.arange(701)
    g_labels = torch.arange(951).repeat_interleave(54)[:51_355]
    g_labels = torch.cat([g_labels, torch.arange(51_355 - len(g_labels))])
    return _descs(701, gen), q_labels, _descs(len(g_labels), gen), g_labels


def _descs(n: int, gen: torch.Generator) -> torch.Tensor:
    return F.normalize(torch.randn(n, DIM, generator=gen), dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {DIM}-d descriptors, "
          f"median of {args.repeats} runs")
    for name, make in (("drone->satellite", drone_to_satellite), ("satellite->drone", satellite_to_drone)):
        data = make(gen)
        for protocol in ("official", "paper"):
            for ap in ("published", "textbook"):
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    result = retrieval_metrics(*data, protocol=protocol, ap=ap)
                    times.append(time.perf_counter() - start)
                print(f"{name:<17} {len(data[0]):>6} x {result['gallery']:>6} {protocol:<9} {ap:<10} "
                      f"median {statistics.median(times):6.2f} s  (min {min(times):.2f}, max {max(times):.2f}); "
                      f"R@1 {result['R@1']:.2f} AP {result['AP']:.2f}")


if __name__ == "__main__":
    main()
