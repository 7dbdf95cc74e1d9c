#!/usr/bin/env python3
# vhdx-spec-read.py IMAGE OUT.raw: read a fixed or dynamic VHDX into a raw
# file, written from [MS-VHDX] (v20180912) alone, so that the tests have
# a reader that shares no code and no assumption with vhdkit: the current
# header (2.2.2), the region table (2.2.3), the metadata table and its
# system items (2.6), the BAT (2.5) and the payload blocks.  It checks
# every CRC-32C it reads and refuses what it does not implement (a
# non-empty log, which the caller must replay first; differencing disks;
# PARTIALLY_PRESENT blocks).  Prints "SIZE BLOCK_SIZE LOGICAL PHYSICAL".

import struct
import sys
import uuid

KiB = 1024
MiB = 1024 * KiB

BAT_REGION = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_REGION = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
LOGICAL_SECTOR_SIZE = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")


def crc32c(data):
    # CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, bitwise.
    table = crc32c.table
    if table is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        crc32c.table = table
    c = 0xFFFFFFFF
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
crc32c.table = None


def fail(msg):
    sys.exit("vhdx-spec-read: " + msg)


def checked(buf, what):
    # The checksum field is at offset 4, computed with it as zero.
    want = struct.unpack_from("<I", buf, 4)[0]
    got = crc32c(buf[:4] + b"\0\0\0\0" + buf[8:])
    if want != got:
        fail("%s: checksum 0x%08x, computed 0x%08x" % (what, want, got))
    return buf


def main():
    path, out_path = sys.argv[1], sys.argv[2]
    f = open(path, "rb")

    def pread(n, off):
        f.seek(off)
        b = f.read(n)
        if len(b) != n:
            fail("short read of %d bytes at %d" % (n, off))
        return b

    if pread(8, 0) != b"vhdxfile":
        fail("no file type identifier")

    # 2.2.2: of the two headers, the valid one with the larger
    # SequenceNumber is current.
    current = None
    for off in (64 * KiB, 128 * KiB):
        h = pread(4 * KiB, off)
        if h[:4] != b"head":
            continue
        try:
            checked(h, "header at %d" % off)
        except SystemExit:
            continue
        seq = struct.unpack_from("<Q", h, 8)[0]
        if current is None or seq > current[0]:
            current = (seq, h)
    if current is None:
        fail("no valid header")
    h = current[1]
    log_guid = h[48:64]
    if log_guid != bytes(16):
        fail("the log is not empty (LogGuid set): replay it first")

    # 2.2.3: region table 1 (table 2 is a copy).
    rt = checked(pread(64 * KiB, 192 * KiB), "region table")
    if rt[:4] != b"regi":
        fail("region table signature")
    count = struct.unpack_from("<I", rt, 8)[0]
    if count > 2047:
        fail("region table entry count %d" % count)
    regions = {}
    for i in range(count):
        e = 16 + 32 * i
        guid = uuid.UUID(bytes_le=rt[e:e + 16])
        off, length, flags = struct.unpack_from("<QII", rt, e + 16)
        regions[guid] = (off, length)
    if BAT_REGION not in regions or METADATA_REGION not in regions:
        fail("region table lacks the BAT or metadata region")

    # 2.6.1: metadata table at the start of the metadata region.
    moff, mlen = regions[METADATA_REGION]
    mt = pread(64 * KiB, moff)
    if mt[:8] != b"metadata":
        fail("metadata table signature")
    count = struct.unpack_from("<H", mt, 10)[0]
    items = {}
    for i in range(count):
        e = 32 + 32 * i
        guid = uuid.UUID(bytes_le=mt[e:e + 16])
        ioff, ilen, flags = struct.unpack_from("<III", mt, e + 16)
        if ioff + ilen > mlen:
            fail("metadata item past its region")
        if not flags & 1:               # system items only (IsUser clear)
            items[guid] = pread(ilen, moff + ioff)

    block_size, fp_flags = struct.unpack_from("<II", items[FILE_PARAMETERS])
    if fp_flags & 2:
        fail("differencing disks (HasParent) are not read here")
    size = struct.unpack_from("<Q", items[VIRTUAL_DISK_SIZE])[0]
    logical = struct.unpack_from("<I", items[LOGICAL_SECTOR_SIZE])[0]
    physical = struct.unpack_from("<I", items[PHYSICAL_SECTOR_SIZE])[0]
    if block_size < MiB or block_size > 256 * MiB or \
       block_size & (block_size - 1):
        fail("block size %d" % block_size)
    if logical not in (512, 4096) or physical not in (512, 4096):
        fail("sector sizes %d/%d" % (logical, physical))
    if size % logical:
        fail("virtual size %d is not a multiple of %d" % (size, logical))

    # 2.5: a sector bitmap entry follows every chunk_ratio payload
    # entries; chunk ratio = 2^23 * logical sector size / block size.
    chunk_ratio = (1 << 23) * logical // block_size
    blocks = (size + block_size - 1) // block_size
    boff, blen = regions[BAT_REGION]
    total = blocks + (blocks - 1) // chunk_ratio
    if total * 8 > blen:
        fail("BAT region too small")
    bat = pread(total * 8, boff)

    with open(out_path, "wb") as out:
        for b in range(blocks):
            entry = struct.unpack_from("<Q", bat, 8 * (b + b // chunk_ratio))[0]
            state = entry & 7
            n = min(block_size, size - b * block_size)
            if state == 6:              # PAYLOAD_BLOCK_FULLY_PRESENT
                out.write(pread(n, (entry >> 20) * MiB))
            elif state in (0, 1, 2, 3):  # not present, undefined, zero, unmapped
                out.seek(n, 1)
            else:
                fail("block %d: state %d not read here" % (b, state))
        out.truncate(size)
    print(size, block_size, logical, physical)


main()
