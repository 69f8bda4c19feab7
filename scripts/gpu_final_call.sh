#!/usr/bin/env bash
# The second device call for the sweep-in-a-minute work, from the repository root with .device/ carried: the GPU tests
# of both engines (Unsloth's child and the fp32 graphs test; PEFT's bf16 child is left out for time: the fp32 test
# covers its multi path), then bench items ARMS (default: PEFT's fast plan, then the 32-variant sweep with the time
# left). Results under $OUT; a short table printed last.
#   bash scripts/gpu_final_call.sh
set -u
T0=$(date +%s)
. scripts/gpu_env.sh  # OUT, the unpacked bundle, the environment, SP
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/rc.txt" 2>&1
( python3 -m compileall -q -j 16 "$SP" /tmp/site harness > /dev/null 2>&1 ) &
timeout "${TESTS_S:-150}" python3 -m pytest tests/test_multi_gpu.py tests/test_fast_plan.py -m gpu -k "not peft" -q \
  > "$OUT/gpu-tests.log" 2>&1
echo "gpu tests rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
wait
L=$(( 585 - ($(date +%s) - T0) ))
ASCIITUNE_MULTI_DECODE_GRAPHS=${DECODE_GRAPHS:-1} python3 -m harness --reports-dir /tmp/rep bench --workload seed --config seed --model random:llama-3.2-3b \
  --arms "${ARMS:-fast-peft,sweep-32}" --budget-s $(( L - 8 )) --out /tmp/final.json > /tmp/final.log 2>&1
echo "bench rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
cp /tmp/final.json "$OUT/"
tar czf "$OUT/logs.tgz" /tmp/final.log /tmp/final-raw.json /tmp/rep/bench-seed/logs \
  /tmp/rep/bench-seed/sweep-*-reports/runs/*/results.json /tmp/rep/bench-seed/sweep-*-reports/runs/*/logs 2>/dev/null
tail -3 "$OUT/gpu-tests.log"
python3 - /tmp/final.json <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for a in d.get("arms", []):
    print(a["name"], a["status"], a["steps"], "steps", a["train_seconds"], "s, warm-up", a["warmup_seconds"],
          "s, peak", round((a.get("peak_reserved_bytes") or 0) / 2 ** 30, 2), "GiB")
for key in ("sweep", "sweep_32"):
    s = d.get(key)
    if s:
        print(key, s["done"], "/", s["variants"], s["wall_seconds"], "s", s["status"],
              [{k: round(v, 1) for k, v in p["phases"].items()} for p in s["processes"]])
for s in d.get("skipped", []):
    print("skipped", s)
PY
cat "$OUT/rc.txt"
