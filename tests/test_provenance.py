"""cff_lib.provenance.git_commit: '+dirty' for code changes, not for the runner's own figures."""
import shutil
import subprocess

import pytest

from cff_lib.provenance import git_commit


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_dirty_flag_ignores_figures_but_not_code(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "t.md").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert not git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "figures" / "t.md").write_text("b\n")
    assert not git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path).endswith("+dirty")
    assert git_commit(tmp_path / "nowhere") == "unknown"
