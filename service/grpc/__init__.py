"""gRPC transport: the Open Inference Protocol over gRPC, beside the HTTP api/."""
