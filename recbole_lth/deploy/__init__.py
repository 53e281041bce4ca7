"""A ticket where it runs: the compact export and loading it back, compact or
dense (``export``)."""
