"""Generated mimo.v1 protobuf and gRPC stubs."""
