#!/usr/bin/env bash
# The first device call for the sweep-in-a-minute work, from the repository root with .device/ carried: profile first
# (bench/multi_profile.py: imports and load, first calls, a step's kernels, graphed steps, probes, the LoRA product's
# two forms, batched sampling eager vs graphs), then this tree's 8-variant sweep and PEFT's fast plan, the landed
# code's 8-variant sweep (BASE: its harness) on the same card, and the sweep's solo reference with the time left.
#   BASE=/tmp/base bash scripts/gpu_profile_call.sh      # BASE: a copy of the landed tree (harness/, data/)
# Results under $OUT; a short table printed last.
set -u
T0=$(date +%s)
. scripts/gpu_env.sh  # OUT, the unpacked bundle, the environment, SP
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/rc.txt" 2>&1
( python3 -m compileall -q -j 16 "$SP" /tmp/site harness "$BASE/harness" > /dev/null 2>&1
  echo "compileall done at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt" ) &
left() { echo $(( ${TOTAL:-585} - ($(date +%s) - T0) )); }
profile() {  # $1: seconds at most
  [ "$1" -gt 30 ] || return 0
  timeout "$1" python3 bench/multi_profile.py --steps 10 --out "$OUT/multi-profile.json" > /tmp/profile.log 2>&1
  echo "profile rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
}
[ -n "${BENCH_FIRST:-}" ] || profile "${PROFILE_S:-120}"
[ -n "${BENCH_FIRST:-}" ] || wait
sweep() {  # $1: tree, $2: name, $3: cap
  ( cd "$1" && PYTHONPATH=/tmp/site:$1 python3 -m harness --reports-dir "/tmp/rep-$2" bench --workload seed \
      --config seed --model random:llama-3.2-3b --arms sweep --budget-s "$3" --out "/tmp/$2.json" > "/tmp/$2.log" 2>&1 )
  echo "$2 rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
  cp "/tmp/$2.json" "$OUT/$2.json" 2>/dev/null
}
bench() {  # $1: name, $2: arms, $3: budget
  ( PYTHONPATH=/tmp/site:$PWD ASCIITUNE_MULTI_DECODE_GRAPHS=${DECODE_GRAPHS:-1} python3 -m harness \
      --reports-dir "/tmp/rep-$1" bench --workload seed --config seed \
      --model random:llama-3.2-3b --arms "$2" --budget-s "$3" --out "/tmp/$1.json" > "/tmp/$1.log" 2>&1 )
  echo "$1 rc $? at $(( $(date +%s) - T0 )) s" >> "$OUT/rc.txt"
  cp "/tmp/$1.json" "$OUT/$1.json" 2>/dev/null
}
L=$(left); bench sweep-new sweep,fast-peft $(( L < 190 ? L - 5 : 190 ))
[ -z "${BENCH_FIRST:-}" ] || profile $(( $(left) - 5 ))
L=$(left); [ -n "${SKIP_LANDED:-}" ] || [ "$L" -lt 135 ] || sweep "$BASE" sweep-landed $(( L < 155 ? L - 5 : 150 ))
L=$(left); [ "$L" -gt 80 ] && bench sweep-solo sweep-solo $(( L - 8 ))
tar czf "$OUT/logs.tgz" /tmp/profile.log /tmp/sweep-*.log /tmp/sweep-*-raw.json /tmp/rep-*/bench-seed/logs \
  /tmp/rep-*/bench-seed/sweep-*-reports/runs/*/results.json /tmp/rep-*/bench-seed/sweep-*-reports/runs/*/logs \
  2>/dev/null
tail -12 /tmp/profile.log
for f in sweep-landed sweep-new sweep-solo; do python3 - "$OUT/$f.json" <<'EOF'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
    s = d["sweep"] or d["sweep_32"]
    print(sys.argv[1].split("/")[-1], s["done"], "/", s["variants"], s["wall_seconds"], "s", s["status"],
          [{k: round(v, 1) for k, v in p["phases"].items()} for p in s["processes"]],
          "parity", s.get("parity_max_rel_diff"), s.get("parity_ok"))
except Exception as exc:
    print(sys.argv[1], "no sweep:", exc)
EOF
done
cat "$OUT/rc.txt"
