#!/usr/bin/env python3
"""Peer check: open safetensors files with the PyPI `safetensors` package and
print what it sees, one line per item, in the format tests/test_safetensors.c
prints for apr's own reader:

  M <key> <sha256 of the value>          __metadata__ entries, sorted by key
  T <name> <dtype> <d0,d1,...> <sha256>  tensors, sorted by name (payload sha256)

Usage: safetensors_peer.py FILE [FILE...]   (shards of one set: give them all)
Exit 0 on success, 2 when the package cannot open a file, 3 when the package is
missing (the C test checks importability first and skips visibly).
"""
import hashlib
import sys

try:
    import numpy as np
    from safetensors import safe_open
except ImportError as e:  # pragma: no cover
    print(f"safetensors/numpy not importable: {e}", file=sys.stderr)
    sys.exit(3)

NP_TO_ST = {
    np.dtype("float64"): "F64", np.dtype("float32"): "F32", np.dtype("float16"): "F16",
    np.dtype("int64"): "I64", np.dtype("int32"): "I32", np.dtype("int16"): "I16", np.dtype("int8"): "I8",
    np.dtype("uint64"): "U64", np.dtype("uint32"): "U32", np.dtype("uint16"): "U16", np.dtype("uint8"): "U8",
    np.dtype("bool"): "BOOL",
}


def main(paths):
    meta = {}
    tensors = []
    for p in paths:
        try:
            with safe_open(p, framework="numpy") as f:
                for k, v in (f.metadata() or {}).items():
                    meta[k] = v
                for name in f.keys():
                    x = f.get_tensor(name)
                    st = NP_TO_ST.get(x.dtype, str(x.dtype))
                    # The dtype recorded in the header must match what numpy got.
                    declared = f.get_slice(name).get_dtype()
                    if declared != st:
                        print(f"{p}: {name}: header dtype {declared}, numpy dtype {x.dtype}", file=sys.stderr)
                        return 2
                    data = np.ascontiguousarray(x).tobytes()
                    shape = ",".join(str(d) for d in x.shape)
                    tensors.append((name, st, shape, hashlib.sha256(data).hexdigest()))
        except Exception as e:  # the package refused the file
            print(f"{p}: safetensors could not read it: {e}", file=sys.stderr)
            return 2
    for k in sorted(meta):
        print(f"M {k} {hashlib.sha256(meta[k].encode('utf-8')).hexdigest()}")
    for t in sorted(tensors):
        print("T " + " ".join(t))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
