"""The demo's int8 file on each emulated ARM core against its x86 run (issue 46): pixels agreeing, outputs
differing, seconds. Needs the ARM runtime (make arm64-runtime).

    python benchmarks/arm64_demo.py      # writes benchmarks/arm64_demo.json
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from export.arm64 import ArmRunner  # noqa: E402
from export.runtimes import LiteRTRunner  # noqa: E402
from kerasseg import data  # noqa: E402

path = "android_demo_assets/segmenter.tflite"
test = data.load_split("shapes", "test", (64, 64), 50)
images = test.images.astype(np.float32)
x86 = np.stack([LiteRTRunner(path)(im) for im in images])
rows = {}
for core in ["cortex-a53", "cortex-a76", "neoverse-n2"]:
    r = ArmRunner(path, core)
    arm = r.run_all(images)
    d = np.abs(arm - x86)
    rows[core] = {"agreement_with_x86": float((arm.argmax(-1) == x86.argmax(-1)).mean()),
                  "outputs_differing": float((d > 0).mean()),
                  "max_abs_difference": float(d.max()), "seconds": r.info["wall_seconds"],
                  "inference_seconds": r.info["seconds"]}
    print(core, rows[core], flush=True)
json.dump({"file": path, "samples": 50, "rows": rows}, open("benchmarks/arm64_demo.json", "w"), indent=1)
