#!/usr/bin/env bash
# Instructions and locked operations per unit of work (per child, per check,
# per scope), counted by callgrind: figures that do not depend on the
# machine's load, clock or the price of its atomics, beside the times of
# benches/compare.sh.
#
#   benches/instructions.sh                 every workload
#   benches/instructions.sh spawn_join      the workloads whose name has this
#
# Each workload runs twice under callgrind, with 1 and 3 repetitions after a
# warm-up; (count(3) - count(1)) / (2 * units) is the cost of one unit in the
# steady state. "Locked" counts executed instructions with a `lock` prefix
# or an `xchg` with memory (read-modify-writes that lock the cache line),
# found by matching callgrind's per-instruction counts (--dump-instr=yes)
# with objdump's disassembly of each object. Needs valgrind and objdump.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(cargo bench --bench instructions --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "instructions" and m.get("executable"):
        print(m["executable"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "| workload | instructions per unit | locked operations per unit |"
echo "|---|---|---|"
"$bin" list | while read -r name units; do
  if [ -n "${1:-}" ] && [[ "$name" != *"$1"* ]]; then continue; fi
  # A million children under callgrind takes minutes: only when asked for.
  if [ -z "${1:-}" ] && [[ "$name" == *1000000 ]]; then continue; fi
  for reps in 1 3; do
    valgrind --tool=callgrind --dump-instr=yes \
      --callgrind-out-file="$out/$reps.out" "$bin" "$name" "$reps" >/dev/null 2>&1
  done
  python3 - "$out/1.out" "$out/3.out" "$name" "$units" <<'PY'
import re, subprocess, sys
from collections import defaultdict

def parse(path):
    """Self cost (Ir) per (object, address)."""
    names = {}
    cost = defaultdict(int)
    ob = None
    last = 0
    skip_next = False
    total = None
    def resolve(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)))
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
                continue
            c = line[0]
            if c.isdigit() or c in "+-*" or line.startswith("0x"):
                parts = line.split()
                pos = parts[0]
                if pos == "*":
                    addr = last
                elif pos[0] in "+-":
                    addr = last + int(pos, 0)
                else:
                    addr = int(pos, 0)
                last = addr
                if skip_next:
                    skip_next = False
                    continue
                # positions: instr line; then Ir
                ir = int(parts[2]) if len(parts) > 2 else 0
                cost[(ob, addr)] += ir
                continue
            key, _, value = line.partition("=")
            if key == "ob":
                ob = resolve("ob", value)
            elif key == "cob":
                resolve("ob", value)
            elif key in ("fl", "fi", "fe", "fn", "cfi", "cfl", "cfn"):
                pass
            elif key == "calls":
                skip_next = True
    return cost, total

locked_cache = {}
def locked_addresses(obj):
    if obj in locked_cache:
        return locked_cache[obj]
    found = set()
    try:
        dump = subprocess.run(["objdump", "-d", "--no-show-raw-insn", obj],
                              capture_output=True, text=True).stdout
    except OSError:
        dump = ""
    for line in dump.splitlines():
        m = re.match(r"\s*([0-9a-f]+):\s+(.*)", line)
        if not m:
            continue
        ins = m.group(2)
        if ins.startswith("lock ") or (ins.startswith("xchg") and "(" in ins):
            found.add(int(m.group(1), 16))
    locked_cache[obj] = found
    return found

def locked(cost):
    n = 0
    for (obj, addr), ir in cost.items():
        if obj and addr in locked_addresses(obj):
            n += ir
    return n

one, total_one = parse(sys.argv[1])
three, total_three = parse(sys.argv[2])
name, units = sys.argv[3], int(sys.argv[4])
per = (total_three - total_one) / (2 * units)
lk = (locked(three) - locked(one)) / (2 * units)
print(f"| {name} | {per:,.1f} | {lk:.2f} |")
PY
done
