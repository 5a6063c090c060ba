"""MedFlowSeg: flow-matching segmentation with an ensemble of samples, STAPLE fusion and uncertainty maps.

API: ``trainer.train_segmenter`` (training runs), ``inference.load_segmenter`` / ``inference.segment_images`` /
``inference.write_segmentations`` (segmenting), ``staple.staple`` and ``uncertainty.uncertainty_maps`` (fusion).
Nothing is imported here, so the CLI's ``--help`` does not load the model.
"""
