#!/usr/bin/env bash
# One 10-minute H200 call for the multi-adapter engine (issue 20), from the repository root with .device/ carried
# (unsloth-site.tgz from ../shared/device/bundle.sh, smollm2-tokenizer/ with SmolLM2's tokenizer files):
#   (a) the gpu-marked tests of the multi engine (and the solo engine's graphs with the chunked loss),
#   (b) the 8-variant seed sweep through the multi-adapter engine and its solo reference (parity per variant),
#   (d) PEFT's fast plan (steps, peak memory) and then (c) the 32-variant sweep with the time left
#       ((d) before (c): a bounded ~60 s item before one that may not finish in what is left; see the plan).
# Results under $OUT; a short table printed last (scripts/gpu_multi_table.py).
set -u
T0=$(date +%s)
. scripts/gpu_env.sh  # OUT, the unpacked bundle, the environment, SP
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" 2>&1
# The image ships no bytecode and sets PYTHONDONTWRITEBYTECODE: compile once, beside the tests (~20 s per process).
( python3 -m compileall -q -j 16 "$SP" /tmp/site harness > "$OUT/compileall.log" 2>&1
  echo "compileall rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/setup.txt" ) &
CA=$!
# (a) peft's bf16 child is left out here: the fp32 test covers PEFT's multi path and the sweep arms its bf16 one.
timeout 170 python3 -m pytest tests/test_multi_gpu.py tests/test_fast_plan.py -m gpu -k "not peft" -q \
  > "$OUT/a-gpu-tests.log" 2>&1
echo "a-gpu-tests rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
wait $CA
# (b), (d), (c): one bench call, items in this order, each capped inside the time left (10 s kept for the table).
LEFT=$(( 590 - ($(date +%s) - T0) ))
python3 -m harness --reports-dir /tmp/rep bench --workload seed --config seed --model random:llama-3.2-3b \
  --arms sweep,sweep-solo,fast-peft,sweep-32 --budget-s $(( LEFT - 10 )) --out "$OUT/seed-workload.json" \
  > "$OUT/bench.log" 2>&1
echo "bench rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
mkdir -p "$OUT/bench-logs" && cp /tmp/rep/bench-seed/logs/*.log "$OUT/bench-logs/" 2>/dev/null
for d in /tmp/rep/bench-seed/sweep-*-reports; do  # each sweep's run: results.json (every variant) and its logs
  [ -d "$d" ] && mkdir -p "$OUT/$(basename "$d")" && cp "$d"/runs/*/results.json "$d"/runs/*/logs/*.log \
    "$OUT/$(basename "$d")/" 2>/dev/null
done
python3 scripts/gpu_multi_table.py "$OUT"
