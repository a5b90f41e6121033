"""emfm: how well vision foundation models segment electron-microscopy images.

The package is layered (see ``docs`` in the repository): ``data`` and ``backbones`` know nothing of
training; ``models`` builds heads and LoRA; ``train`` and ``evaluate`` run experiments; ``analysis``
studies feature spaces; ``study`` runs grids; ``predict`` applies a trained run to new volumes. Heavy
libraries (torch, transformers) are imported inside the functions that need them, so importing
``emfm`` and running ``emfm --help`` stay fast.
"""

__version__ = "0.1.0"
