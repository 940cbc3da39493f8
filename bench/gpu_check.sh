#!/usr/bin/env bash
# GPU check: one trial's model trained on the GPU (fused cuDNN kernels; fp32 and bf16 autocast)
# vs the CPU, step time and throughput, as JSON + a table. Run on a machine with a CUDA GPU:
#   bash bench/gpu_check.sh            (uses .venv if present, else python3)
# Needs a CUDA build of torch==2.13.0 on that machine; nothing else from the network.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
"$PY" - "$OUT" <<'EOF'
import json, sys, time
import torch
from lightning_modules.models import SequenceModel

out_dir = sys.argv[1]
if not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA device visible to torch")
torch.backends.cudnn.benchmark = True
rows = []
configs = [  # (cell, layers, hidden, bidirectional, batch, T, features)
    ("gru", 1, 64, True, 100, 40, 1),       # the MNIST-1D demo model
    ("lstm", 2, 128, False, 128, 28, 28),   # the seed's row-MNIST LSTM
    ("lstm", 2, 512, False, 256, 200, 64),  # a large model, where a GPU pays
]
for cell, layers, hidden, bi, batch, steps, feats in configs:
    for device, dtype in (("cpu", None), ("cuda", None), ("cuda", torch.bfloat16)):
        torch.manual_seed(0)
        model = SequenceModel(feats, 10, cell_type=cell, hidden_size=hidden, num_layers=layers,
                              bidirectional=bi).to(device)
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        x = torch.randn(batch, steps, feats, device=device)
        y = torch.randint(0, 10, (batch,), device=device)
        def step():
            with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        n = 5 if device == "cpu" else 50
        for _ in range(3):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(n):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        ms = (time.perf_counter() - t) / n * 1000
        rows.append({"model": f"{cell} L{layers} h{hidden}{' bi' if bi else ''} B{batch} T{steps}",
                     "device": device + ("+bf16" if dtype else ""), "step_ms": round(ms, 3),
                     "seq_per_s": round(batch / ms * 1000, 1)})
        print(f"{rows[-1]['model']:<32} {rows[-1]['device']:<10} {ms:9.3f} ms/step "
              f"{rows[-1]['seq_per_s']:>10.1f} seq/s", flush=True)
for r in rows:
    cpu = next(c for c in rows if c["model"] == r["model"] and c["device"] == "cpu")
    r["speedup_vs_cpu"] = round(cpu["step_ms"] / r["step_ms"], 2)
info = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(), "cpu_threads": torch.get_num_threads(), "rows": rows}
json.dump(info, open(f"{out_dir}/gpu_check.json", "w"), indent=2)
print(json.dumps({r["model"] + " " + r["device"]: r["speedup_vs_cpu"] for r in rows}, indent=1))
EOF
