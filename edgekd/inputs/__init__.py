"""Where a build's inputs are read: data sources (:mod:`.sources`: image folders, .npz,
.npy, Dataset factories), the preprocessed splits (:mod:`.dataset`), the built-in demo data
(:mod:`.digits`), user model files (:mod:`.model_files`: factories, weights, ONNX) and both
resolved into what a build starts from (:mod:`.resolve`).

Rule: reads the user's files, writes nothing. May import torch (to build and load the user's
models) and :mod:`edgekd.settings`; never training, compression, runtimes or reports."""
