#!/usr/bin/env bash
# A short device call (about four minutes) for the memory plan and the decode fix, from the repository root with
# .device/ carried: bench/multi_memory.py (peak memory and time per phase of one engine process at K = 1, 4, 8),
# the Unsloth GPU test of the multi-adapter engine (its graphed batched decode), and a fresh process's import of
# the backend under -X importtime after the others warmed the machine's caches. Results under $OUT.
#   bash scripts/gpu_diag_call.sh
set -u
T0=$(date +%s)
. scripts/gpu_env.sh  # OUT, the unpacked bundle, the environment, SP
nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv,noheader > "$OUT/rc.txt" 2>&1
( python3 -m compileall -q -j 16 "$SP" /tmp/site harness > /dev/null 2>&1
  echo "compileall done at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt" ) &
timeout "${MEMORY_S:-150}" python3 bench/multi_memory.py --out "$OUT/multi-memory.json" > "$OUT/multi-memory.log" 2>&1
echo "memory rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
wait
timeout "${TESTS_S:-120}" python3 -m pytest tests/test_multi_gpu.py -m gpu -k "unsloth" -q -rA --durations=5 \
  > "$OUT/gpu-tests.log" 2>&1
echo "gpu tests rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
( time -p python3 -X importtime -c "import harness.backends.unsloth_backend" ) > /dev/null 2> /tmp/importtime.txt
grep -E "^real" /tmp/importtime.txt >> "$OUT/rc.txt"
sort -t'|' -k2 -n -r /tmp/importtime.txt | head -40 > "$OUT/importtime-top.txt"
du -sh ~/.triton/cache /tmp/torchinductor_* unsloth_compiled_cache 2>/dev/null >> "$OUT/rc.txt"
echo "total $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
tail -5 "$OUT/multi-memory.log"; tail -4 "$OUT/gpu-tests.log"; cat "$OUT/rc.txt"
