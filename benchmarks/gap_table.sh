#!/usr/bin/env bash
# The README's gap table: five `gapkit gap report` runs, figures printed from their gap.json.
# Usage: bash benchmarks/gap_table.sh [WORK_DIR]   (about 3 minutes on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GAPKIT:-.venv/bin/gapkit}
W=${1:-runs/gap-table}
D=../shared/data
mkdir -p "$W"
sim() { [ -f "$1/manifest.jsonl" ] || $G sim "$1" "${@:2}" >/dev/null; }
sim "$W/syn2000" --n 2000
sim "$W/syn2000-lg0" --n 2000 --label-gap 0
sim "$W/real300" --domain real --n 300 --split train
sim "$W/syn400" --n 400 --seed 1
sim "$W/syn400-lg0" --n 400 --seed 1 --label-gap 0
sim "$W/real400" --domain real --n 400 --seed 1
row() {  # name A B [B format]
  local out="$W/report-$1"
  $G gap report --a "$2" --b "$3" ${4:+--from-b $4} -o "$out" --overwrite >/dev/null || [ $? -eq 1 ]
  .venv/bin/python - "$1" "$out/gap.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[2]))
g = list(s["label_gap"].values())[-1]
top = max(g["groups_pct"], key=g["groups_pct"].get)
vg = s.get("visual_gap") or {}
am = g["by_pose_mix"]["A"]
noise = vg.get("stats", {}).get("noise")
print(f"| {sys.argv[1]} | {g['estimate_pct']:.2f}% ({g['ci95_pct'][0]:.2f}-{g['ci95_pct'][1]:.2f}) | "
      f"{am['estimate_pct']:.2f}% ({am['ci95_pct'][0]:.2f}-{am['ci95_pct'][1]:.2f}) | "
      f"{g['noise_floor_pct']:.2f}% | {top} {g['groups_pct'][top]:.2f}% | {g['raw_mean_pct']:.2f}% | "
      + (f"{noise['a_mean']:.2f} / {noise['b_mean']:.2f}" if noise else "-") + " | "
      + (f"{vg['domain_auc']:.3f}" if "domain_auc" in vg else "-") + " |")
PY
}
row "sim synthetic 2,000 vs real 300" "$W/syn2000/manifest.jsonl" "$W/real300/manifest.jsonl"
row "same, --label-gap 0" "$W/syn2000-lg0/manifest.jsonl" "$W/real300/manifest.jsonl"
row "sim synthetic 400 vs real 400" "$W/syn400/manifest.jsonl" "$W/real400/manifest.jsonl"
row "same, --label-gap 0 (400)" "$W/syn400-lg0/manifest.jsonl" "$W/real400/manifest.jsonl"
if [ -d "$D/facesynthetics" ]; then
  row "FaceSynthetics 100 vs 300-W 450" "$D/facesynthetics" "$D/300w" 300w
fi
