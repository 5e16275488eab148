"""Statistics on plain arrays and series (numpy, scipy and pandas; never matplotlib).

`summary` (per-condition description, seeded bootstrap intervals), `pairwise` (tests, effect
sizes, multiple-comparison corrections), `omnibus` (Friedman / Kruskal–Wallis, ranks, critical
differences), `planning` (how many seeds a comparison needs), `ties` (conditions whose runs are
identical). The metric names, which way is better and axis labels: `runners.store.records`.
"""
