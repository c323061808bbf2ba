"""Python stubs for Loom's gRPC API (proto/loom/v1), generated on the fly with grpcio-tools, for
tests, benchmarks and scripts.

  from loom_grpc import load_stubs
  pb, rpc = load_stubs()                 # generation_pb2, generation_pb2_grpc
  stub = rpc.GenerationStub(grpc.insecure_channel("127.0.0.1:50051"))
  for msg in stub.Chat(pb.ChatRequest(messages=[pb.ChatMessage(role="user", content="Hi")])):
      print(msg.text, end="")
"""
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_DIR = os.path.join(ROOT, "proto")


_generated = None


def _generate(out_dir=None):
    """Generates every loom.v1 module once per process and puts them on sys.path."""
    global _generated
    if _generated is None:
        from grpc_tools import protoc
        out = out_dir or tempfile.mkdtemp(prefix="loom_pb_")
        v1 = os.path.join(PROTO_DIR, "loom", "v1")
        protos = sorted(os.path.join(v1, f) for f in os.listdir(v1) if f.endswith(".proto"))
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}",
                          f"--grpc_python_out={out}", *protos])
        if rc != 0:
            raise RuntimeError("protoc failed on proto/loom/v1")
        sys.path.insert(0, out)
        _generated = out
    return _generated


def load_stubs(out_dir=None):
    """Generates the loom.v1 Python modules (into `out_dir`, a temporary directory by default)
    and returns (generation_pb2, generation_pb2_grpc)."""
    _generate(out_dir)
    from loom.v1 import generation_pb2, generation_pb2_grpc
    return generation_pb2, generation_pb2_grpc


def load_pipeline_stubs(out_dir=None):
    """As load_stubs, for loom.v1.Pipelines: (pipelines_pb2, pipelines_pb2_grpc)."""
    _generate(out_dir)
    from loom.v1 import pipelines_pb2, pipelines_pb2_grpc
    return pipelines_pb2, pipelines_pb2_grpc
