"""The core: the mask (``masking``), the pruning scores (``pruning``), key
declarations and yaml layers (``settings``), run-directory names and atomic
writes (``paths``), checkpoints, errors, and the compact table format the
backbones score through (``compact``).  It imports no other layer."""
