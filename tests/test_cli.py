"""The command line: instant top-level help, every sub-command's --help, clean errors."""

import subprocess
import sys

import pytest

from medgspo.cli import main

SUBCOMMANDS = [
    ["pretrain"],
    ["sft"],
    ["gspo"],
    ["pipeline"],
    ["data"],
    ["data", "check"],
    ["tiny-model"],
    ["judge"],
    ["eval"],
    ["chat"],
    ["serve"],
    ["export"],
]


def test_top_level_help_does_not_import_torch():
    code = "import sys; from medgspo.cli import main; main(['--help'])"
    proc = subprocess.run(
        [sys.executable, "-c", code + "\nassert 'torch' not in sys.modules, 'torch imported'"],
        capture_output=True,
        text=True,
    )
    assert "COMMAND" in proc.stdout
    assert "torch imported" not in proc.stderr


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "pipeline" in capsys.readouterr().out


def test_bad_flag_value_is_a_clean_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sft", "--learning_rate", "fast"])
    assert exit_info.value.code == 2
    assert "--learning_rate" in capsys.readouterr().err


def test_config_error_names_the_flag(capsys, tmp_path):
    assert main(["sft", "--eval_size", "1.5", "--output_dir", str(tmp_path)]) == 2
    assert "--eval_size" in capsys.readouterr().err
