"""The README stays true: its example runs, its commands are the ones CI runs."""

import re
import subprocess
import sys


def readme(repo_root):
    return (repo_root / "README.md").read_text()


def test_readme_example_runs(repo_root, tmp_path):
    text = readme(repo_root)
    example = re.search(r"<!-- readme-example -->\s*```python\n(.*?)```", text, re.S)
    assert example, "README lost its tested example"
    script = tmp_path / "example.py"
    script.write_text(example[1])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"sequential 64 calls, jacobi \d+, gs_jacobi \d+", proc.stdout)


def test_ci_runs_the_readme_test_command(repo_root):
    commands = re.search(r"```bash\n(.*?)```", readme(repo_root), re.S)[1]
    test_command = [line for line in commands.splitlines() if "pytest" in line]
    assert len(test_command) == 1
    assert test_command[0].strip() in (repo_root / ".ci" / "run").read_text()
    main_command = [line for line in commands.splitlines() if "snakemake" in line]
    assert main_command and "figures" in main_command[0]
