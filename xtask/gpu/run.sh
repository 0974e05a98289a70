#!/usr/bin/env bash
# Staged by `cargo xtask gpu-build` into target/gpu/. On the GPU machine (CUDA 13.0 in /usr/local/cuda,
# PyTorch installed): times VGG16-half and ResNet-20 training epochs with deepcomp (candle, CUDA) and
# with PyTorch on the same generated data, and prints deepcomp's warm-epoch time over PyTorch's.
#
# Environment: EXAMPLES (50000), BATCH (128), EPOCHS (2; the 2nd is the warm one), ARCHS
# ("vgg16_half resnet20"), DEVICE (cuda:0), OUT (results folder; default <this folder>/results).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
examples="${EXAMPLES:-50000}"
batch="${BATCH:-128}"
epochs="${EPOCHS:-2}"
archs="${ARCHS:-vgg16_half resnet20}"
device="${DEVICE:-cuda:0}"
out="${OUT:-$here/results}"
mkdir -p "$out"
# The binary's run path already names /usr/local/cuda/lib64; this covers other layouts. The host stub
# in host-stub/ is for machines without a driver and must not be on this path.
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python="${PYTHON:-python3}"

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true; } | tee "$out/gpu.txt"
"$here/deepcomp" --version

for arch in $archs; do
  "$here/deepcomp" train-epoch --arch "$arch" --device "$device" --examples "$examples" \
    --batch "$batch" --epochs "$epochs" --json "$out/deepcomp-$arch.json" > /dev/null
  "$python" "$here/torch_epoch.py" --arch "$arch" --device "$device" --examples "$examples" \
    --batch "$batch" --epochs "$epochs" --json "$out/torch-$arch.json" > /dev/null
  "$python" "$here/torch_epoch.py" --arch "$arch" --device "$device" --examples "$examples" \
    --batch "$batch" --epochs "$epochs" --data-on-gpu --json "$out/torch-gpudata-$arch.json" > /dev/null
done

"$python" - "$out" $archs <<'EOF'
import json, sys
out, archs = sys.argv[1], sys.argv[2:]
rows = []
for arch in archs:
    d = json.load(open(f"{out}/deepcomp-{arch}.json"))
    t = json.load(open(f"{out}/torch-{arch}.json"))
    tg = json.load(open(f"{out}/torch-gpudata-{arch}.json"))
    if d["parameters"] != t["parameters"]:
        print(f"WARNING {arch}: deepcomp has {d['parameters']} parameters, PyTorch {t['parameters']}")
    rows.append({
        "arch": arch,
        "deepcomp_s": d["warm_seconds"],
        "torch_s": t["warm_seconds"],
        "torch_gpu_data_s": tg["warm_seconds"],
        "ratio": d["warm_seconds"] / t["warm_seconds"],
        "ratio_vs_gpu_data": d["warm_seconds"] / tg["warm_seconds"],
        "deepcomp_first_epoch_s": d["epochs"][0]["seconds"],
        "torch": t["torch"],
        "cudnn_allow_tf32": t["cudnn_allow_tf32"],
        "gpu": t["gpu"],
    })
print(f"{'arch':<12} {'deepcomp s':>11} {'torch s':>9} {'ratio':>7} {'torch s (data on gpu)':>22} {'ratio':>7}")
for r in rows:
    print(f"{r['arch']:<12} {r['deepcomp_s']:>11.3f} {r['torch_s']:>9.3f} {r['ratio']:>7.2f} "
          f"{r['torch_gpu_data_s']:>22.3f} {r['ratio_vs_gpu_data']:>7.2f}")
print("ratio = deepcomp warm-epoch seconds / PyTorch warm-epoch seconds (goal <= 1.5)")
json.dump(rows, open(f"{out}/summary.json", "w"), indent=2)
print(f"wrote {out}/summary.json")
EOF
