"""Full-sort evaluation batched by a memory budget: same metrics, fewer batches."""
import pytest

from recbole_lth.engine import builder


@pytest.mark.parametrize("model", ["BPR", "NeuMF"])
def test_metrics_do_not_depend_on_the_full_sort_batch_size(quick_run, model):
    small = {"mf_embedding_size": 8, "mlp_embedding_size": 8, "mlp_hidden_size": [16]} if model == "NeuMF" else {}
    common = dict(epochs=2, learning_rate=0.01, eval_batch_size=None, **small)
    # The plugin's default: sized from eval_memory_mb (every ml-100k user in one or a few batches).
    budget = quick_run(model, "dense", **common)
    # RecBole's way: eval_batch_size // n_items users per batch (here 3).
    per_user = quick_run(model, "dense", **{**common, "eval_batch_size": 1682 * 3})
    a, b = budget.rows[0], per_user.rows[0]
    metrics = [k for k in a if k.startswith(("valid_", "test_"))]
    assert metrics and all(a[k] == b[k] for k in metrics), {k: (a[k], b[k]) for k in metrics}
    assert a["test_recall@20"] > 0.05


def test_batch_size_follows_the_budget_and_the_scorer():
    config = {"model": "BPR"}
    assert builder.full_sort_batch_size(config, 1000, 1) == 262 * 1000  # 1 MB of float32 scores
    assert builder.full_sort_batch_size(config, 10**7, 1) == 10**7  # never below one user
    neumf = {"model": "NeuMF", "mf_embedding_size": 64, "mlp_embedding_size": 64, "mlp_hidden_size": [128, 64]}
    assert builder.score_width(neumf) == 3 * 64 + 4 * 64 + 192 + 1
    assert builder.full_sort_batch_size(neumf, 1000, 256) == (256 * 2**18 // (1000 * 641)) * 1000
