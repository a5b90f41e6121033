"""``emfm data check``: is a dataset on disk complete, correctly paired and the data we think it is?

For each stack it reports the slice count, shape, dtype, foreground fraction and pairing, and two
checksums of the *decoded* data, so that a copy converted to another lossless format (Lucchi++ as
WebP) still verifies: the first 16 hex digits of sha256 over the whole stack as one C-order array in
index order, raw slices as stored (uint16 little-endian) and masks as 0/1 uint8 after the dataset's
mask rule. These are the numbers in ``shared/README.md``; where a dataset module knows the reference
values, each is marked OK or MISMATCH.

Errors (the dataset is not usable as is): slices that do not pair, unreadable files, masks of another
size than their image, mask values the rule does not allow, checksum mismatches. Warnings: blank masks
among non-blank ones, unexpected label classes, dataset-specific findings (VNC's blank
``mitochondria/`` masks).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emfm.data._datasets import EMDataset, PathArg, StackReference, iter_pairs
from emfm.data.registry import get_dataset
from emfm.errors import DataError

logger = logging.getLogger(__name__)


def digest16(h: Any) -> str:
    return h.hexdigest()[:16]


@dataclass
class StackCheck:
    """What ``emfm data check`` found in one stack."""

    stack: str
    label: str
    n_slices: int = 0
    shape: str | None = None
    dtype: str | None = None
    pairing: str = "by-number"
    foreground: str | None = None
    foreground_fraction: float | None = None
    raw_sha256_16: str | None = None
    mask_sha256_16: str | None = None
    expected: dict[str, Any] | None = None
    status: dict[str, str] = field(default_factory=dict)
    blank_masks: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """The whole report; :attr:`usable` is what the command's exit code says."""

    dataset: str
    root: str
    mask_rule: str
    stacks: list[StackCheck] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["usable"] = self.usable
        return out

    def lines(self) -> list[str]:
        """The report as printed by ``emfm data check``."""
        out = [f"{self.dataset} at {self.root}", f"mask rule: {self.mask_rule}"]
        for s in self.stacks:
            out.append(s.label)
            out.append(f"  slices       {s.n_slices}")
            out.append(f"  shape        {s.shape or '-'}")
            out.append(f"  dtype        {s.dtype or '-'}")
            out.append(f"  pairing      {s.pairing}")
            exp = s.expected or {}
            for key, title, value in (
                ("foreground", "foreground ", s.foreground),
                ("raw", "raw sha256 ", s.raw_sha256_16),
                ("mask", "mask sha256", s.mask_sha256_16),
            ):
                line = f"  {title}  {value or '-'}"
                if key in exp:
                    line += f"   expected {exp[key]}   {s.status.get(key, '-')}"
                out.append(line)
        if self.splits:
            out.append("splits")
            out.extend(f"  {line}" for line in self.splits)
        out.extend(f"WARNING: {w}" for w in self.warnings)
        out.extend(f"ERROR: {e}" for e in self.errors)
        if self.usable:
            out.append(f"{self.dataset} is usable ({len(self.warnings)} warning(s)).")
        else:
            out.append(f"{self.dataset} is NOT usable: {len(self.errors)} error(s).")
        return out


def _shape_text(n: int, shapes: set[tuple[int, ...]]) -> str:
    if len(shapes) == 1:
        h, w = next(iter(shapes))
        return f"{n} x {h} x {w}"
    some = ", ".join(f"{h} x {w}" for h, w in sorted(shapes)[:3])
    return f"{n} slices of {len(shapes)} sizes ({some}{', ...' if len(shapes) > 3 else ''})"


