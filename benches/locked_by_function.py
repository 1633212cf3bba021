#!/usr/bin/env python3
"""Locked operations per unit of work, by function: where the atomics of a
workload are (issue 20 asks where a parallel child's are).

Usage (after `cargo bench --bench instructions --no-run`):
  bin=$(ls -t target/release/deps/instructions-* | grep -v "\.d$" | head -1)
  for r in 1 3; do valgrind --tool=callgrind --dump-instr=yes \
      --callgrind-out-file=/tmp/w.$r.out $bin spawn_join/hatchery_parallel $r; done
  benches/locked_by_function.py /tmp/w.1.out /tmp/w.3.out 10000

The difference of the two runs over 2 * UNITS, as benches/instructions.sh
counts; each locked instruction (a `lock` prefix, or `xchg` with memory)
attributed to the function objdump places it in."""
import bisect
import re
import subprocess
import sys
from collections import defaultdict
def parse(path):
    names = {}; cost = defaultdict(int); ob=None; last=0; skip=False
    def resolve(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m: return value
        if m.group(2) is not None: names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)))
    for line in open(path):
        line=line.rstrip("\n")
        if not line or line.startswith(("summary:","totals:")): continue
        c=line[0]
        if c.isdigit() or c in "+-*" or line.startswith("0x"):
            parts=line.split(); pos=parts[0]
            if pos=="*": addr=last
            elif pos[0] in "+-": addr=last+int(pos,0)
            else: addr=int(pos,0)
            last=addr
            if skip: skip=False; continue
            cost[(ob,addr)] += int(parts[2]) if len(parts)>2 else 0
            continue
        k,_,v=line.partition("=")
        if k=="ob": ob=resolve("ob",v)
        elif k=="cob": resolve("ob",v)
        elif k=="calls": skip=True
    return cost
cache={}
def info(obj):
    if obj in cache: return cache[obj]
    dump=subprocess.run(["objdump","-d","--no-show-raw-insn","-C",obj],capture_output=True,text=True).stdout
    locked=set(); starts=[]; names=[]
    for line in dump.splitlines():
        m=re.match(r"([0-9a-f]+) <(.*)>:",line)
        if m: starts.append(int(m.group(1),16)); names.append(m.group(2)); continue
        m=re.match(r"\s*([0-9a-f]+):\s+(.*)",line)
        if m and (m.group(2).startswith("lock ") or (m.group(2).startswith("xchg") and "(" in m.group(2))):
            locked.add(int(m.group(1),16))
    cache[obj]=(locked,starts,names); return cache[obj]
def per_fn(cost):
    out=defaultdict(int)
    for (obj,addr),ir in cost.items():
        if not obj: continue
        locked,starts,names=info(obj)
        if addr in locked:
            i=bisect.bisect_right(starts,addr)-1
            out[(names[i] if i>=0 else "?")[:150]]+=ir
    return out
a=per_fn(parse(sys.argv[1])); b=per_fn(parse(sys.argv[2])); units=int(sys.argv[3])
d={k:(b.get(k,0)-a.get(k,0))/(2*units) for k in set(a)|set(b)}
tot=sum(d.values()); print("total",round(tot,2))
for k,v in sorted(d.items(),key=lambda x:-x[1])[:30]:
    if abs(v)>0.05: print(f"{v:6.2f} {k}")
