#!/usr/bin/env python3
# vhdx-spec-read.py IMAGE OUT.raw [PARENT [GRANDPARENT ...]]: read a
# fixed, dynamic or differencing VHDX into a raw file, written from
# [MS-VHDX] (v20180912) alone, so that the tests have a reader that
# shares no code and no assumption with vhdkit: the current header
# (2.2.2), the region table (2.2.3), the metadata table and its system
# items (2.6), the parent locator, the BAT (2.5), the sector bitmap
# blocks and the payload blocks.  It checks every CRC-32C it reads and
# refuses what it does not implement (a non-empty log, which the caller
# must replay first).
#
# A differencing image (HasParent) needs its parent as the next argument,
# that one's parent (if it is differencing too) as the one after, and so
# on.  Each parent's current DataWriteGuid must be the child's
# parent_linkage (or its parent_linkage2, when that is set), and its
# virtual size the child's.  The chain is read block by block and OUT.raw
# is written sparsely.
#
# Prints "SIZE BLOCK_SIZE LOGICAL PHYSICAL" of IMAGE.

import re
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
PARENT_LOCATOR = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

# BAT entry states (2.5): payload blocks, and the sector bitmap one.
NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED = 0, 1, 2, 3
FULLY_PRESENT, PARTIALLY_PRESENT = 6, 7
SB_BLOCK_PRESENT = 6

# A locator GUID value: "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}".
GUID_STRING = re.compile(
    r"\{[0-9A-Fa-f]{8}(-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}\}")


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


def guid_str(g):
    return "{%s}" % g


