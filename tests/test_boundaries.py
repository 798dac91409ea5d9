"""Package boundaries: `device/` imports neither TensorFlow nor the trainer, nor any GPL TTS code."""

import ast
from pathlib import Path

DEVICE = Path(__file__).resolve().parent.parent / "device"
FORBIDDEN = ("tensorflow", "keras", "trainer", "onnxruntime", "kokoro_onnx", "phonemizer", "espeakng_loader")


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_device_modules_never_import_training_or_gpl_code():
    offenders = {
        f"{path.name}: {name}"
        for path in sorted(DEVICE.glob("*.py"))
        for name in _imported_modules(path)
        if name.split(".")[0] in FORBIDDEN
    }
    assert not offenders, f"device/ must stay numpy + TFLite runtime only: {sorted(offenders)}"
