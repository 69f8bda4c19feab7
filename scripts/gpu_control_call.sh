#!/usr/bin/env bash
# The second H200 call for issue 20: the bf16 parity control (bench/parity_control.py) and the 32-variant sweep.
set -u
T0=$(date +%s)
. scripts/gpu_env.sh  # OUT, the unpacked bundle, the environment, SP
python3 -m compileall -q -j 16 "$SP" /tmp/site harness > /dev/null 2>&1
timeout 200 python3 bench/parity_control.py --out "$OUT/parity-control.json" > "$OUT/parity-control.log" 2>&1
echo "control rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
LEFT=$(( 585 - ($(date +%s) - T0) ))
python3 -m harness --reports-dir /tmp/rep bench --workload seed --config seed --model random:llama-3.2-3b \
  --arms sweep-32 --budget-s $(( LEFT - 5 )) --out "$OUT/seed-workload-32.json" > "$OUT/bench32.log" 2>&1
echo "bench rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
tail -5 "$OUT/parity-control.log"; tail -4 "$OUT/bench32.log"; cat "$OUT/rc.txt"
