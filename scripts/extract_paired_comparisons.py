"""Extract real human paired-comparison data from Debian's R packages into small CSVs.

    apt-get download r-cran-bradleyterry2 r-cran-psychotools     # the .deb files only, no R
    python -m venv /tmp/rd && /tmp/rd/bin/pip install rdata pandas
    /tmp/rd/bin/python scripts/extract_paired_comparisons.py *.deb --out tests/assets/paired_comparisons

The leaderboard's fit is checked against independent maximum-likelihood fits on these
(tests/reward/test_leaderboard_fit.py); the CSVs are committed so tests need neither R nor the
network. Each dataset's source and citation is in that folder's README.md. Judgement rows are
``judge, item_a, item_b, outcome`` (outcome a | b | tie); count tables are
``item_a, item_b, wins_a, wins_b[, ties]``.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import rdata

SITE = "usr/lib/R/site-library"


def lazyload(package_dir: Path, name: str):
    """One object of an R package's lazy-load data base (data/Rdata.rdx + .rdb)."""
    base = package_dir / "data" / "Rdata"
    index = rdata.conversion.convert(rdata.parser.parse_file(base.with_suffix(".rdx")))
    offset, length = (int(x) for x in index["variables"][name])
    blob = base.with_suffix(".rdb").read_bytes()[offset:offset + length]
    return rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(blob[4:])), default_encoding="utf8")


def paircomp_counts(rda: Path, frame: str) -> pd.DataFrame:
    """psychotools' ``paircomp`` column (judges x pairs, +1 = first preferred, -1 = second)
    as a count table."""
    conv = rdata.conversion.SimpleConverter(default_encoding="utf8")
    df = rdata.parser.parse_file(rda).object.value[0]
    names = list(conv.convert(df.attributes)["names"])
    column = df.value[names.index("preference")]
    data, attrs = np.asarray(conv.convert(column)), conv.convert(column.attributes)
    labels, pairs = list(attrs["labels"]), list(attrs["dimnames"][1])
    if list(attrs["mscale"]) != [-1, 1]:
        raise ValueError(f"{frame}: expected a -1/1 scale without ties, got {attrs['mscale']}")
    rows = []
    for j, pair in enumerate(pairs):
        i1, i2 = (int(x) - 1 for x in pair.split(":"))
        col = data[:, j]
        rows.append({"item_a": labels[i1], "item_b": labels[i2], "wins_a": int((col == 1).sum()),
                     "wins_b": int((col == -1).sum())})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("debs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp())
    for deb in args.debs:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    bt2, psycho = root / SITE / "BradleyTerry2", root / SITE / "psychotools"
    args.out.mkdir(parents=True, exist_ok=True)

    cems = lazyload(bt2, "CEMS")["preferences"].dropna(subset=["win1", "win2", "tied"])
    outcome = np.where(cems["tied"] == 1, "tie", np.where(cems["win1"] == 1, "a", "b"))
    pd.DataFrame({"judge": cems["student"].astype(int), "item_a": cems["school1"].astype(str),
                  "item_b": cems["school2"].astype(str), "outcome": outcome}
                 ).to_csv(args.out / "cems_judgements.csv", index=False)

    spring = lazyload(bt2, "springall")["contests"]
    pd.DataFrame({"item_a": "flavour" + spring["row"].astype(str), "item_b": "flavour" + spring["col"].astype(str),
                  "wins_a": spring["win"], "wins_b": spring["loss"], "ties": spring["tie"]}
                 ).to_csv(args.out / "springall_counts.csv", index=False)

    for name, file in (("SoundQuality", "soundquality_counts.csv"), ("FirstNames", "firstnames_counts.csv")):
        paircomp_counts(psycho / "data" / f"{name}.rda", name).to_csv(args.out / file, index=False)


if __name__ == "__main__":
    main()
