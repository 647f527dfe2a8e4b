"""The literature's rules of thumb, as named estimators shown next to the detailed estimate."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class RuleOfThumb:
    id: str
    label: str
    low_bytes: int
    high_bytes: int  # equal to low_bytes for a point estimate
    source: str


def rules_of_thumb(params: int, bytes_per_param: Fraction, workload: str) -> list[RuleOfThumb]:
    """params x bytes/param (nominal bits / 8 of the precision), and the multipliers the literature adds."""
    weights = int(params * bytes_per_param)
    out = [
        RuleOfThumb("params-x-bytes", "Parameters x bytes per parameter", weights, weights,
                    "Hugging Face, Model memory anatomy: https://huggingface.co/docs/transformers/model_memory_anatomy"),
        RuleOfThumb("x1.2", "Parameters x bytes per parameter x 1.2", weights * 6 // 5, weights * 6 // 5,
                    "EleutherAI, Transformer Math 101 (inference ~1.2 x model memory): https://blog.eleuther.ai/transformer-math/"),
    ]
    if workload != "inference":
        out.append(RuleOfThumb("train-4-6x", "Training = 4-6 x inference memory", 4 * weights, 6 * weights,
                               "EleutherAI, Transformer Math 101: https://blog.eleuther.ai/transformer-math/"))
        out.append(RuleOfThumb("16-bytes", "16 bytes per parameter (mixed-precision Adam)", 16 * params, 16 * params,
                               "Rajbhandari et al. 2019, ZeRO, section 3.1: https://arxiv.org/abs/1910.02054"))
    return out
