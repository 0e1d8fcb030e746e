"""Measuring artifacts: verification against the reference model (:mod:`.verify`),
benchmarks in a separate process (:mod:`.bench`) or over SSH (:mod:`.remote`), whether each
step paid off (:mod:`.payoff`) and accuracy under corruptions (:mod:`.robustness`).

Rule: no torch. Runs artifacts through :mod:`edgekd.backends` and :mod:`edgekd.device`;
works on NumPy arrays and report entries."""
