"""VNC: mitochondria in the Drosophila first-instar larva ventral nerve cord, ssTEM (4.6 x 4.6 x 45-50 nm).

"Segmented anisotropic ssTEM dataset of neural tissue": 20 annotated slices of 1024 x 1024 (stack 1;
stack 2 has no labels and is not used).

Citation:
    Gerhard, Funke, Martel, Cardona, Fetter, "Segmented anisotropic ssTEM dataset of neural tissue",
    figshare 2013, doi:10.6084/m9.figshare.856713.

Licence:
    CC BY-NC-SA 3.0: non-commercial use, with the citation above.

Download:
    :data:`URL` is GitHub's archive of the public ``unidesigner/groundtruth-drosophila-vnc`` repository;
    :data:`ARCHIVE_SHA256` is the value torch-em pins for it. GitHub builds these archives on request, so
    if GitHub ever re-packs it the sha256 can change although the files do not: then fetch fails with a
    checksum error, and a copy unpacked by hand can be verified with ``emfm data check`` against the
    decoded checksums in :data:`REFERENCE`. The archive's top folder is
    ``groundtruth-drosophila-vnc-master/``; fetch takes the folder that holds ``stack1``.

Layout (the dataset root is the folder holding ``stack1``)::

    stack1/raw/00.tif .. 19.tif                        raw slices, 8-bit
    stack1/labels/labels00000000.png .. 00000019.png   merged label map: 0/32/64/96 membranes,
                                                       128 junction, 159 glia/extracellular,
                                                       191 mitochondria, 223 synapse, 255 intracellular
    stack1/mitochondria/00.png .. 19.png               NOT used (see below)

Masks: mitochondria are ``labels == 191`` in the merged label map. The ``mitochondria/`` folder is not
used: its slices 01, 07 and 18 are 1-bit PNGs, which common readers (``np.asarray(Image.open(f))``,
imageio) return as 0/1, so the usual ``> 127`` threshold makes them blank, although the slices hold
5-7 % mitochondria (that reading is the "blank slices" of ``shared/README.md`` and the study's
protocol notes). ``emfm data check`` warns about it. Label values outside the classes above are
logged as a warning (they cannot change which pixels are 191).

Split: the shipped ``splits/vnc.json``: test = slices 00, 03, 08 (the study's draw); the other 17 are
train+val, of which 2 are val. See :mod:`emfm.data.splits`. With 3 test slices, VNC numbers are noisy.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from emfm.data._datasets import StackReference
from emfm.data._masks import LabelMapRule
from emfm.data._pairing import index_files
from emfm.data._published import PublishedDataset
from emfm.data.readers import read_image
from emfm.data.splits import HOLDOUT_DRAW, make_holdout_split, read_split_file, split_record
from emfm.errors import DataError

URL = "https://github.com/unidesigner/groundtruth-drosophila-vnc/archive/refs/heads/master.zip"
ARCHIVE_SHA256: str | None = "f7bd0db03c86b64440a16b60360ad60c0a4411f89e2c021c7ee2c8d6af3d7e86"

MITO_LABEL = 191
LABEL_CLASSES = frozenset({0, 32, 64, 96, 128, 159, 191, 223, 255})

#: Decoded checksums (shared/README.md), over all 20 slices of stack1 in index order.
REFERENCE = {
    "stack1": StackReference(
        shape=(20, 1024, 1024), raw="b845f8b459993f5c", mask="0707a89f8083bf59", foreground="5.38%"
    ),
}

#: sha256[:16] of ``np.asarray(Image.open(f)) > 127`` over ``stack1/mitochondria/`` (shared/README.md):
#: the reading in which the 1-bit masks 01, 07 and 18 come out blank (4.47 % foreground).
MITO_FOLDER_AS_PUBLISHED = "5bf56ac64336f8c3"

N_SLICES = 20
TEST_FRACTION = 0.15
MITO_NAME = re.compile(r"(\d+)\.png", re.IGNORECASE)


class VNC(PublishedDataset):
    name = "vnc"
    title = "VNC (Drosophila larva ventral nerve cord, ssTEM, stack 1)"
    citation = (
        "Gerhard, Funke, Martel, Cardona, Fetter, 'Segmented anisotropic ssTEM dataset of neural tissue', "
        "figshare 2013, doi:10.6084/m9.figshare.856713"
    )
    licence = "CC BY-NC-SA 3.0 (non-commercial, with citation)"
    url = URL
    archive_sha256 = ARCHIVE_SHA256
    layout = "stack1/raw/NN.tif, stack1/labels/labelsNNNNNNNN.png"
    mask_rule = LabelMapRule(label=MITO_LABEL, known=LABEL_CLASSES)
    reference = REFERENCE

    stack_names = ("stack1",)  # stack 2 has no labels
    image_dir = "{stack}/raw"
    mask_dir = "{stack}/labels"
    image_name = re.compile(r"(\d+)\.tiff?", re.IGNORECASE)
    mask_name = re.compile(r"labels(\d+)\.png", re.IGNORECASE)
    mask_what = "label maps"
    id_digits = 2
    stack_label_template = f"{{stack}} (raw/NN.tif + labels/labelsNNNNNNNN.png == {MITO_LABEL})"
    no_stack_message = "{name}: only stack1 has labels; got stack {stack!r}."

    def describe_splits(self, root: Path) -> list[str]:
        r = read_split_file(self.name)
        n_tv = len(r["train"]) + len(r["val"])
        return [
            f"split {n_tv}/{len(r['test'])}: trainval {n_tv} (train {len(r['train'])}, val {len(r['val'])}: "
            f"{', '.join(r['val'])}), test {len(r['test'])}: {', '.join(r['test'])}",
            "(from the package's splits/vnc.json)",
        ]

    def make_split_record(self) -> dict[str, Any]:
        ids = [self.slice_id(i) for i in range(N_SLICES)]
        trainval, test = make_holdout_split(ids, TEST_FRACTION, seed=42)
        return split_record(
            self.name,
            trainval=trainval,
            test=test,
            stacks={"train": "stack1", "val": "stack1", "test": "stack1"},
            test_draw=f"{HOLDOUT_DRAW}, fraction {TEST_FRACTION}",
        )

    def extra_checks(self, root: Path, *, progress: bool = True) -> list[str]:
        """Warn about masks in ``stack1/mitochondria/`` that read as blank.

        emfm does not load that folder, but other tools (and the study) do. Two cases are reported:
        masks that are truly blank among slices with mitochondria, and 1-bit PNGs, whose pixels many
        readers (``np.asarray(PIL.Image.open(f))``, imageio) return as 0/1, so a ``> 127`` threshold
        blanks them. The published "``mitochondria > 127``" checksum (:data:`MITO_FOLDER_AS_PUBLISHED`)
        is that reading: slices 01, 07 and 18 come out blank although they hold 5-7 % mitochondria.
        """
        import hashlib

        import numpy as np
        from PIL import Image

        folder = root / "stack1" / "mitochondria"
        if not folder.is_dir():
            return []
        try:
            mito = index_files(folder, MITO_NAME, what="mitochondria masks")
            labels = index_files(self.mask_folder(root, "stack1"), self.mask_name, what=self.mask_what)
        except DataError as exc:
            return [f"stack1/mitochondria/ (not used by emfm) could not be checked: {exc}"]
        blank, one_bit, fg = [], [], {}
        as_published = hashlib.sha256()
        for i, p in sorted(mito.items()):
            mask = read_image(p) > 127  # 1-bit PNGs decode to 0/255 here
            fg[i] = float(mask.mean())
            with Image.open(p) as im:
                if im.mode == "1":
                    one_bit.append(i)
                as_published.update((np.asarray(im) > 127).astype(np.uint8).data)  # the naive 0/1 reading
            if not mask.any():
                blank.append(i)

        def label_fg(i: int) -> str:
            return f"{(read_image(labels[i]) == MITO_LABEL).mean():.1%}" if i in labels else "no label map"

        out = []
        if blank and len(blank) < len(mito):
            out.append(
                f"stack1/mitochondria/ has blank masks on slices {', '.join(map(self.slice_id, blank))} while "
                f"its other slices show mitochondria (label map on those slices: "
                f"{', '.join(label_fg(i) for i in blank)}). emfm takes VNC mitochondria from labels == "
                f"{MITO_LABEL} and does not use that folder; a loader trusting it trains on false background."
            )
        if one_bit:
            published = ""
            if as_published.hexdigest()[:16] == MITO_FOLDER_AS_PUBLISHED:
                published = (
                    f" (that reading gives the published 'mitochondria > 127' checksum {MITO_FOLDER_AS_PUBLISHED},"
                    " which this copy reproduces)"
                )
            out.append(
                f"stack1/mitochondria/ masks {', '.join(map(self.slice_id, one_bit))} are 1-bit PNGs (the others "
                f"8-bit): read as 0/1 and thresholded at > 127 they come out blank{published}, although decoded "
                f"properly they hold {', '.join(f'{fg[i]:.1%}' for i in one_bit)} mitochondria (label map: "
                f"{', '.join(label_fg(i) for i in one_bit)}). emfm takes VNC mitochondria from labels == "
                f"{MITO_LABEL} and does not use that folder."
            )
        return out
