# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Performance
#
# **Overview.** How long the study's steps take and how the shipped tools score, as measured by the
# scripts in `benchmarks/`. `polar4d benchmark --profile smoke` (or `default`) runs them and writes one file
# per benchmark to `results/benchmarks/<name>.json`: the machine (platform, processor, cores, memory,
# Python and torch versions), the date, the commit, the profile, the benchmark's parameters and its figures,
# each a quantity with its value and unit. This page shows every such file as it is — nothing on it is
# typed by hand — so a figure always comes with the machine and the commit that produced it.
#
# **Prerequisites.** None: the page reads `results/benchmarks/` and says how to fill it when it is empty.

# %% tags=["parameters"]
profile = "smoke"  # the book's profile (the benchmarks record their own)
benchmarks_dir = None  # where `polar4d benchmark` wrote its JSON files; None → "results/benchmarks"

# %% tags=["remove-input"]
# %matplotlib inline
from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from polar4d_lib import benchmarking, plotting

benchmarks_dir = Path("results/benchmarks" if benchmarks_dir is None else benchmarks_dir)

# %% [markdown]
# ## The benchmarks
#
# For each benchmark: where and when it ran, its parameters, a table of its figures and, where two or more
# figures share a unit, a bar plot of them.

# %%
benchmarks = benchmarking.read_all(benchmarks_dir)

# %% tags=["hide-input"]
if not benchmarks:
    display(Markdown(
        f"*No benchmark results in `{benchmarks_dir}` yet.* Run `polar4d benchmark --profile smoke` or "
        "`polar4d benchmark --profile default` in the project folder, then `polar4d book` again: this page "
        "re-executes when the files change."))
machine_fields = {"platform": "{}", "processor": "{}", "cores": "{} cores", "memory_gib": "{} GiB", "python": "Python {}",
                  "torch": "torch {}"}  # what the page says of a machine, where the file knows it
for record in benchmarks:
    machine = record["machine"]
    display(Markdown(
        f"### {record['title']}\n\n"
        f"`{record['name']}` · profile `{record['profile']}` · {record['date']} · commit "
        f"`{record['commit'] or 'unknown'}`  \n"
        + ", ".join(text.format(machine[key]) for key, text in machine_fields.items() if machine.get(key) is not None)
        + ("  \nparameters: " + ", ".join(f"`{k} = {v}`" for k, v in record["parameters"].items())
           if record["parameters"] else "")))
    table = pd.DataFrame([{"quantity": f["quantity"], "value": f"{float(f['value']):.4g}", "unit": f["unit"],
                           "note": f.get("note", "")} for f in record["figures"]])
    display(table.style.hide(axis="index"))
    bars = plotting.benchmark_bars(record["figures"])
    if bars is not None:
        display(bars)
