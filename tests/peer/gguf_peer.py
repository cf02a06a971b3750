#!/usr/bin/env python3
"""gguf_peer.py FILE.gguf - dump a GGUF as seen by the PyPI `gguf` package.

Prints one line per KV then one per tensor, in file order, in a format the
cmocka test (tests/test_gguf.c) also produces from our own reader, so the two
views can be compared byte for byte:

  K <key> <type> <value>        scalars: hex of the little-endian bytes
                                string: sha256 of the bytes
  K <key> array:<type> <count> <sha256>
                                numeric arrays: sha256 of the packed elements
                                string arrays: sha256 of (u64 len + bytes) each
  T <name> <ggml type> <ne0,ne1,...> <absolute offset> <nbytes> <sha256>

Exit 0 on success, 2 if the package is missing, 1 if the file cannot be read.
"""
import hashlib
import struct
import sys

try:
    import gguf
    from gguf import GGUFValueType as VT
except ImportError:
    print("gguf package not installed", file=sys.stderr)
    sys.exit(2)

TYPE_NAMES = {
    VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16",
    VT.UINT32: "u32", VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool",
    VT.STRING: "string", VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64",
}


def main() -> int:
    reader = gguf.GGUFReader(sys.argv[1], "r")
    out = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):  # the reader's pseudo-fields for the header
            continue
        t = field.types[0]
        if t == VT.ARRAY:
            et = field.types[1] if len(field.types) > 1 else None
            h = hashlib.sha256()
            if et == VT.STRING:
                for i in field.data:
                    b = bytes(field.parts[i])
                    h.update(struct.pack("<Q", len(b)) + b)
            else:
                for i in field.data:
                    h.update(field.parts[i].tobytes())
            # gguf-py records no element type for an empty array: print "?"
            name = TYPE_NAMES[et] if et is not None and len(field.data) else "?"
            out.append(f"K {key} array:{name} {len(field.data)} {h.hexdigest()}")
        elif t == VT.STRING:
            b = bytes(field.parts[field.data[0]])
            out.append(f"K {key} string {hashlib.sha256(b).hexdigest()}")
        else:
            out.append(f"K {key} {TYPE_NAMES[t]} {field.parts[field.data[0]].tobytes().hex()}")
    for t in reader.tensors:
        ne = ",".join(str(int(x)) for x in t.shape)
        data = t.data.tobytes()
        if len(data) != int(t.n_bytes):
            print(f"tensor {t.name}: {len(data)} bytes read, n_bytes says {t.n_bytes}", file=sys.stderr)
            return 1
        out.append(f"T {t.name} {int(t.tensor_type)} {ne} {int(t.data_offset)} {int(t.n_bytes)} "
                   f"{hashlib.sha256(data).hexdigest()}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
