from __future__ import annotations

import os
import re

from service_support import REPO_ROOT


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_second():
    readme = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert readme.startswith("# posecompress\n\n```bash\n")
    assert blocks[0].strip() == "pip install -e . && posecompress serve"
    assert blocks[1].strip() == "pip install -e '.[test]' && pytest"
    ci = REPO_ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    assert f'TEST_COMMAND="{blocks[1].strip()}"' in ci.read_text()
    assert '"$status" -eq 5' in ci.read_text()
