"""What a study saves per run by keeping its splits in memory (emfm.data.memo), measured on ../shared's data.

Reads the splits one quick-study run reads (Lucchi++ train, val and test, VNC's test) from disk, then again
inside ``splits_kept_in_memory`` twice: the first time fills it, the second hands out copies, as every later
run of the study gets them.

    python benchmarks/split_memo.py [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from emfm.data import load_split, memo

SPLITS = (("lucchi_pp", "train"), ("lucchi_pp", "val"), ("lucchi_pp", "test"), ("vnc", "test"))


def read_all(data_root: str) -> float:
    start = time.perf_counter()
    for name, split in SPLITS:
        load_split(name, split, data_root=data_root, progress=False)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    args = ap.parse_args()
    from_disk = read_all(args.data_root)
    with memo.splits_kept_in_memory():
        filling = read_all(args.data_root)
        kept = read_all(args.data_root)
    print(f"from disk {from_disk:.2f} s, filling the memo {filling:.2f} s, from the memo {kept:.2f} s per run")
    print(f"split memo: {from_disk - kept:.2f} s saved per run after the first ({from_disk / kept:.1f}x)")


if __name__ == "__main__":
    main()
