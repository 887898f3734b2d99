"""A minimal TFRecord reader/writer and tf.train.Example codec, so the PyTorch port reads the
original's ImageNet shards without TensorFlow.

Why hand-written: the only readers of this format on PyPI are TensorFlow itself (which this package
must not import: it would tie the port to TF and to the TF-before-torchvision import-order crash)
and small third-party packages that are not dependencies of this repository. The format is small:

  record  = uint64 length (LE) | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
  Example = { 1: Features }, Features = { 1: map entry { 1: key string, 2: Feature } },
  Feature = oneof { 1: BytesList{1: bytes*}, 2: FloatList{1: float* packed}, 3: Int64List{1: int64* packed} }

The length CRC is always verified (cheap, catches truncation and misaligned framing); the data CRC
is verified when `verify_data=True`. CRC32C is pure Python unless the optional `google_crc32c` or
`crc32c` package is installed (then it is used: ~1000x faster for prepare's ImageNet shards).
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterator

from deepobs.datasets.base import DataCorruptError

_CRC32C_POLY_REFLECTED = 0x82F63B78
_MASK_DELTA = 0xA282EAD8


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (_CRC32C_POLY_REFLECTED if crc & 1 else 0)
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _fast_crc32c():
    try:
        import google_crc32c
        return lambda data: google_crc32c.value(bytes(data))
    except ImportError:
        pass
    try:
        import crc32c
        return crc32c.crc32c
    except ImportError:
        return None


crc32c = _fast_crc32c() or _crc32c_python


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def read_records(path: Path, verify_data: bool = False) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while True:
            header = stream.read(12)
            if not header:
                return
            if len(header) < 12:
                raise DataCorruptError(path, "file ends inside a record header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise DataCorruptError(path, "record length checksum mismatch")
            data = stream.read(length)
            footer = stream.read(4)
            if len(data) < length or len(footer) < 4:
                raise DataCorruptError(path, "file ends inside a record")
            if verify_data and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise DataCorruptError(path, "record data checksum mismatch")
            yield data


def count_records(path: Path) -> int:
    """Number of records, from the framing alone (seeks over the data)."""
    count = 0
    size = path.stat().st_size
    with open(path, "rb") as stream:
        position = 0
        while position < size:
            header = stream.read(12)
            if len(header) < 12:
                raise DataCorruptError(path, "file ends inside a record header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise DataCorruptError(path, "record length checksum mismatch")
            position += 12 + length + 4
            if position > size:
                raise DataCorruptError(path, "file ends inside a record")
            stream.seek(position)
            count += 1
    return count


def frame_record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# ---- protobuf wire format: just what tf.train.Example needs ----

def _read_varint(buffer: bytes, position: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if position >= len(buffer):
            raise ValueError("truncated varint")
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def _fields(buffer: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): value is an int for varint/fixed, bytes for length-delimited."""
    position = 0
    while position < len(buffer):
        key, position = _read_varint(buffer, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _read_varint(buffer, position)
        elif wire_type == 1:
            value, position = struct.unpack_from("<Q", buffer, position)[0], position + 8
        elif wire_type == 2:
            length, position = _read_varint(buffer, position)
            value, position = buffer[position:position + length], position + length
            if len(value) < length:
                raise ValueError("truncated length-delimited field")
        elif wire_type == 5:
            value, position = struct.unpack_from("<I", buffer, position)[0], position + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, wire_type, value


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(buffer: bytes) -> list:
    for kind, _, payload in _fields(buffer):
        values: list = []
        for _, wire_type, value in _fields(payload):
            if kind == 1:
                values.append(bytes(value))
            elif kind == 2:
                values.extend(struct.unpack(f"<{len(value) // 4}f", value) if wire_type == 2
                              else struct.unpack("<f", struct.pack("<I", value)))
            elif kind == 3:
                if wire_type == 2:
                    position = 0
                    while position < len(value):
                        item, position = _read_varint(value, position)
                        values.append(_signed64(item))
                else:
                    values.append(_signed64(value))
        return values
    return []


def parse_example(serialized: bytes) -> dict[str, list]:
    """tf.train.Example -> {feature name: list of bytes | float | int}."""
    features: dict[str, list] = {}
    for number, _, features_message in _fields(serialized):
        if number != 1:
            continue
        for entry_number, _, entry in _fields(features_message):
            if entry_number != 1:
                continue
            key, value = "", b""
            for field_number, _, field_value in _fields(entry):
                if field_number == 1:
                    key = bytes(field_value).decode("utf-8")
                elif field_number == 2:
                    value = field_value
            features[key] = _decode_feature(value)
    return features


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def encode_example(features: dict[str, list[bytes] | list[int]]) -> bytes:
    """{name: [bytes...] | [int...]} -> serialized tf.train.Example (bytes and int64 lists only)."""
    entries = b""
    for key, values in features.items():
        if values and isinstance(values[0], (bytes, bytearray)):
            feature = _length_delimited(1, b"".join(_length_delimited(1, bytes(v)) for v in values))
        else:
            feature = _length_delimited(3, _length_delimited(1, b"".join(_varint(int(v)) for v in values)))
        entries += _length_delimited(1, _length_delimited(1, key.encode("utf-8")) + _length_delimited(2, feature))
    return _length_delimited(1, entries)