def _check_stack(ds: EMDataset, root: Path, stack: str, report: CheckReport, progress: bool) -> None:
    result = StackCheck(stack=stack, label=ds.stack_label(stack))
    report.stacks.append(result)
    try:
        slices = ds.list_slices(root, stack)
    except DataError as exc:
        report.errors.append(f"{stack}: {exc}")
        return
    result.n_slices = len(slices)
    raw_hash, mask_hash = hashlib.sha256(), hashlib.sha256()
    shapes: set[tuple[int, ...]] = set()
    dtypes: set[str] = set()
    fg = total = 0
    bad = 0
    notes: list[str] = []
    for r in iter_pairs(slices, ds.mask_rule, desc=f"{ds.name} {stack}", progress=progress, keep_going=True):
        if r.error is not None or r.image is None or r.mask is None:
            bad += 1
            if bad <= 5:
                report.errors.append(f"{stack} slice {r.files.id}: {r.error}")
            continue
        if r.note:
            notes.append(r.note)
        img = r.image.astype(r.image.dtype.newbyteorder("<"), copy=False)
        raw_hash.update(np.ascontiguousarray(img).data)
        mask_hash.update(np.ascontiguousarray(r.mask).data)
        shapes.add(r.image.shape)
        dtypes.add(r.image.dtype.name)
        n_fg = int(np.count_nonzero(r.mask))
        if n_fg == 0:
            result.blank_masks.append(r.files.id)
        fg += n_fg
        total += r.mask.size
    if bad > 5:
        report.errors.append(f"{stack}: {bad - 5} more unreadable slice(s) not listed.")
    if notes:
        report.warnings.append(f"{stack}: {len(notes)} mask(s) with unexpected values, e.g. {notes[0]}")
    good = result.n_slices - bad
    if good == 0:
        return
    result.shape = (
        _shape_text(result.n_slices, shapes) if not bad else _shape_text(good, shapes) + f" ({bad} unreadable)"
    )
    result.dtype = ", ".join(sorted(dtypes))
    result.foreground_fraction = fg / total
    result.foreground = f"{100 * fg / total:.2f}%"
    if not bad:
        result.raw_sha256_16, result.mask_sha256_16 = digest16(raw_hash), digest16(mask_hash)
    if 0 < len(result.blank_masks) < good:
        report.warnings.append(
            f"{stack}: {len(result.blank_masks)} blank mask(s) among {good} slices with "
            f"{result.foreground} foreground overall: slice(s) {', '.join(result.blank_masks[:20])}. "
            "Check that they really have no foreground."
        )
    ref: StackReference | None = ds.reference.get(stack)
    if ref is not None:
        result.expected = {
            "shape": " x ".join(map(str, ref.shape)),
            "foreground": ref.foreground,
            "raw": ref.raw,
            "mask": ref.mask,
        }
        for key, got in (
            ("foreground", result.foreground),
            ("raw", result.raw_sha256_16),
            ("mask", result.mask_sha256_16),
        ):
            result.status[key] = "OK" if got == result.expected[key] else "MISMATCH"
        result.status["shape"] = "OK" if result.shape == result.expected["shape"] else "MISMATCH"
        wrong = [k for k, v in result.status.items() if v != "OK"]
        if wrong:
            report.errors.append(
                f"{stack}: {', '.join(wrong)} differ from the reference data (shared/README.md); this copy is "
                f"not the published {ds.name}. Fetch it again with `emfm data fetch {ds.name}`."
            )


def _where_to_check(ds: EMDataset, root: PathArg | None, data_root: PathArg | None) -> Path:
    """The folder to check; ``data_root`` that is itself the dataset's folder is taken as such.

    ``emfm data check --data-root DIR NAME`` names one dataset, so both readings of the flag (the
    folder holding ``NAME/``, or ``NAME``'s own folder) find the data; a note says which was used.
    For the same reason a data root given with ``folder:PATH`` is a mistake, not something to ignore.
    """
    if data_root is not None and ds.carries_own_path:
        raise DataError(f"{ds.name}: a folder dataset carries its own path; do not pass --data-root.")
    if root is None and data_root is not None:
        here = Path(data_root).expanduser()
        if not ds.root_under(here).exists() and ds.required() and ds.holds_dataset(here):
            logger.info("%s holds %s itself; using it as the dataset's root", here, ds.name)
            return ds.locate(root=here)
    return ds.locate(data_root, root=root)


def check_dataset(
    name: str,
    root: PathArg | None = None,
    *,
    data_root: PathArg | None = None,
    progress: bool = True,
) -> CheckReport:
    """Check a dataset on disk; see the module docstring for what is checked.

    Args:
        name: a registered dataset name or ``folder:PATH``.
        root: the dataset's own folder.
        data_root: what the user passed as ``--data-root``: the folder holding ``NAME/`` (or, as a
            convenience, the dataset's own folder). With neither: ``$EMFM_DATA/NAME``, else the
            per-user directory.
        progress: show a progress bar on stderr while reading.

    Returns:
        The :class:`CheckReport`; ``report.usable`` is False when any error was found.

    Raises:
        UnknownNameError: unknown dataset name.
        DataError: the dataset's folder is not there (says where it looked and how to get it), or a
            data root was given for ``folder:PATH``.
    """
    ds = get_dataset(name)
    where = _where_to_check(ds, root, data_root)
    report = CheckReport(dataset=ds.name, root=str(where), mask_rule=ds.mask_rule.description)
    for stack in ds.stacks(where):
        _check_stack(ds, where, stack, report, progress)
    try:
        report.splits = ds.describe_splits(where)
    except DataError as exc:
        report.errors.append(f"splits: {exc}")
    report.warnings.extend(ds.extra_checks(where, progress=progress))
    return report
