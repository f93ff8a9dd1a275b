"""The committed modules of service/grpc/inference.proto are what scripts/gen-grpc.sh makes of
it now: a change to the .proto without regenerating them fails here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from service.grpc import inference_pb2 as pb

REPO = Path(__file__).resolve().parents[3]
GENERATED = (
    "inference_pb2.py",
    "inference_pb2.pyi",
    "inference_pb2_grpc.py",
    "inference_pb2_grpc.pyi",
)


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gen-grpc.sh")],
        check=True,
        env={**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable},
        capture_output=True,
    )
    for name in GENERATED:
        committed = (REPO / "service" / "grpc" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"run scripts/gen-grpc.sh ({name})"


def test_messages_live_in_a_pool_of_their_own() -> None:
    """Triton's client registers the same message names in protobuf's default pool."""
    from google.protobuf import descriptor_pool

    assert pb.DESCRIPTOR.pool is pb.POOL
    assert pb.POOL is not descriptor_pool.Default()
    import tritonclient.grpc.service_pb2 as triton_pb2

    ours = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"\1\2"])
    ours.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    theirs = triton_pb2.ModelInferRequest.FromString(ours.SerializeToString())
    assert theirs.model_name == "m"
    assert list(theirs.inputs[0].shape) == [1, 2]
    assert theirs.raw_input_contents[0] == b"\1\2"
