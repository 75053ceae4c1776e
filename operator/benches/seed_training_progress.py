"""Times the seed's matplotlib `FLVisualizer.plot_training_progress` on the benchmark's data.

The seed's code is taken verbatim from the first Python block of the seed document that defines
`class FLVisualizer` (plotly, which only its interactive dashboard uses, is stubbed). Usage:

    python seed_training_progress.py SEED_MARKDOWN DATA_JSON OUT_DIR

DATA_JSON maps a round count to {global_loss, global_accuracy, client_participation,
round_duration}. Prints one line per round count: `rounds seconds` (median of 3 warm runs, from
in-memory data to the PNG file, as the seed saves it: 300 dpi, bbox_inches='tight').
"""

import json
import os
import re
import statistics
import sys
import time
import types

seed_md, data_json, out_dir = sys.argv[1:4]
text = open(seed_md, encoding="utf-8").read()
blocks = re.findall(r"```python\n(.*?)```", text, re.S)
code = next(b for b in blocks if "class FLVisualizer" in b)

for name in ["plotly", "plotly.graph_objects", "plotly.express", "plotly.subplots"]:
    sys.modules[name] = types.ModuleType(name)
sys.modules["plotly.subplots"].make_subplots = None

import matplotlib

matplotlib.use("Agg")
namespace = {"os": os}
exec(compile(code, "seed:FLVisualizer", "exec"), namespace)
visualizer = namespace["FLVisualizer"](output_dir=out_dir)

data = json.load(open(data_json))
for rounds, metrics in data.items():
    path = os.path.join(out_dir, f"seed_training_progress_{rounds}.png")
    visualizer.plot_training_progress(metrics, save_path=path)  # warm-up
    times = []
    for _ in range(3):
        started = time.perf_counter()
        visualizer.plot_training_progress(metrics, save_path=path)
        times.append(time.perf_counter() - started)
    print(rounds, statistics.median(times), flush=True)
