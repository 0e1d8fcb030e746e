"""What ships to a device: the benchmark worker (:mod:`.worker`) and its runtime loaders
(:mod:`.runtimes`).

Rule: the standard library, NumPy and one runtime; nothing else of edgekd, never torch.
``edgekd bench --remote`` copies these two files, and nothing else, onto a device."""
