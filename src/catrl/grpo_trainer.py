"""TRL's GRPOTrainer with one saving that changes nothing it learns: a micro-batch whose advantages are
all exactly zero skips its forward and backward pass.

GRPO's advantage is a rollout's reward minus its group's mean, so a group whose rollouts all got the same
reward (all wrong against the reference, or all right) has advantages of exactly 0. With no KL term
(beta 0), no entropy bonus and no auxiliary loss, every loss TRL offers multiplies each token by its
advantage, so that micro-batch's loss is 0 and so is its gradient, exactly; computing it costs a forward
and a backward pass, the largest part of a CPU step. Here the pass is replaced by a zero that reaches every
trainable weight, so the gradients are the same zeros, and the optimizer still steps (Adam's moments and
the schedule move as they would). A third of CaT-RL's groups were such groups in the 35-step run
(docs/cat_rl). The metric `zero_advantage_skipped` is the share of micro-batches skipped.

What stays bit-identical is the weights and the optimizer state; the logged entropy and clip ratios average
over the micro-batches computed. There is no skip where it could change anything: dropout (its masks draw
from the RNG), more than one process (every rank must enter the same collectives), a KL, entropy or
auxiliary term. With several questions a step, TRL shuffles the batch across groups, so a micro-batch is
all-zero less often than a group is.
"""

from __future__ import annotations

from typing import Any


def zero_signal(inputs: dict[str, Any], beta: float, extra_terms: bool) -> bool:
    """Whether this micro-batch's loss and gradient are exactly zero: every advantage is 0 and nothing
    but the advantage-weighted term is in the loss."""
    adv = inputs.get("advantages")
    return beta == 0.0 and not extra_terms and adv is not None and bool((adv == 0).all())


def _draws_dropout(model) -> bool:
    """Whether a training forward pass draws random numbers (dropout with p > 0 anywhere, LoRA's included)."""
    import torch

    cached = getattr(model, "_catrl_draws_dropout", None)
    if cached is None:
        config = getattr(model, "config", None)
        cached = any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()) or any(
            float(getattr(config, k, 0.0) or 0.0) > 0 for k in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop"))
        model._catrl_draws_dropout = cached
    return cached


def trainer_class():
    """The GRPOTrainer subclass (TRL imported only when a run is built)."""
    from trl import GRPOTrainer

    class CaTGRPOTrainer(GRPOTrainer):
        def _compute_loss(self, model, inputs):
            extra = bool(getattr(self, "_entropy_bonus_enabled", False) or getattr(self, "aux_loss_enabled", False)
                         or self.accelerator.num_processes > 1  # ranks would disagree on the collectives they enter
                         or _draws_dropout(model))              # a skipped pass would draw no dropout masks: the RNG drifts
            skip = self.model.training and zero_signal(inputs, self.beta, extra)
            if self.model.training:
                self._metrics["train"]["zero_advantage_skipped"].append(float(skip))
            if not skip:
                return super()._compute_loss(model, inputs)
            weights = [p for p in model.parameters() if p.requires_grad]
            return sum(p.sum() for p in weights) * 0.0

    return CaTGRPOTrainer
