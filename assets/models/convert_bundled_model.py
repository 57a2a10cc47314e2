"""Re-create emotion_mini_xception_fer2013.keras from the original legacy HDF5 file.

The original file (fer 25.10.3, MIT; see ../ATTRIBUTION.md) is kept beside it.
The native .keras format loads with safe_mode=True through the same path as
uploaded models. Run from the repository root:

    python assets/models/convert_bundled_model.py
"""

from pathlib import Path

import keras
import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "emotion_mini_xception_fer2013.hdf5"
TARGET = HERE / "emotion_mini_xception_fer2013.keras"


def main() -> None:
    model = keras.models.load_model(SOURCE, compile=False)
    model.save(TARGET)
    again = keras.models.load_model(TARGET, compile=False, safe_mode=True)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 1)).astype("float32")
    diff = float(np.max(np.abs(model(x) - again(x))))
    assert diff < 1e-6, diff
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes), max output difference {diff:.2e}")


if __name__ == "__main__":
    main()
