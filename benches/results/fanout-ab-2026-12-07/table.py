# The A/B table of docs/benchmarks.md ("Fan-out: the watch path"), from the logs here.
# python3 benches/results/fanout-ab-2026-12-07/table.py
import re, statistics as st
d = "benches/results/fanout-ab-2026-12-07"
rows = {}
for v in ("old", "new"):
    for i in (1, 2, 3, 4):
        sys_ = None
        for line in open(f"{d}/{v}-{i}.log"):
            m = re.match(r"== fan-out: (\w+)", line)
            if m: sys_ = m.group(1); continue
            m = re.match(r"\s+n=(\d+): p50 ([\d.]+) ms p99 ([\d.]+) ms", line)
            if m: rows.setdefault((v, sys_, int(m.group(1))), []).append((float(m.group(2)), float(m.group(3))))
print("| binary | watchers | Baton p50 (runs 1-4) | median | etcd p50 median | Baton p99 median | etcd p99 median |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
for v in ("old", "new"):
    for n in (1000, 10000):
        b, e = rows[(v, "baton", n)], rows[(v, "etcd", n)]
        med = lambda xs: st.median(xs)
        print(f"| {v} | {n:,} | {' / '.join(f'{x[0]:.1f}' for x in b)} | {med([x[0] for x in b]):.1f} | "
              f"{med([x[0] for x in e]):.1f} | {med([x[1] for x in b]):.1f} | {med([x[1] for x in e]):.1f} |")
