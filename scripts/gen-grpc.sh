#!/usr/bin/env bash
# Generate the Python modules of service/grpc/inference.proto: messages (inference_pb2.py),
# stubs (inference_pb2_grpc.py) and their type hints (.pyi, by mypy-protobuf, so mypy --strict
# checks every call into them). They are committed, so neither the image nor a user needs
# grpcio-tools; run this after changing the .proto (tests/service/grpc/test_stubs.py fails
# until then). OUT=DIR writes them there instead (the test compares).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
bin="$(dirname "$python")"
out="${OUT:-service/grpc}"
"$python" -m grpc_tools.protoc \
  --proto_path=service/grpc \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out" \
  --mypy_out="$out" \
  --grpc_python_out="$out" \
  --mypy_grpc_out="$out" \
  service/grpc/inference.proto
# protoc writes `import inference_pb2`; inside the package it must be absolute.
sed -i 's/^import inference_pb2 as inference__pb2$/from service.grpc import inference_pb2 as inference__pb2/' \
  "$out/inference_pb2_grpc.py"
sed -i 's/^import inference_pb2 as _inference_pb2$/from service.grpc import inference_pb2 as _inference_pb2/' "$out/inference_pb2_grpc.pyi"
# A descriptor pool of our own, not protobuf's default one: a process that also imports
# tritonclient.grpc (the tests, a user's app) would otherwise fail on the same message names
# ("duplicate symbol 'inference.ServerLiveRequest'"); the wire format does not change.
sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/POOL = _descriptor_pool.DescriptorPool()\nDESCRIPTOR = POOL.AddSerializedFile(/' \
  "$out/inference_pb2.py"
grep -q '^POOL = _descriptor_pool.DescriptorPool()$' "$out/inference_pb2.py"
printf '\nfrom google.protobuf import descriptor_pool as _descriptor_pool\n\nPOOL: _descriptor_pool.DescriptorPool\n' >> "$out/inference_pb2.pyi"
