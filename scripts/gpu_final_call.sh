#!/usr/bin/env bash
# Issue 32's measurements on one GPU, from the repository root with .device/ carried, in two device calls of under
# ten minutes each (the 32-variant sweep alone takes most of one):
#   PART=1  the Unsloth GPU test of the multi-adapter engine (graphed batched decode, sampled eager and graphed),
#           bench/multi_memory.py (one engine process's memory and time per phase at K = 8; MEMORY_KS=1,4,8), then
#           `bench --arms sweep,fast-peft,sweep-solo` (the 8-variant sweep by phase, PEFT's fast plan, the sweep's
#           solo reference and parity), and a fresh process's backend import under -X importtime (caches warm)
#   PART=2  `bench --arms sweep-32,fast-peft-rows-512` (the 32-variant sweep; PEFT's fast plan at its former row cap,
#           beside part 1's), then the other GPU tests (fp32 graphs against eager and solo, PEFT's bf16 child, the
#           fast plan's) with the time left
# Results under $OUT (bench-part1.json, bench-part2.json and their -raw.json, the sweeps' results.json and logs);
# a short table printed last.
#   PART=1 bash scripts/gpu_final_call.sh
set -u
T0=$(date +%s)
PART=${PART:-1}
. scripts/gpu_env.sh  # OUT, the unpacked bundle, the environment, SP
export ASCIITUNE_MULTI_DECODE_GRAPHS=${DECODE_GRAPHS:-1}
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader > "$OUT/rc.txt" 2>&1
# The image ships no bytecode and sets PYTHONDONTWRITEBYTECODE: compile once, beside the first test.
( python3 -m compileall -q -j 16 "$SP" /tmp/site harness > /dev/null 2>&1
  echo "compileall done at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt" ) &
left() { echo $(( ${TOTAL:-588} - ($(date +%s) - T0) )); }
if [ "$PART" = 1 ]; then
  timeout 150 python3 -m pytest tests/test_multi_gpu.py -m gpu -k "unsloth" -q -rA --durations=3 \
    > "$OUT/gpu-tests-part1.log" 2>&1
  echo "gpu tests (unsloth child) rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
  wait
  # K = 8 only by default: each K's first warm-up compiles the decoder blocks for its row shapes (51.7 s at K = 1 on
  # an H100, reports/gpu-bench/multi-adapter-h100/multi-memory.json), so three Ks do not fit this part's time.
  timeout "${MEMORY_S:-130}" python3 bench/multi_memory.py --ks "${MEMORY_KS:-8}" --out "$OUT/multi-memory.json" \
    > /tmp/multi-memory.log 2>&1
  echo "memory rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
  ARMS=${ARMS:-sweep,fast-peft,sweep-solo}
else
  wait
  ARMS=${ARMS:-sweep-32,fast-peft-rows-512}
fi
L=$(left)
python3 -m harness --reports-dir /tmp/rep bench --workload seed --config seed --model random:llama-3.2-3b \
  --arms "$ARMS" --budget-s $(( L - ${KEEP_S:-25} )) --out "$OUT/bench-part$PART.json" > "$OUT/bench-part$PART.log" 2>&1
echo "bench rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
if [ "$PART" = 2 ] && [ "$(left)" -gt 30 ]; then
  timeout $(( $(left) - 10 )) python3 -m pytest tests/test_multi_gpu.py tests/test_fast_plan.py -m gpu \
    -k "not unsloth" -q -rA --durations=3 > "$OUT/gpu-tests-part2.log" 2>&1
  echo "gpu tests (fp32, peft child, fast plan) rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
fi
# What comes back is limited in files: the bench's and the sweeps' logs and each sweep's results.json in one tarball.
tar czf "$OUT/logs-part$PART.tgz" /tmp/rep/bench-seed/logs /tmp/rep/bench-seed/sweep-*-reports/runs/*/results.json \
  /tmp/rep/bench-seed/sweep-*-reports/runs/*/logs "$OUT"/*.log 2>/dev/null
if [ "$PART" = 1 ] && [ "$(left)" -gt 12 ]; then
  ( time -p timeout 40 python3 -X importtime -c "import harness.backends.unsloth_backend" ) > /dev/null \
    2> /tmp/importtime.txt
  grep -E "^real" /tmp/importtime.txt | sed 's/^/warm import /' >> "$OUT/rc.txt"
  sort -t'|' -k2 -n -r /tmp/importtime.txt | head -40 | sed 's/^/importtime /' >> "$OUT/rc.txt"
fi
echo "total $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
python3 scripts/gpu_final_table.py "$OUT" "$PART"
cat "$OUT/rc.txt"
