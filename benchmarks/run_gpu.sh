#!/usr/bin/env bash
# GPU session for the transport backends (see benchmarks/RESULTS.md, "Transfers (GPU)").
# Usage, from a checkout on a 2-GPU host:  [BENCH=0] bash benchmarks/run_gpu.sh nixl|ucx|ring WHEEL_DIR [OUT_DIR]
# Installs the carried transport wheels (no deps: torch, numpy, cupy are already there),
# installs kvplan editable (entry points), runs the GPU tests with KVPLAN_REQUIRE_GPU=1
# and the benchmark: "nixl" runs the nixl tests and benchmark, "ucx" everything else
# (cupy, ucx); the bulk peer copy every rate is compared with runs in both. Tests and
# benchmark drive the backends through the transport protocol (prepare once, execute /
# serve per request, plain execute of a lowered Transfer); the prefill ranks of nixl and
# ucx run in a second process (tests/backends/_pairing.py). Every result is byte-compared.
set -uo pipefail
transport=$1 wheels=$2 out=${3:-${OUT:-/tmp/kvplan-gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=dev KVPLAN_REQUIRE_GPU=1 NCCL_NVLS_ENABLE=0
site=/tmp/site-$transport
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl || exit 3
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || { cat "$out/install.log"; exit 4; }
{ nvidia-smi --query-gpu=name,driver_version --format=csv; nvidia-smi topo -m; python3 -c "import cupy, numpy; print('cupy', cupy.__version__, 'numpy', numpy.__version__)"; } >"$out/env-$transport.txt" 2>&1
# "ring": the nixl bounce runs alone (no direct runs), whole-request staging and staging
# rings of RING_MIB chunks (default 16,64 MiB per rank pair), pull and push
bench_args=()
if [ "$transport" = ring ]; then sel="bounce and nixl"; backends=nixl
  bench_args=(--bounce-only --ring-mib "${RING_MIB:-16,64}" ${QUICK:+--quick})
elif [ "$transport" = nixl ]; then sel="nixl"; backends=nixl; else sel="not nixl"; backends=cupy,ucx; fi
if [ "${TESTS:-1}" != 0 ]; then   # TESTS=0: benchmark only (it byte-checks every result too)
timeout 300 python3 -m pytest -q -p no:cacheprovider tests/backends/test_gpu.py tests/backends/test_two_process.py -k "$sel" 2>&1 \
  | grep -v "NIXL INFO" | tee "$out/tests-$transport.log"
fi
[ "${BENCH:-1}" = 0 ] && exit 0   # BENCH=0: tests only
timeout "${BENCH_TIMEOUT:-330}" python3 benchmarks/bench_transfer.py --backends "$backends" "${bench_args[@]}" \
  --json "$out/bench-$transport.json" 2>&1 \
  | grep -v "NIXL INFO\|UCX  WARN" | tee "$out/bench-$transport.log"
