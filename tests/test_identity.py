"""A run's identity: model, dataset, method and what differs from the declared
defaults; run directories named by the old rule (every setting hashed) resume."""
import hashlib
import json
import shutil

import pytest

import recbole_lth
from recbole_lth import api
from recbole_lth.core import settings
from recbole_lth.core.errors import ConfigError

CONFIG = {"epochs": 1, "state": "WARNING", "show_progress": False, "progress": False, "embedding_size": 8,
          "train_batch_size": 4096, "eval_batch_size": 40960, "target_sparsities": [0.5]}


# Keys released after the old rule was replaced: an old release stored none of them.
ADDED_SINCE = {"fast_propagation"}


def old_rule(values: dict) -> str:
    """``settings.run_identity`` as released before: every setting an old
    release stored, defaults included."""
    relevant = {k: v for k, v in values.items() if k not in settings.VOLATILE_KEYS and k not in ADDED_SINCE}
    return hashlib.sha1(json.dumps(relevant, sort_keys=True, default=str).encode()).hexdigest()[:8]


def new_default_key(tmp_path, monkeypatch):
    """The plugin's properties as a later release might ship them: one more key, at its default."""
    folder = tmp_path / "properties"
    shutil.copytree(settings.properties_dir(), folder)
    with open(folder / "overall.yaml", "a") as f:
        f.write("\nnew_release_key: 3\n")
    monkeypatch.setattr(settings, "properties_dir", lambda: folder)


def test_a_new_key_at_its_default_changes_no_identity(monkeypatch, tmp_path):
    before = api.settings_for("BPR", "ml-100k", "omp", config_dict=CONFIG)[0]
    identity = settings.run_identity(before, api.plugin_defaults(before))
    legacy = settings.legacy_run_identity(before, api.plugin_defaults(before))
    assert legacy == old_rule(before)  # today's folders are found by the legacy identity
    new_default_key(tmp_path, monkeypatch)
    after = api.settings_for("BPR", "ml-100k", "omp", config_dict=CONFIG)[0]
    assert after["new_release_key"] == 3
    assert settings.run_identity(after, api.plugin_defaults(after)) == identity
    assert settings.legacy_run_identity(after, api.plugin_defaults(after)) == legacy
    changed = {**after, "new_release_key": 4}  # not at its default: part of the identity
    assert settings.run_identity(changed, api.plugin_defaults(changed)) != identity
    # A key set to its default is the default: the same run.
    explicit = api.settings_for("BPR", "ml-100k", "omp", config_dict={**CONFIG, "prune_scope": "global"})[0]
    assert settings.run_identity(explicit, api.plugin_defaults(explicit)) == identity
    other = api.settings_for("BPR", "ml-100k", "omp", config_dict={**CONFIG, "prune_scope": "per_table"})[0]
    assert settings.run_identity(other, api.plugin_defaults(other)) != identity


def test_a_run_dir_of_the_old_rule_is_resumed_after_an_upgrade(tmp_path, monkeypatch, trained_keys):
    config = {**CONFIG, "output_root": str(tmp_path / "runs")}
    stored = api.settings_for("BPR", "ml-100k", "omp", config_dict=config)[0]
    old_dir = tmp_path / "runs" / f"BPR-ml-100k-omp-{old_rule(stored)}"
    new_dir = tmp_path / "runs" / f"BPR-ml-100k-omp-{settings.run_identity(stored, api.plugin_defaults(stored))}"
    assert old_dir != new_dir
    first = recbole_lth.run("BPR", "ml-100k", "omp", config_dict={**config, "run_dir": str(old_dir)})
    assert trained_keys == ["dense", "omp_0.5"]
    trained_keys.clear()
    again = recbole_lth.run("BPR", "ml-100k", "omp", config_dict=config)  # the same command, no run_dir
    assert again.run_dir.resolve() == old_dir.resolve() and trained_keys == []
    new_default_key(tmp_path, monkeypatch)  # the upgrade adds a key; settings.json there lacks it
    assert "new_release_key" not in json.loads((old_dir / "settings.json").read_text())
    upgraded = recbole_lth.run("BPR", "ml-100k", "omp", config_dict=config)
    assert upgraded.run_dir.resolve() == old_dir.resolve() and trained_keys == []
    assert upgraded.rows == first.rows
    assert not new_dir.exists()
    # --run_dir=OLD is not refused either; a key that really differs still is.
    recbole_lth.run("BPR", "ml-100k", "omp", config_dict={**config, "run_dir": str(old_dir)})
    assert trained_keys == []
    with pytest.raises(ConfigError, match=r"these differ: prune_scope\)"):
        recbole_lth.run("BPR", "ml-100k", "omp", config_dict={**config, "run_dir": str(old_dir),
                                                              "prune_scope": "per_table"})


def released_with(tmp_path, monkeypatch, key: str, value) -> None:
    """The plugin as the release that introduced ``key`` shipped it: its default ``value``
    (in dsl.yaml), no changed default recorded."""
    folder = tmp_path / "old_properties"
    shutil.copytree(settings.properties_dir(), folder)
    text = (folder / "dsl.yaml").read_text()
    (folder / "dsl.yaml").write_text(text.replace(f"{key}: {not value}", f"{key}: {value}"))
    monkeypatch.setattr(settings, "properties_dir", lambda: folder)
    monkeypatch.setattr(settings, "RELEASED_DEFAULTS", {})


def test_a_changed_default_keeps_old_folders_and_gives_new_runs_their_own(tmp_path, monkeypatch, trained_keys):
    key = "dsl_regrow_dropped"
    assert settings.RELEASED_DEFAULTS[key] is False
    assert api.settings_for("BPR", "ml-100k", "dsl", config_dict=CONFIG)[0][key] is True  # today's default
    config = {**CONFIG, "output_root": str(tmp_path / "runs")}
    with monkeypatch.context() as old_release:
        released_with(tmp_path, old_release, key, False)
        assert api.settings_for("BPR", "ml-100k", "dsl", config_dict=config)[0][key] is False
        before = recbole_lth.run("BPR", "ml-100k", "dsl", config_dict=config)
    assert trained_keys == ["dsl_0.5"]
    stored = json.loads((before.run_dir / "settings.json").read_text())
    assert stored[key] is False

    # The old command, its value now spelled out: the old folder, nothing trained.
    trained_keys.clear()
    again = recbole_lth.run("BPR", "ml-100k", "dsl", config_dict={**config, key: False})
    assert again.run_dir.resolve() == before.run_dir.resolve() and trained_keys == []
    assert again.rows == before.rows
    # The same command at the new default: a folder of its own, trained.
    changed = recbole_lth.run("BPR", "ml-100k", "dsl", config_dict=config)
    assert changed.run_dir.resolve() != before.run_dir.resolve() and "dsl_0.5" in trained_keys
    # A run made before the key existed stored none of it: it ran the released value.
    del stored[key]
    (before.run_dir / "settings.json").write_text(json.dumps(stored))
    trained_keys.clear()
    recbole_lth.run("BPR", "ml-100k", "dsl", config_dict={**config, "run_dir": str(before.run_dir), key: False})
    assert trained_keys == []
    with pytest.raises(ConfigError, match=rf"these differ: {key}\)"):
        recbole_lth.run("BPR", "ml-100k", "dsl", config_dict={**config, "run_dir": str(before.run_dir)})
