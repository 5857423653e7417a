"""Files that ``dfmod triton`` installs into the bundled server's backend directory.

``model.py`` is a Triton python-based backend named ``onnxruntime``; it runs inside the python
backend stub, never inside dfmod processes, so nothing here imports it.
"""

from pathlib import Path

BACKEND_NAME = "onnxruntime"
MODEL_PY = Path(__file__).with_name("model.py")
