"""The composed config → typed :class:`~sweep.config.settings.Settings` and the search
space's :class:`~sweep.config.space.Dimension` s, validated (no Ray, no MLflow here).

Hands on settings, dimensions, and the plain config dict every trial is built from.
"""
