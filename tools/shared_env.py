"""Build (once) or reuse the one heavy environment that every tox env runs in.

tox would install torch + TensorFlow (~6 GB) once per env; instead each tox env calls this,
which creates DIR as a venv with the package and its tf/test extras, and only rebuilds it
when pyproject.toml changes (a stamp file holds its hash).
"""
import hashlib
import pathlib
import subprocess
import sys
import time

root = pathlib.Path(__file__).resolve().parents[1]
env_dir = pathlib.Path(sys.argv[1])
python = env_dir / "bin" / "python"
stamp = env_dir / ".pyproject.sha256"
wanted = hashlib.sha256((root / "pyproject.toml").read_bytes()).hexdigest()

if python.exists() and stamp.exists() and stamp.read_text() == wanted:
    sys.exit(0)
start = time.time()
print(f"building the shared environment in {env_dir} (torch + TensorFlow, a few minutes, once)", flush=True)
subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True)
subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", f"{root}[tf,test]"], check=True)
stamp.write_text(wanted)
print(f"shared environment ready in {time.time() - start:.0f} s", flush=True)
