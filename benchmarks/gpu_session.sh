#!/usr/bin/env bash
# One prepared session on a GPU machine (16 cores, one GPU, no network): the GPU figures (the
# activation table and the candidate epochs of LeNet-5, VGG-16 and ResNet-18), stacked
# stage-1 candidates against separate ones, the quick start on CUDA, and the search-signal benchmark
# (quick start on the CPUs, full Fashion-MNIST on the GPU). Expects, in the repository root: .whl/
# (optuna and its pure-Python needs, for a machine without them), .before/safs_optuna (the package
# before the change, for the "before" variant) and bench-data/fashion_mnist (the IDX files of
# Debian's dataset-fashion-mnist). Results go to $OUT.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
nvidia-smi -L; nproc; python3 -c "import torch, optuna; print(torch.__version__, optuna.__version__)"
LIMIT=${LIMIT:-450}
start=$(date +%s)
timeout 150 python3 benchmarks/speed.py --sections device --device cuda --repeats 5 --out "$OUT/speed_gpu.md"
timeout 120 python3 benchmarks/stacked_candidates.py --device cuda --out "$OUT/stacked_candidates.md"
timeout $((LIMIT - $(date +%s) + start)) python3 benchmarks/search_signal.py --datasets quickstart --jobs 12 \
  --before-checkout "$PWD/.before" --workdir "$OUT/signal" --out "$OUT/search_signal_quickstart.md" \
  > "$OUT/signal_quickstart.log" 2>&1 &
timeout $((LIMIT - $(date +%s) + start)) python3 benchmarks/search_signal.py --datasets fashion_mnist \
  --fashion-mnist-dir "$PWD/bench-data/fashion_mnist" --variants before,safs --device cuda --jobs 6 --set activations.fraction=0.2 --set hpo.fraction=0.2 \
  --before-checkout "$PWD/.before" --workdir "$OUT/signal" --out "$OUT/search_signal_fmnist.md" \
  > "$OUT/signal_fmnist.log" 2>&1 &
mkdir -p /tmp/qs && ( /usr/bin/time -f "quickstart --device cuda: %e s" timeout $((LIMIT - $(date +%s) + start)) \
  python3 -m safs_optuna.cli run studies/quickstart.toml --device cuda --threads 1 \
  --storage sqlite:////tmp/qs/q.db --set 'artifacts="/tmp/qs/art"' > "$OUT/quickstart_cuda.log" 2>&1 ) 2>> "$OUT/quickstart_cuda.log" &
wait
tail -3 "$OUT/quickstart_cuda.log"; tail -25 "$OUT/signal_quickstart.log"; tail -12 "$OUT/signal_fmnist.log"
rm -rf "$OUT"/signal/*.artifacts
ls "$OUT/signal" | grep -c json
