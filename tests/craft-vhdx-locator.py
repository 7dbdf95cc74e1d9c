#!/usr/bin/env python3
# craft-vhdx-locator.py IMAGE [--show] [--set KEY=VALUE]... [--remove KEY]...
#
# Rewrite the parent locator metadata item of an existing differencing
# VHDX ([MS-VHDX] 2.6.2.6), for the tests that need a hostile or unusual
# locator: set a key (added after the others when it is new, replaced in
# place otherwise) or remove one.  --show prints the item's pairs, one
# "KEY=VALUE" a line, after the changes.  Written from the spec, sharing
# nothing with vhdkit.
#
# The item: LocatorType GUID (16 bytes), Reserved (2), KeyValueCount (2),
# then KeyValueCount entries of KeyOffset (u32), ValueOffset (u32),
# KeyLength (u16), ValueLength (u16), offsets from the item's start, then
# the UTF-16LE strings.  The new item is written as Hyper-V writes one
# (after the entries, each key then its value), at the item's offset, and
# must fit before the next item (or the end of the metadata region, and
# 1 MiB).  Only two things change in the file: the item's bytes (its old
# bytes past the new end are zeroed) and the Length of its entry in the
# metadata table.  The metadata region carries no checksum, and neither
# the headers nor the region table change, so their CRC-32Cs stay valid.
#
# Refused: an image with a log to replay (LogGuid not zero), which would
# rewrite the metadata when opened; an image with no parent locator item;
# a locator of another type than the VHDX one.

import argparse
import struct
import sys
import uuid

KiB = 1024
MiB = 1024 * KiB
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")
ITEM_MAX = 1 * MiB


def fail(msg):
    sys.exit("craft-vhdx-locator: " + msg)


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def checked(block, sig):
    """block, whose checksum (at 4) is the CRC-32C with it zeroed."""
    if block[:4] != sig:
        return False
    want = struct.unpack_from("<I", block, 4)[0]
    return crc32c(block[:4] + b"\0" * 4 + block[8:]) == want


def current_header(f):
    best = None
    for off in (64 * KiB, 128 * KiB):
        f.seek(off)
        h = f.read(4 * KiB)
        if checked(h, b"head"):
            seq = struct.unpack_from("<Q", h, 8)[0]
            if best is None or seq > best[0]:
                best = (seq, h)
    if best is None:
        fail("no valid header")
    return best[1]


def metadata_region(f):
    for off in (192 * KiB, 256 * KiB):
        f.seek(off)
        t = f.read(64 * KiB)
        if not checked(t, b"regi"):
            continue
        count = struct.unpack_from("<I", t, 8)[0]
        for i in range(min(count, 2047)):
            e = 16 + 32 * i
            if uuid.UUID(bytes_le=t[e:e + 16]) == METADATA_REGION:
                return struct.unpack_from("<QI", t, e + 16)
        fail("no metadata region in the region table")
    fail("no valid region table")


def decode_item(item):
    if len(item) < 20:
        fail("parent locator item of %d bytes" % len(item))
    ltype = uuid.UUID(bytes_le=item[:16])
    if ltype != VHDX_LOCATOR_TYPE:
        fail("locator type %s is not the VHDX one" % ltype)
    count = struct.unpack_from("<H", item, 18)[0]
    pairs = []
    for i in range(count):
        ko, vo, kl, vl = struct.unpack_from("<IIHH", item, 20 + 12 * i)
        if ko + kl > len(item) or vo + vl > len(item):
            fail("entry %d leaves the item" % i)
        pairs.append([item[ko:ko + kl].decode("utf-16-le"),
                      item[vo:vo + vl].decode("utf-16-le")])
    return pairs


def encode_item(pairs):
    head = VHDX_LOCATOR_TYPE.bytes_le + struct.pack("<HH", 0, len(pairs))
    at = 20 + 12 * len(pairs)
    entries, strings = b"", b""
    for key, value in pairs:
        k, v = key.encode("utf-16-le"), value.encode("utf-16-le")
        if len(k) > 0xFFFF or len(v) > 0xFFFF:
            fail("key or value %r longer than 65535 bytes" % key)
        entries += struct.pack("<IIHH", at, at + len(k), len(k), len(v))
        strings += k + v
        at += len(k) + len(v)
    return head + entries + strings


def main():
    ap = argparse.ArgumentParser(description="rewrite a VHDX parent locator")
    ap.add_argument("image")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--remove", action="append", default=[], metavar="KEY")
    ap.add_argument("--show", action="store_true")
    args = ap.parse_args()

    with open(args.image, "r+b") as f:
        h = current_header(f)
        if uuid.UUID(bytes_le=h[48:64]).int != 0:
            fail("%s: LogGuid is set: replay its log first" % args.image)
        region_off, region_len = metadata_region(f)
        f.seek(region_off)
        region = f.read(region_len)
        if region[:8] != b"metadata":
            fail("no metadata table signature")
        count = struct.unpack_from("<H", region, 10)[0]
        entry = None
        ends = [region_len]
        for i in range(min(count, 2047)):
            e = 32 + 32 * i
            item_id = uuid.UUID(bytes_le=region[e:e + 16])
            off, length, flags = struct.unpack_from("<III", region, e + 16)
            if item_id == PARENT_LOCATOR and not flags & 1:
                entry = (e, off, length)
            elif length:
                ends.append(off)
        if entry is None:
            fail("%s has no parent locator item" % args.image)
        e, off, length = entry
        pairs = decode_item(region[off:off + length])

        for kv in args.set:
            key, sep, value = kv.partition("=")
            if not sep:
                fail("--set %r: KEY=VALUE" % kv)
            for p in pairs:
                if p[0] == key:
                    p[1] = value
                    break
            else:
                pairs.append([key, value])
        for key in args.remove:
            if not any(p[0] == key for p in pairs):
                fail("--remove %s: no such key" % key)
            pairs = [p for p in pairs if p[0] != key]

        if args.set or args.remove:
            item = encode_item(pairs)
            room = min([x for x in ends if x > off] + [off + ITEM_MAX]) - off
            if len(item) > room:
                fail("the new item (%d bytes) does not fit in the %d bytes"
                     " before the next item" % (len(item), room))
            f.seek(region_off + off)
            f.write(item + bytes(max(0, length - len(item))))
            f.seek(region_off + e + 20)
            f.write(struct.pack("<I", len(item)))
        if args.show:
            for key, value in pairs:
                print("%s=%s" % (key, value))


if __name__ == "__main__":
    main()
