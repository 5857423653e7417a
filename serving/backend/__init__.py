"""Files that ``dfmod triton`` installs into the bundled server's backend directory.

``model.py`` runs inside Triton's python backend stub, never in dfmod processes: nothing imports it.
"""

from pathlib import Path

BACKEND_NAME = "onnxruntime"
MODEL_PY = Path(__file__).with_name("model.py")
