"""The streaming check of a stateful model: the first test samples in order as one stream,
at batch 1, each call fed the state the call before returned, run by the artifact and by
the model it came from side by side; figures over the whole stream and on its last chunk,
where drift of the carried state shows (a one-chunk check from the zero state cannot see
it). Gated like every output (:func:`edgekd.measure.verify.require_outputs`). No torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import InputSpec, OutputSpec, feed, join_batches
from edgekd.measure.verify import Limits, OutputCheck, compare_output, require_outputs

# A model as a plain callable, like Runner.run_all: every input by name -> every output.
RunAll = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class StreamCheck:
    """The first ``chunks`` test samples run as one stream at batch 1, state fed back, by the
    artifact and by the reference: each output over the whole stream and on the last chunk
    (where drift of the carried state shows)."""

    chunks: int
    outputs: tuple[OutputCheck, ...]
    last: tuple[OutputCheck, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"chunks": self.chunks, "outputs": [o.to_dict() for o in self.outputs],
                "last": [o.to_dict() for o in self.last]}


def stream_check(reference: RunAll, artifact: RunAll, specs: Sequence[InputSpec],
                 outputs: Sequence[OutputSpec], arrays: Mapping[str, np.ndarray],
                 chunks: int = 50) -> StreamCheck:
    """The first ``chunks`` samples of ``arrays`` (the data inputs by name) as one stream,
    at batch 1, through ``reference`` and ``artifact`` (each: every input by name -> every
    output, model order). Each side carries its own state: a state input starts at its
    spec's value and then takes the output its ``from_output`` names (or the output whose
    ``state`` names it) of that side's previous call."""
    n = min(chunks, len(next(iter(arrays.values()))))
    if n < 1:
        raise UsageError("the streaming check needs at least one test sample")
    carry = _carried(specs, outputs)
    runs: dict[str, list[list[np.ndarray]]] = {"reference": [], "artifact": []}
    for side, model in (("reference", reference), ("artifact", artifact)):
        state: dict[str, np.ndarray] = {}
        for i in range(n):
            given = {**feed(specs, arrays, i, i + 1), **state}
            got = [np.asarray(o) for o in model(given)]
            state = {s.name: got[carry[s.name]].astype(s.dtype, copy=False)
                     for s in specs if s.role == "state"}
            runs[side].append(got)
    whole, last = [], []
    for k, spec in enumerate(outputs):
        ref, out = (join_batches(runs[side], outputs)[k] for side in ("reference", "artifact"))
        check = compare_output(spec.name, out, ref, spec)
        whole.append(check)
        last.append(compare_output(spec.name, out[-1:], ref[-1:], spec, scale=check.scale,
                                   rates=False))
    return StreamCheck(n, tuple(whole), tuple(last))


def _carried(specs: Sequence[InputSpec], outputs: Sequence[OutputSpec]) -> dict[str, int]:
    """For each state input, the position of the output fed back into it."""
    names = [o.name for o in outputs]
    out = {}
    for s in specs:
        if s.role != "state":
            continue
        source = s.from_output or next((o.name for o in outputs if o.state == s.name), None)
        if source not in names:
            raise UsageError(f"state input {s.name!r} is carried from "
                             f"{'no output' if source is None else repr(source)}; set its "
                             f"from_output to one of the model's outputs: {', '.join(names)}")
        out[s.name] = names.index(source)
    return out


def require_stream(name: str, runtime: str, precision: str, stream: StreamCheck,
                   limits: Limits) -> None:
    """:func:`require_outputs` over the whole stream, then on its last chunk."""
    require_outputs(name, runtime, precision, stream.outputs, limits,
                    where=f"over a {stream.chunks}-chunk stream")
    require_outputs(name, runtime, precision, stream.last, limits,
                    where=f"on the last chunk of a {stream.chunks}-chunk stream")
