"""The target-entropy anchor shared by SIREN and AER: target = ratio x source.

Each step the method measures one entropy statistic of the OLD policy on the step's rollout batch
(SIREN: the selected nucleus entropy; AER: the token-mean full entropy) and passes it to
:meth:`TargetAnchor.update`. The anchor then holds, for this step:

- ``source: initial``  the value measured at the first step, held for the rest of training
                       (SIREN code: ``entropy_anchor`` computed once at global step 1; AER: H_0).
- ``source: previous`` the value measured at the previous step (the seed summary's reading of
                       SIREN). At the very first step there is no previous value, so the anchor
                       is the first step's own measurement.
- ``source: fixed``    ``entropy.anchor.value``, given in nats.

``target = ratio x anchor``; ``ratio`` = ``entropy.anchor.ratio``, or the method's default when it is
None (SIREN 1.0, AER's tau 0.5). The anchor is state: :meth:`state_dict` / :meth:`load_state_dict`
carry the initial and previous measurements through a checkpoint, so a resumed run keeps its target
instead of re-measuring it on a later (already trained) policy.
"""

from __future__ import annotations

from typing import Any

ANCHOR_SOURCES = ("initial", "previous", "fixed")


class TargetAnchor:
    """target = ratio x source, updated once per step with the step's old-policy measurement."""

    def __init__(self, source: str = "initial", ratio: float = 1.0, value: float | None = None):
        if source not in ANCHOR_SOURCES:
            raise ValueError(f"entropy.anchor.source: {source!r} is not one of {list(ANCHOR_SOURCES)}")
        if not ratio > 0.0:
            raise ValueError(f"entropy.anchor.ratio must be > 0, got {ratio}")
        if source == "fixed" and value is None:
            raise ValueError("entropy.anchor.source is 'fixed' but entropy.anchor.value is missing: give the target entropy in nats")
        self.source = source
        self.ratio = float(ratio)
        self.value = None if value is None else float(value)
        self.initial: float | None = None        # first measurement ever (kept for every source, for logging)
        self.last_measured: float | None = None  # measurement of the most recent step
        self.anchor: float | None = None         # the anchor in force for the current step

    @classmethod
    def from_config(cls, anchor_config: Any, default_ratio: float) -> "TargetAnchor":
        """Build from an ``AnchorConfig`` (or None = defaults); ``ratio: None`` takes ``default_ratio``."""
        if anchor_config is None:
            return cls("initial", default_ratio)
        ratio = anchor_config.ratio if anchor_config.ratio is not None else default_ratio
        return cls(anchor_config.source, ratio, anchor_config.value)

    def update(self, measured: float) -> float:
        """Record this step's measurement; return the anchor in force for this step."""
        measured = float(measured)
        if self.initial is None:
            self.initial = measured
        if self.source == "initial":
            self.anchor = self.initial
        elif self.source == "previous":
            self.anchor = self.last_measured if self.last_measured is not None else measured
        else:
            self.anchor = self.value
        self.last_measured = measured
        return self.anchor

    @property
    def target(self) -> float | None:
        return None if self.anchor is None else self.ratio * self.anchor

    def state_dict(self) -> dict[str, Any]:
        return {"source": self.source, "ratio": self.ratio, "value": self.value, "initial": self.initial,
                "last_measured": self.last_measured, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the measured values. ``source``, ``ratio`` and ``value`` stay as configured, so a
        resumed run that changes them on purpose gets the new rule on the old measurements."""
        self.initial = state.get("initial")
        self.last_measured = state.get("last_measured")
        self.anchor = state.get("anchor")
        if self.source == "fixed":
            self.anchor = self.value
