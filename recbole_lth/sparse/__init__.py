"""The pieces methods are built from: dynamic sparsity (``dynamic``),
distillation (``distill``, ``scoring``), baseline widths (``budget``) and MAC
costs (``costs``).  Below ``methods``, above the engine."""
