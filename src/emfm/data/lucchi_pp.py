"""Lucchi++: mitochondria in mouse hippocampus CA1, FIB-SEM at ~5 nm isotropic.

The Casser et al. (2020) re-annotation of the EPFL hippocampus volumes (Lucchi et al.): two volumes of
165 slices of 768 x 1024, one for training and one for testing.

Citation:
    Casser, Kang, Pfister, Haehn, "Fast Mitochondria Detection for Connectomics", MIDL 2020; and
    Lucchi, Becker, Márquez Neila, Fua, "Learning Structured Models for Segmentation of 2D and 3D
    Imagery", IEEE TMI 2015.

Licence:
    The original EPFL data are for research use with citation.

Download:
    :data:`URL` is the public archive of Casser et al. (the one torch-em and micro-sam use); its
    sha256 :data:`ARCHIVE_SHA256` is the value those projects pin. The archive holds a top-level
    ``Lucchi++/`` folder; ``emfm data fetch`` finds the four folders below inside it.

Layout (the dataset root is the folder holding these)::

    Train_In/mask0000.png .. mask0164.png   raw slices, 8-bit grey ("mask" is the original prefix);
                                            .webp also accepted (lossless, decoded as R = G = B)
    Train_Out/0.png .. 164.png              labels, 8-bit L, 0 / 255
    Test_In/mask0000.png .. mask0164.png    raw slices
    Test_Out/0.png .. 164.png               labels, RGBA, white (255, 255, 255, 255) = mitochondria

Pairing: image ``maskNNNN`` goes with label ``N.png`` by the number, never by sorted names (sorted as
text the labels run 0, 1, 10, 100, ...). ``pairing="text-sorted"`` reproduces that mistake of the
published study, loudly, as an ablation.

Masks: grey values must be 0 or 255 (RGBA Test_Out labels are grey after checking R = G = B and an
opaque alpha); foreground = 255. Any other value is an error.

Split: Train and Test exactly as the folder names say (one peer tool swaps them; emfm does not).
Validation is 16 of Train's 165 slices, listed in the shipped ``splits/lucchi_pp.json``
(see :mod:`emfm.data.splits` for the draw); ``trainval`` is all of Train.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from emfm.data._datasets import StackReference
from emfm.data._masks import BinaryMaskRule
from emfm.data._published import PublishedDataset
from emfm.data.splits import read_split_file, split_record

URL = "http://www.casser.io/files/lucchi_pp.zip"
ARCHIVE_SHA256: str | None = "770ce9e98fc6f29c1b1a250c637e6c5125f2b5f1260e5a7687b55a79e2e8844d"

#: Decoded checksums (shared/README.md): sha256[:16] of each stack in index order, C-order uint8.
REFERENCE = {
    "Train": StackReference(
        shape=(165, 768, 1024), raw="45d77f092b5c6fba", mask="2d930068c1450966", foreground="7.00%"
    ),
    "Test": StackReference(shape=(165, 768, 1024), raw="82c7ad7059f66349", mask="908b416bde9a726e", foreground="6.69%"),
}

N_SLICES = 165


class LucchiPP(PublishedDataset):
    name = "lucchi_pp"
    title = "Lucchi++ (EPFL hippocampus CA1, FIB-SEM, re-annotated by Casser et al.)"
    citation = (
        "Casser, Kang, Pfister, Haehn, 'Fast Mitochondria Detection for Connectomics', MIDL 2020; "
        "Lucchi et al., 'Learning Structured Models for Segmentation of 2D and 3D Imagery', IEEE TMI 2015"
    )
    licence = "EPFL data: research use with citation"
    url = URL
    archive_sha256 = ARCHIVE_SHA256
    layout = "Train_In/maskNNNN.png|webp, Train_Out/N.png, Test_In/maskNNNN.png|webp, Test_Out/N.png"
    mask_rule = BinaryMaskRule(allowed=(frozenset({0, 255}),))
    reference = REFERENCE

    stack_names = ("Train", "Test")
    image_dir = "{stack}_In"
    mask_dir = "{stack}_Out"
    image_name = re.compile(r"mask(\d+)\.(?:png|webp)", re.IGNORECASE)
    mask_name = re.compile(r"(\d+)\.png", re.IGNORECASE)
    mask_what = "label masks"
    id_digits = 4
    stack_label_template = "{stack} ({stack}_In/maskNNNN + {stack}_Out/N.png)"

    def describe_splits(self, root: Path) -> list[str]:
        r = read_split_file(self.name)
        return [
            f"trainval = all {len(r['train']) + len(r['val'])} slices of Train: train {len(r['train'])}, "
            f"val {len(r['val'])} ({', '.join(r['val'])})",
            f"test = all {len(r['test'])} slices of Test",
            "(from the package's splits/lucchi_pp.json)",
        ]

    def make_split_record(self) -> dict[str, Any]:
        ids = [self.slice_id(i) for i in range(N_SLICES)]
        return split_record(
            self.name,
            trainval=ids,
            test=ids,
            stacks={"train": "Train", "val": "Train", "test": "Test"},
            test_draw="none: Lucchi++ has its own Test volume (Test_In/Test_Out), used whole",
        )