class Image:
    """One VHDX file of the chain.  where prefixes its error messages:
    empty for IMAGE (whose messages are as they always were), "parent
    PATH: " for the files of its chain."""

    def __init__(self, path, where):
        self.path = path
        self.where = where
        self.parent = None
        self.sb_cache = (None, None)
        try:
            self.f = open(path, "rb")
        except OSError as e:
            self.fail("cannot open: %s" % e.strerror)
        self.parse()

    def fail(self, msg):
        fail(self.where + msg)

    def pread(self, n, off):
        self.f.seek(off)
        b = self.f.read(n)
        if len(b) != n:
            self.fail("short read of %d bytes at %d" % (n, off))
        return b

    def parse(self):
        pread = self.pread
        if pread(8, 0) != b"vhdxfile":
            self.fail("no file type identifier")

        # 2.2.2: of the two headers, the valid one with the larger
        # SequenceNumber is current.
        current = None
        for off in (64 * KiB, 128 * KiB):
            h = pread(4 * KiB, off)
            if h[:4] != b"head":
                continue
            try:
                checked(h, self.where + "header at %d" % off)
            except SystemExit:
                continue
            seq = struct.unpack_from("<Q", h, 8)[0]
            if current is None or seq > current[0]:
                current = (seq, h)
        if current is None:
            self.fail("no valid header")
        h = current[1]
        self.data_write_guid = uuid.UUID(bytes_le=h[32:48])
        log_guid = h[48:64]
        if log_guid != bytes(16):
            self.fail("the log is not empty (LogGuid set): replay it first")

        # 2.2.3: region table 1 (table 2 is a copy).
        rt = checked(pread(64 * KiB, 192 * KiB), self.where + "region table")
        if rt[:4] != b"regi":
            self.fail("region table signature")
        count = struct.unpack_from("<I", rt, 8)[0]
        if count > 2047:
            self.fail("region table entry count %d" % count)
        regions = {}
        for i in range(count):
            e = 16 + 32 * i
            guid = uuid.UUID(bytes_le=rt[e:e + 16])
            off, length, flags = struct.unpack_from("<QII", rt, e + 16)
            regions[guid] = (off, length)
        if BAT_REGION not in regions or METADATA_REGION not in regions:
            self.fail("region table lacks the BAT or metadata region")

        # 2.6.1: metadata table at the start of the metadata region.
        moff, mlen = regions[METADATA_REGION]
        mt = pread(64 * KiB, moff)
        if mt[:8] != b"metadata":
            self.fail("metadata table signature")
        count = struct.unpack_from("<H", mt, 10)[0]
        items = {}
        for i in range(count):
            e = 32 + 32 * i
            guid = uuid.UUID(bytes_le=mt[e:e + 16])
            ioff, ilen, flags = struct.unpack_from("<III", mt, e + 16)
            if ioff + ilen > mlen:
                self.fail("metadata item past its region")
            if not flags & 1:           # system items only (IsUser clear)
                items[guid] = pread(ilen, moff + ioff)
        for guid, name in ((FILE_PARAMETERS, "file parameters"),
                           (VIRTUAL_DISK_SIZE, "virtual disk size"),
                           (LOGICAL_SECTOR_SIZE, "logical sector size"),
                           (PHYSICAL_SECTOR_SIZE, "physical sector size")):
            if guid not in items:
                self.fail("no %s metadata item" % name)

        block_size, fp_flags = struct.unpack_from("<II",
                                                  items[FILE_PARAMETERS])
        self.differencing = bool(fp_flags & 2)      # HasParent
        size = struct.unpack_from("<Q", items[VIRTUAL_DISK_SIZE])[0]
        logical = struct.unpack_from("<I", items[LOGICAL_SECTOR_SIZE])[0]
        physical = struct.unpack_from("<I", items[PHYSICAL_SECTOR_SIZE])[0]
        if block_size < MiB or block_size > 256 * MiB or \
           block_size & (block_size - 1):
            self.fail("block size %d" % block_size)
        if logical not in (512, 4096) or physical not in (512, 4096):
            self.fail("sector sizes %d/%d" % (logical, physical))
        if size % logical:
            self.fail("virtual size %d is not a multiple of %d"
                      % (size, logical))
        self.size, self.block_size = size, block_size
        self.logical, self.physical = logical, physical

        if self.differencing:
            if PARENT_LOCATOR not in items:
                self.fail("HasParent set, but no parent locator item")
            self.locator = self.parse_locator(items[PARENT_LOCATOR])

        # 2.5: a sector bitmap entry follows every chunk_ratio payload
        # entries; chunk ratio = 2^23 * logical sector size / block size.
        # A differencing image has every chunk's sector bitmap entry,
        # the last one's included.
        chunk_ratio = (1 << 23) * logical // block_size
        blocks = (size + block_size - 1) // block_size
        boff, blen = regions[BAT_REGION]
        if self.differencing:
            bitmap_blocks = (blocks + chunk_ratio - 1) // chunk_ratio
            total = bitmap_blocks * (chunk_ratio + 1)
        else:
            total = blocks + (blocks - 1) // chunk_ratio
        if total * 8 > blen:
            self.fail("BAT region too small")
        self.chunk_ratio, self.blocks = chunk_ratio, blocks
        self.bat = pread(total * 8, boff)

    def parse_locator(self, item):
        # The parent locator: a header (LocatorType, Reserved,
        # KeyValueCount), then KeyValueCount entries (KeyOffset,
        # ValueOffset, KeyLength, ValueLength), offsets from the start of
        # the item, keys and values UTF-16LE.
        if len(item) < 20:
            self.fail("parent locator of %d bytes" % len(item))
        ltype = uuid.UUID(bytes_le=item[:16])
        reserved, count = struct.unpack_from("<HH", item, 16)
        if ltype != VHDX_LOCATOR_TYPE:
            self.fail("parent locator type %s" % guid_str(ltype))
        if 20 + 12 * count > len(item):
            self.fail("parent locator: %d entries overrun its %d bytes"
                      % (count, len(item)))
        kv = {}
        for i in range(count):
            ko, vo, kl, vl = struct.unpack_from("<IIHH", item, 20 + 12 * i)
            if ko + kl > len(item) or vo + vl > len(item):
                self.fail("parent locator entry %d past the item" % i)
            if kl == 0 or vl == 0 or kl % 2 or vl % 2:
                self.fail("parent locator entry %d: key/value lengths %d/%d"
                          % (i, kl, vl))
            try:
                key = item[ko:ko + kl].decode("utf-16-le")
                value = item[vo:vo + vl].decode("utf-16-le")
            except UnicodeDecodeError:
                self.fail("parent locator entry %d: not UTF-16LE" % i)
            if key in kv:
                self.fail("parent locator: key %r twice" % key)
            kv[key] = value
        if "parent_linkage" not in kv:
            self.fail("parent locator has no parent_linkage (keys: %s)"
                      % ", ".join(sorted(kv)))
        self.linkages = []
        for key in ("parent_linkage", "parent_linkage2"):
            if key not in kv:
                continue
            if not GUID_STRING.fullmatch(kv[key]):
                self.fail("parent locator: %s %r is not a {GUID}"
                          % (key, kv[key]))
            g = uuid.UUID(kv[key])
            if key == "parent_linkage" or g != uuid.UUID(int=0):
                self.linkages.append((key, g))
        return kv

    def describe_parent(self):
        kv = self.locator
        where = ['%s "%s"' % (k, kv[k]) for k in
                 ("relative_path", "volume_path", "absolute_win32_path")
                 if k in kv]
        return "DataWriteGuid %s at %s" % (
            " or ".join(guid_str(g) for _, g in self.linkages),
            ", ".join(where) if where else "no path given")

    def link(self, parent):
        want = [g for _, g in self.linkages]
        if parent.data_write_guid not in want:
            fail("%s: the parent given, %s, has DataWriteGuid %s, but %s's %s"
                 % (self.path, parent.path, guid_str(parent.data_write_guid),
                    self.path, " / ".join("%s is %s" % (k, guid_str(g))
                                          for k, g in self.linkages)))
        if parent.size != self.size:
            fail("%s: the parent given, %s, has virtual size %d, not %d"
                 % (self.path, parent.path, parent.size, self.size))
        self.parent = parent

    def entry(self, i):
        return struct.unpack_from("<Q", self.bat, 8 * i)[0]

    def bitmap(self, b):
        # The sector bitmap block of payload block b's chunk (1 MiB).
        chunk = b // self.chunk_ratio
        if self.sb_cache[0] != chunk:
            e = self.entry(chunk * (self.chunk_ratio + 1) + self.chunk_ratio)
            if e & 7 != SB_BLOCK_PRESENT:
                self.fail("block %d is PARTIALLY_PRESENT but the sector "
                          "bitmap entry of its chunk %d has state %d"
                          % (b, chunk, e & 7))
            self.sb_cache = (chunk, self.pread(MiB, (e >> 20) * MiB))
        return self.sb_cache[1]

    def read(self, off, n):
        """Yield (length, bytes, or None for zeros) covering [off, off+n),
        within the virtual size."""
        end = off + n
        bs = self.block_size
        while off < end:
            b = off // bs
            bstart = b * bs
            m = min(end, bstart + bs) - off
            entry = self.entry(b + b // self.chunk_ratio)
            state = entry & 7
            fstart = (entry >> 20) * MiB        # the block in the file
            if state == FULLY_PRESENT:
                yield m, self.pread(m, fstart + off - bstart)
            elif state == NOT_PRESENT and self.differencing:
                yield from self.parent.read(off, m)
            elif state in (NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED):
                yield m, None
            elif state == PARTIALLY_PRESENT and self.differencing:
                yield from self.read_partial(b, off, m, fstart)
            else:
                self.fail("block %d: state %d not read here" % (b, state))
            off += m

    def read_partial(self, b, off, n, fstart):
        # Bit i of the chunk's sector bitmap (LSB first in each
        # byte) is the chunk's i-th logical sector: 1, from this file's
        # block; 0, from the parent.
        bm = self.bitmap(b)
        ls = self.logical
        bstart = b * self.block_size
        base = (b % self.chunk_ratio) * (self.block_size // ls)
        end = off + n
        last = (end - bstart + ls - 1) // ls     # sector bound, in block

        def bit(s):
            i = base + s
            return (bm[i >> 3] >> (i & 7)) & 1

        s = (off - bstart) // ls
        while off < end:
            v = bit(s)
            full = 0xFF if v else 0x00
            t = s + 1
            while t < last:
                i = base + t
                if not i & 7 and t + 8 <= last and bm[i >> 3] == full:
                    t += 8
                elif bit(t) == v:
                    t += 1
                else:
                    break
            run_end = min(end, bstart + t * ls)
            if v:
                yield run_end - off, self.pread(run_end - off,
                                                fstart + off - bstart)
            else:
                yield from self.parent.read(off, run_end - off)
            off, s = run_end, t


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: vhdx-spec-read.py IMAGE OUT.raw "
                 "[PARENT [GRANDPARENT ...]]")
    path, out_path = sys.argv[1], sys.argv[2]
    parents = sys.argv[3:]

    top = img = Image(path, "")
    while img.differencing:
        if not parents:
            fail("%s is a differencing image: give its parent, %s"
                 % (img.path, img.describe_parent()))
        p = parents.pop(0)
        parent = Image(p, "parent %s: " % p)
        img.link(parent)
        img = parent
    if parents:
        fail("%s is not a differencing image: unused argument(s) %s"
             % (img.path, " ".join(parents)))

    size, block_size = top.size, top.block_size
    with open(out_path, "wb") as out:
        for b in range(top.blocks):
            n = min(block_size, size - b * block_size)
            for m, data in top.read(b * block_size, n):
                if data is None:
                    out.seek(m, 1)
                else:
                    out.write(data)
        out.truncate(size)
    print(size, block_size, top.logical, top.physical)


main()
