#!/usr/bin/env bash
# The scale-out figures that need a 16-core machine with a GPU (docs/benchmarks.md), in two steps:
#
#   benchmarks/device.sh wheels   # here, after `make install`: the Python 3.12 wheels that such a
#                                 # machine (no network; JAX, Flax, numpy, pyarrow, grpcio,
#                                 # protobuf installed) lacks, at this venv's versions, into .whl/
#   benchmarks/device.sh run      # there, from the repository root (.whl/ carried along): installs
#                                 # them under /tmp/site, then runs benchmarks/scaleout.py twice:
#                                 # the worker table on CPU JAX (1, 2, 4, 8 workers) and the
#                                 # 64x64x3 image job with JAX on the GPU; logs go to $OUT (or .)
#
# Sizes follow the scale-out issue: 400,000 records for the worker table, 150,000 images.
# RECORDS, IMAGES, WORKERS, REPEATS and GPU_PLATFORM (JAX_PLATFORMS of the image job) override them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Imported by a materialize job but not found on the GPU machine's image (see its package list).
PACKAGES="apache-beam array-record zstandard fastavro fasteners httplib2 jsonpickle objsize proto-plus
pymongo dnspython pytz beartype dill cryptography cffi pycparser tqdm"

wheels() {
  local py=.venv/bin/python pins=()
  [ -x "$py" ] || { echo "device.sh wheels: run 'make install' first (it pins the versions)" >&2; exit 2; }
  for name in $PACKAGES; do
    pins+=("$name==$("$py" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")")
  done
  rm -rf .whl && mkdir .whl
  local platforms=()
  for n in 2_39 2_35 2_34 2_31 2_28 2_27 2_24 2_17 2014 1; do
    case $n in 2014) platforms+=(--platform manylinux2014_x86_64) ;;
               1) platforms+=(--platform manylinux1_x86_64) ;;
               *) platforms+=(--platform "manylinux_${n}_x86_64") ;; esac
  done
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${pins[@]}"
  du -sh .whl
}

run() {
  local out=${OUT:-.}
  ls .whl/*.whl >/dev/null 2>&1 || { echo "device.sh run: no .whl/ (run 'device.sh wheels' here first)" >&2; exit 2; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
  nproc; nvidia-smi -L || true
  python3 -c "import apache_beam, array_record, jax, datarax_beam; print('beam', apache_beam.__version__, 'jax', jax.__version__, jax.devices())"
  # workers: CPU JAX, one XLA thread each (scaleout.py's own setting), as the issue measured them
  JAX_PLATFORMS=cpu python3 benchmarks/scaleout.py --records "${RECORDS:-400000}" \
    --workers "${WORKERS:-1,2,4,8}" --repeats "${REPEATS:-1}" --image-records 0 2>&1 | tee "$out/scaling.log"
  # the image job with JAX on the GPU (XLA's CPU flags do not apply to it)
  JAX_PLATFORMS=${GPU_PLATFORM:-cuda} python3 benchmarks/scaleout.py --records 0 --workers "" \
    --image-records "${IMAGES:-150000}" 2>&1 | tee "$out/images.log"
}

case "${1:-}" in
  wheels) wheels ;;
  run) run ;;
  *) echo "usage: benchmarks/device.sh wheels|run" >&2; exit 2 ;;
esac
