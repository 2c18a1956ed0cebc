#!/usr/bin/env python3
"""`keras-solo-runtime` from a source checkout: runs exported models (.tflite,
.onnx) without TensorFlow. The code is `keras_solo/runtime/`; on a device,
install the package's runtime instead (`pip install keras-solo[runtime]`,
see export/README.md) and run `keras-solo-runtime`.

    python export/litert_runner.py predict MODEL --source IMAGE|DIR|VIDEO --out DIR
    python export/litert_runner.py benchmark MODEL [--threads N] [--runs R] [--json OUT]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from keras_solo.runtime.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
