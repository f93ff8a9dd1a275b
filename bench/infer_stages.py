"""A single-item Open Inference Protocol infer, stage by stage, in-process: what the gRPC
message's decode, the model's work (one onnxruntime call, the anomaly score, its tail
probability) and the answer's encode each cost, without grpcio or the network.

    .venv/bin/python -m bench.infer_stages [--model default|784] [--number 3000]

Each stage is timed alone (best of five rounds of `--number` calls, microseconds per call),
on the model's real rows, as the servicer runs it for the `<name>` model asked for both
outputs with raw tensors (what Triton's clients send). These are the figures the shortcuts in
`bundle.scoring.TailTable` and `service.models.v2_views` cite.
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable, Sequence

from bench.models import load_model
from bundle.runtime import OnnxBundle
from bundle.scoring import TailTable, recon_complexity
from service.grpc import inference_pb2 as pb
from service.grpc.codec import infer_response_message, read_infer_message
from service.models.served_model import Limits, ServedModel
from service.models.v2_views import V2Model


def per_call_us(call: Callable[[], object], number: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=5)) / number * 1e6


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", choices=["default", "784"])
    parser.add_argument("--number", type=int, default=3000)
    options = parser.parse_args(argv)

    bench_model = load_model(options.model)
    model = ServedModel(OnnxBundle(bench_model.bundle), Limits(1024, 1024, 64))
    view = V2Model(model.name, model.name, "model", model)
    row = bench_model.rows[:1].astype("float32")
    message = pb.ModelInferRequest(model_name=model.name)
    message.inputs.add(name="x", datatype="FP32", shape=list(row.shape))
    for spec in view.outputs:
        message.outputs.add(name=spec.name)
    message.raw_input_contents.append(row.tobytes())
    wire = message.SerializeToString()

    decoded = read_infer_message(view, message)
    wanted = tuple(w.spec.name for w in decoded.wanted)
    result = view.compute(decoded.items, wanted, None)
    path = model.bundle.run_mean_path(decoded.items)
    score_type = model.manifest.anomaly.default_score
    table = model.tails[score_type]
    scores = model.score(decoded.items, score_type=None, per_feature=False).scores
    stages: dict[str, Callable[[], object]] = {
        "parse the message (protobuf, C)": lambda: pb.ModelInferRequest.FromString(wire),
        "decode: read_infer_message": lambda: read_infer_message(view, message),
        "model: V2Model.compute (all below)": lambda: view.compute(decoded.items, wanted, None),
        "  one onnxruntime call (mean path)": lambda: model.bundle.run_mean_path(decoded.items),
        "  tail probability (TailTable.survival)": lambda: table.survival(scores),
        "  tail probability, table built per call": lambda: TailTable(table.q).survival(scores),
        "encode: infer_response_message": lambda: infer_response_message(view, decoded, result),
    }
    if score_type == "recon_complexity" and model.bundle.complexity is not None:
        fit = model.bundle.complexity
        stages["  score: recon_complexity"] = lambda: recon_complexity(
            path.x_model, path.decoded, fit
        )
    print(f"model {model.name} ({bench_model.features} inputs), score {score_type}, one item")
    for name, call in stages.items():
        print(f"{per_call_us(call, options.number):8.1f} us  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
