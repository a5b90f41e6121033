"""The napari plugin: run an emfm model on an image layer and look at the result where microscopists look.

Install with ``pip install 'emfm[napari]'``; napari then lists the widget as *Plugins > Segment
mitochondria (emfm)* (manifest: ``napari.yaml`` beside this file, found through the ``napari.manifest``
entry point).

- :mod:`~emfm.napari.widget`: the dock widget, a *Segment* tab (a run on a layer: mask and probability
  layers) and a *Compare* tab (two runs on a layer: both masks and where they disagree).
- :mod:`~emfm.napari.tasks`: the work itself, as generators that napari's ``thread_worker`` runs off the
  GUI thread (progress per batch, cancel between batches); no Qt, so tests and scripts drive it directly.
- :mod:`~emfm.napari.reader` / :mod:`~emfm.napari.writer`: open emfm's outputs, save Labels.

Predictions go through :func:`emfm.predict.iter_predict_array`, the in-memory path of ``emfm predict``
(same preprocessing, tiling, standardisation and batching), so a mask seen here is the one the command
line writes for the same image. Nothing else in emfm imports this package (import-linter's layers).
"""
