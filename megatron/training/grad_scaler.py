"""Loss scaling for fp16 training: a constant scaler and Megatron's dynamic scaler with hysteresis.

The scaler only holds the scale and its trackers; the optimizer multiplies the loss by ``scale``, unscales the
fp32 main gradients with ``inv_scale``, decides ``found_inf`` (all-reduced over the tensor-parallel group) and
calls :meth:`update` with it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ConstantGradScaler", "DynamicGradScaler", "build_grad_scaler"]


class ConstantGradScaler:
    """A fixed loss scale (``--loss-scale S``); steps with inf/nan gradients are still skipped."""

    def __init__(self, scale: float) -> None:
        if scale <= 0:
            raise ValueError(f"loss scale ({scale}) must be positive; change --loss-scale")
        self.scale = float(scale)

    @property
    def inv_scale(self) -> float:
        return 1.0 / self.scale

    def update(self, found_inf: bool) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])


class DynamicGradScaler:
    """Megatron's dynamic loss scale.

    * An overflow resets the growth tracker and spends one unit of hysteresis; once ``hysteresis`` overflows have
      been spent the scale is multiplied by ``backoff_factor`` (floored at ``min_scale``).
    * ``growth_interval`` clean steps in a row multiply the scale by ``growth_factor`` and refill the hysteresis.
      As in Megatron, clean steps alone do not refill the hysteresis, so isolated overflows far apart accumulate.
    """

    def __init__(
        self,
        initial_scale: float = 2.0**32,
        min_scale: float = 1.0,
        growth_factor: float = 2.0,
        backoff_factor: float = 0.5,
        growth_interval: int = 1000,
        hysteresis: int = 2,
    ) -> None:
        if not (initial_scale > 0 and min_scale > 0 and initial_scale >= min_scale):
            raise ValueError(
                f"need initial loss scale ({initial_scale}) >= min loss scale ({min_scale}) > 0;"
                " change --initial-loss-scale / --min-loss-scale"
            )
        if growth_interval < 1 or hysteresis < 1:
            raise ValueError(
                f"loss scale window ({growth_interval}) and hysteresis ({hysteresis}) must be >= 1;"
                " change --loss-scale-window / --hysteresis"
            )
        assert growth_factor > 1.0 and 0.0 < backoff_factor < 1.0, "growth must grow and backoff must shrink"
        self.scale = float(initial_scale)
        self.min_scale = float(min_scale)
        self.growth_factor = growth_factor
        self.backoff_factor = backoff_factor
        self.growth_interval = growth_interval
        self.hysteresis = hysteresis
        self._growth_tracker = 0
        self._hysteresis_tracker = hysteresis

    @property
    def inv_scale(self) -> float:
        return 1.0 / self.scale

    def update(self, found_inf: bool) -> None:
        """Adapt the scale after a step whose unscaled gradients did (``found_inf``) or did not overflow."""
        if found_inf:
            self._growth_tracker = 0
            self._hysteresis_tracker -= 1
            if self._hysteresis_tracker <= 0:
                self.scale = max(self.scale * self.backoff_factor, self.min_scale)
            return
        self._growth_tracker += 1
        if self._growth_tracker == self.growth_interval:
            self._growth_tracker = 0
            self._hysteresis_tracker = self.hysteresis
            self.scale *= self.growth_factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "scale": self.scale,
            "growth_tracker": self._growth_tracker,
            "hysteresis_tracker": self._hysteresis_tracker,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale = float(state["scale"])
        self._growth_tracker = int(state["growth_tracker"])
        self._hysteresis_tracker = int(state["hysteresis_tracker"])


def build_grad_scaler(
    *, fp16: bool, loss_scale: float | None, initial_loss_scale: float, min_loss_scale: float,
    loss_scale_window: int, hysteresis: int,
) -> ConstantGradScaler | DynamicGradScaler | None:
    """The scaler for the precision mode: none for fp32/bf16, constant with ``loss_scale``, else dynamic."""
    if not fp16:
        return None
    if loss_scale is not None:
        return ConstantGradScaler(loss_scale)
    return DynamicGradScaler(
        initial_scale=initial_loss_scale, min_scale=min_loss_scale,
        growth_interval=loss_scale_window, hysteresis=hysteresis,
    )
