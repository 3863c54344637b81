"""Notices printed before a sweep starts: choices the tuning practice advises against.

They never stop a sweep: each says what was seen, why it matters and what to do instead.
"""

from __future__ import annotations

from sweep.config.settings import Settings


def before_sweep(settings: Settings) -> list[str]:
    notices = [settings.searcher.warm_notice] if settings.searcher.warm_notice else []
    n = settings.num_samples
    if settings.searcher.name == "quasi_random" and n & (n - 1):
        lower, upper = 1 << (n.bit_length() - 1), 1 << n.bit_length()
        notices.append(
            f"notice: quasi_random with num_samples={n}: Sobol points cover the space evenly "
            f"at powers of two; use num_samples={lower} or {upper}."
        )
    for dim in settings.dims:
        if dim.key.rsplit(".", 1)[-1].endswith("batch_size"):
            notices.append(
                f"notice: {dim.key} is in the search space. Batch size is not a knob for "
                "validation performance: fix it at the largest size that still speeds up "
                "training (`sweep probe=batch_size` measures it) and tune the learning rate "
                "for that size."
            )
    return notices
