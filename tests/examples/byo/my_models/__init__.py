"""A user's own models, outside this project: nothing here imports `sweep` or `models`."""
