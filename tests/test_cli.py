import subprocess
import sys

import pytest

from storyviz.cli.main import COMMANDS, main


def test_help_lists_every_subcommand():
    result = subprocess.run([sys.executable, "-m", "storyviz", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "usage: storyviz" in capsys.readouterr().out
