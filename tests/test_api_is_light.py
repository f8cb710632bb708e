import subprocess
import sys


def test_the_api_never_imports_training_libraries() -> None:
    code = ("import sys, app.main, app.cli; "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'accelerate') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
