"""The training objective: L = 1.0 InfoNCE + 0.6 L_SSA + 0.54 L_SHS + 1.0 L_HRAL (weights configurable)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import Tensor, nn

from ..models.spikevimformer import ModelOutput
from .branches import SSA_OBJECTIVES, shs_loss, ssa_loss
from .hral import HRALLoss, HRALMemory
from .infonce import info_nce


@dataclass
class ObjectiveConfig:
    """Weights of the four terms (0 switches a term off) and the InfoNCE and HRAL settings."""

    infonce: float = 1.0
    ssa: float = 0.6
    shs: float = 0.54
    hral: float = 1.0
    ssa_objective: str = "infonce"  # infonce (in-batch negatives; cannot collapse) | paper (1 - cosine: collapses
    # to a constant output within ~100 steps); the ablation that chose it is in the README
    label_smoothing: float = 0.1
    hral_k: int = 15
    hral_k2: int = 6
    hral_alpha: float = 0.7
    hral_tau: float = 0.1
    hral_history: int = 512  # M: recent items per view that shape the neighbourhoods
    hral_memory: int = 4096  # capacity of each FIFO memory


class Objective(nn.Module):
    """Combines the four terms for one step of paired views.

    Single process: `objective(out_q, out_g, labels, model.logit_scale, memory)`.
    Data parallel: also pass `global_q` / `global_g` (the descriptors of all ranks, gathered
    in rank order with gradients flowing back to their owners) and `local_slice` (this
    rank's rows); InfoNCE and HRAL then see the global batch and every term is a mean over
    this rank's rows, so DDP's gradient averaging reproduces one process with the
    concatenated batch (see `infonce.py`); `global_ssa_q` / `global_ssa_g` do the same for the
    SSA descriptors of the InfoNCE L_SSA. Every rank pushes the same global batch into its
    memory, so the memories stay identical.
    """

    def __init__(self, config: ObjectiveConfig | None = None, **overrides) -> None:
        super().__init__()
        config = config or ObjectiveConfig()
        unknown = set(overrides) - set(asdict(config))
        if unknown:
            raise ValueError(f"unknown objective settings {sorted(unknown)}; known: {sorted(asdict(config))}")
        self.config = ObjectiveConfig(**{**asdict(config), **overrides})
        weights = (self.config.infonce, self.config.ssa, self.config.shs, self.config.hral)
        if any(w < 0 for w in weights) or not any(w > 0 for w in weights):
            raise ValueError(f"objective weights must be >= 0 with at least one > 0, got {weights}")
        c = self.config
        if c.ssa_objective not in SSA_OBJECTIVES:
            raise ValueError(f"ssa_objective must be one of {', '.join(SSA_OBJECTIVES)}, got {c.ssa_objective!r}")
        self.hral_loss = HRALLoss(c.hral_k, c.hral_k2, c.hral_alpha, c.hral_tau, c.hral_history)

    def make_memory(self) -> HRALMemory:
        """The FIFO memories HRAL expects, with the configured capacity."""
        return HRALMemory(self.config.hral_memory)

    def forward(
        self,
        out_q: ModelOutput,
        out_g: ModelOutput,
        labels: Tensor | None,
        logit_scale: Tensor | float,
        memory: HRALMemory | None = None,
        *,
        global_q: Tensor | None = None,
        global_g: Tensor | None = None,
        local_slice: slice | None = None,
        global_ssa_q: Tensor | None = None,
        global_ssa_g: Tensor | None = None,
        update_memory: bool = True,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """(weighted total, {term: detached unweighted value}); zero-weight terms are skipped.

        SHS is skipped when the model has no classifier (logits None). The HRAL memory is
        updated with this step's batch after its targets are computed.
        """
        c = self.config
        if (global_q is None) != (global_g is None) or (global_q is not None and local_slice is None):
            raise ValueError("pass global_q, global_g and local_slice together (or none of them)")
        q = out_q.descriptor if global_q is None else global_q
        g = out_g.descriptor if global_g is None else global_g
        if global_q is not None and q[local_slice].shape != out_q.descriptor.shape:
            raise ValueError(
                f"local_slice {local_slice!r} of the global batch {tuple(q.shape)} does not match "
                f"the local descriptors {tuple(out_q.descriptor.shape)}"
            )
        terms: dict[str, Tensor] = {}
        weighted: list[Tensor] = []
        if c.infonce > 0:
            terms["infonce"] = info_nce(q, g, logit_scale, c.label_smoothing, local_slice)
            weighted.append(c.infonce * terms["infonce"])
        if c.ssa > 0:
            if c.ssa_objective == "infonce" and global_ssa_q is not None and global_ssa_g is not None:
                terms["ssa"] = ssa_loss(global_ssa_q, global_ssa_g, c.ssa_objective, c.label_smoothing, local_slice)
            else:
                terms["ssa"] = ssa_loss(out_q.ssa_descriptor, out_g.ssa_descriptor, c.ssa_objective,
                                        c.label_smoothing)  # fmt: skip
            weighted.append(c.ssa * terms["ssa"])
        if c.shs > 0 and out_q.shs_logits is not None and out_g.shs_logits is not None:
            if labels is None:
                raise ValueError("L_SHS needs the location labels of the batch")
            terms["shs"] = shs_loss(out_q.shs_logits, out_g.shs_logits, labels)
            weighted.append(c.shs * terms["shs"])
        if c.hral > 0:
            terms["hral"] = self.hral_loss(q, g, memory, local_slice, update_memory)
            weighted.append(c.hral * terms["hral"])
        if not weighted:
            raise ValueError("every active objective term was skipped (SHS alone needs a classifier)")
        total = weighted[0]
        for term in weighted[1:]:
            total = total + term
        return total, {name: value.detach() for name, value in terms.items()}
