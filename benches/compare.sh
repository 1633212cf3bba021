#!/usr/bin/env bash
# hatchery against its peers, measured the ways that do not flatter:
#
#   benches/compare.sh              the alternating ratios (benches/alternate.rs:
#                                   host CPU, measured clock, cost of a locked
#                                   read-modify-write, then hatchery / peer per
#                                   pair, median and range over runs) and the
#                                   instructions and locked operations per unit
#                                   (benches/instructions.sh, needs valgrind)
#   benches/compare.sh --criterion  the criterion runs of benches/compare.rs
#                                   (about 15 minutes) and their table
#   benches/compare.sh --quick      criterion, short runs, under 5 minutes
#   benches/compare.sh --table      only print the criterion table of the last run
#
# Ratios are hatchery / peer: below 1 means hatchery is faster. Times from
# one machine do not carry to another (see the README's Performance
# section); the ratios of the alternating runs and the instruction counts do
# better, and the host line says what moves them.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  "")
    cargo bench --bench alternate
    echo
    if command -v valgrind >/dev/null; then
      benches/instructions.sh
    else
      echo "(valgrind not found: no instruction counts)"
    fi
    exit 0
    ;;
  --quick) cargo bench --bench compare -- --warm-up-time 0.5 --measurement-time 1 --sample-size 10 >&2 ;;
  --table) ;;
  --criterion) cargo bench --bench compare >&2 ;;
  *) echo "usage: $0 [--criterion|--quick|--table]" >&2; exit 2 ;;
esac

# Reads target/criterion/<group>/<id>/new/estimates.json (mean, in ns).
python3 - <<'PY'
import json, os

root = "target/criterion"

def mean(group, bench):
    path = os.path.join(root, group, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["mean"]["point_estimate"]
    except (OSError, KeyError, ValueError):
        return None

def show(ns):
    if ns is None:
        return "n/a"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"

# (group, hatchery id, [peer ids])
rows = [
    ("spawn_join", "hatchery", ["futures_unordered", "future_group", "moro", "tokio_joinset", "async_executor"]),
    ("spawn_join", "hatchery_parallel", ["async_executor"]),
    ("cancel_idle", "hatchery", ["tokio_token_joinset", "tokio_abort_all"]),
    ("cancel_idle", "hatchery_parallel", ["tokio_token_joinset", "tokio_abort_all"]),
    ("cancel_foreign", "hatchery", ["tokio_abort_all"]),
    ("checkpoint", "hatchery_depth1", ["tokio_is_cancelled"]),
    ("checkpoint", "hatchery_depth1000", ["hatchery_depth1", "tokio_is_cancelled"]),
    ("timeout_scope", "hatchery_move_on_after", ["tokio_timeout", "async_io_timer"]),
    ("nested_tree", "hatchery", ["tokio_joinset"]),
]
print("| workload | hatchery | time | peer | peer time | ratio |")
print("|---|---|---|---|---|---|")
for group, ours, peers in rows:
    mine = mean(group, ours)
    for peer in peers:
        theirs = mean(group, peer)
        ratio = f"{mine / theirs:.2f}x" if mine and theirs else "n/a"
        print(f"| {group} | {ours} | {show(mine)} | {peer} | {show(theirs)} | {ratio} |")

# scale: time per child at each N, relative to N = 1,000.
base = mean("scale", "hatchery/1000")
for n in (1000, 10000, 100000, 1000000):
    t = mean("scale", f"hatchery/{n}")
    per = t / n if t else None
    rel = f"{per / (base / 1000):.2f}x" if per and base else "n/a"
    print(f"| scale | hatchery/{n} | {show(per)} per child | hatchery/1000 | {show(base / 1000 if base else None)} per child | {rel} |")
PY
