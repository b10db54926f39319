"""Shared test setup: the repo on sys.path, and a persistent XLA compilation cache.

Compiling a train step takes seconds on a 2-core CPU; with the cache, the many tests (and the
train.py subprocesses they start, which inherit the environment) compile each function once.
"""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(tempfile.gettempdir(), 'disentax-test-xla-cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')


def run_with_model_files_alone(tmp_path, names, script):
    """Run `script` in tmp_path holding only models/<name>.py for each name (no repo on the path):
    a model file must work when copied alone into another project. Returns its stdout."""
    import shutil
    import subprocess
    for name in names:
        shutil.copy(os.path.join(ROOT, 'models', f'{name}.py'), os.path.join(tmp_path, f'{name}.py'))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    result = subprocess.run([sys.executable, '-c', script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout
