"""--help and --version come from the declarations: every method and key has a line."""
import pytest

from recbole_lth import methods
from recbole_lth.cli import main
from recbole_lth.core import settings
from recbole_lth.helptext import defaults


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_lists_every_method_and_key_with_its_default(capsys, flag):
    assert main([flag]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    for method in methods.METHODS.values():
        line = next(line for line in lines if line.startswith(f"  {method.name} "))
        start = " ".join(line.split()[1:])  # the summary, wrapped after its first line
        assert len(start) > 20 and method.summary.startswith(start), (method.name, line)
    default = defaults()
    for key in list(methods.all_keys().values()) + list(settings.RECBOLE_KEYS):
        assert key.help and key.allowed, key.name
        line = next((line for line in lines if line.startswith(f"  {key.name} ")), None)
        assert line is not None, f"{key.name} has no help line"
        if key.name in default:
            assert line.split()[1].startswith(default[key.name].split()[0]), key.name
    assert "kd_weight               0 (imp_kd, omp_kd, rp_kd: 1.0)" in text


def test_help_with_other_arguments_and_version(capsys):
    assert main(["--model=BPR", "--help"]) == 0
    assert "methods (--method):" in capsys.readouterr().out
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("recbole_lth 0.2.0, RecBole 1.2.1, torch ")
