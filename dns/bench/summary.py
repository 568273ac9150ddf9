#!/usr/bin/env python3
"""Summarises a dns/bench/run.sh output directory as a Markdown table.

usage: summary.py OUT_DIR

Reads OUT_DIR/{petrel-dns,mesos-dns}/qps*/summary-pinned.json and
reload-N/result.json (written by the mesos-dns harness) and prints, per task
count, petrel-dns's figures, mesos-dns's when it ran in the same run, and the
ratio petrel-dns / mesos-dns.
"""
import glob
import json
import os
import sys


def load(out, label):
    sizes = {}
    for path in sorted(glob.glob(os.path.join(out, label, "qps*", "summary-pinned.json"))):
        for res in json.load(open(path)):
            sizes.setdefault(res["tasks"], {})["bench"] = res
    for path in sorted(glob.glob(os.path.join(out, label, "reload-*", "result.json"))):
        res = json.load(open(path))
        sizes.setdefault(res["tasks"], {})["reload"] = res
    return sizes


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d or d[k] is None:
            return None
        d = d[k]
    return d


ROWS = [
    ("A qps", ("bench", "qps_runs", "a", "qps")),
    ("SRV qps", ("bench", "qps_runs", "srv", "qps")),
    ("NXDOMAIN qps", ("bench", "qps_runs", "nx", "qps")),
    ("AAAA (NODATA) qps", ("bench", "qps_runs", "aaaa", "qps")),
    ("A p99 µs @2k qps", ("bench", "latency_fixed_rate", "a", "p99")),
    ("RSS MiB after first load", ("bench", "mem_after_first_load", "rss_mib")),
    ("RSS MiB after QPS phase", ("bench", "mem_after_qps", "rss_mib")),
    ("RSS MiB after reloads", ("bench", "mem_after_reloads", "rss_mib")),
    ("CPU-s per reload", ("bench", "reload_cost", "cpu_s_per_reload")),
    ("reload window p50 µs", ("reload", "within_window_after_reload", "p50_us")),
    ("reload window p99 µs", ("reload", "within_window_after_reload", "p99_us")),
    ("reload window max µs", ("reload", "within_window_after_reload", "max_us")),
    ("elsewhere p99 µs (same run)", ("reload", "elsewhere", "p99_us")),
    ("RSS MiB after reload run", ("reload", "mem", "rss_mib")),
]


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.3f}" if v < 10 else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
    return f"{v:,}"


def main():
    out = sys.argv[1]
    petrel, mesos = load(out, "petrel-dns"), load(out, "mesos-dns")
    both = bool(mesos)
    print("| tasks | metric | petrel-dns |" + (" mesos-dns | ratio |" if both else ""))
    print("| ---: | --- | ---: |" + (" ---: | ---: |" if both else ""))
    for n in sorted(petrel):
        for name, keys in ROWS:
            p = get(petrel[n], *keys)
            m = get(mesos.get(n, {}), *keys)
            if p is None and m is None:
                continue
            line = f"| {n:,} | {name} | {fmt(p)} |"
            if both:
                ratio = f"{p / m:.2f}×" if p is not None and m else "–"
                line += f" {fmt(m)} | {ratio} |"
            print(line)
    print()
    print(f"results: {out}; reload impact: reload_impact.py --refresh 10 --rate 2000 --duration 35 "
          "(window: 1.5 s after each state GET)")


if __name__ == "__main__":
    main()
