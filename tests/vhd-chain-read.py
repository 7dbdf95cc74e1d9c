#!/usr/bin/env python3
# vhd-chain-read.py: an independent reader of VHD images and chains, written
# from the VHD specification alone (standard library only), to check what
# the engine puts on disk without asking the engine.
#
#   vhd-chain-read.py read OUT TOP [PARENT...]
#       Write the virtual disk that the chain TOP, PARENT... (top first,
#       each the parent of the one before) reads as, to the raw file OUT.
#       Checks on the way: the trailing footer and the dynamic header
#       checksums, the cookies, that each child's parent UUID is its
#       parent's UUID and that the sizes agree.
#
#   vhd-chain-read.py compare-libvhdi REF VHDI TOP [PARENT...]
#       Compare REF (the raw disk the chain should read as) with VHDI (the
#       same chain as libvhdi's vhdimount shows it), sector by sector.  A
#       sector may differ only where libvhdi 20210425 misreads the sector
#       bitmap: libvhdi_block_descriptor_read_sector_bitmap_data() takes a
#       VHD bit as 'byte >> (7 - bit)' without '& 1', so a clear bit that
#       follows a set bit in the same bitmap byte counts as present (it
#       reads the child's own, unwritten, data area instead of the parent:
#       zeros).  Windows writes whole 4 KiB pages, so whole bitmap bytes,
#       and never shows it; byte-granular NBD writes do.  Any other
#       difference fails; the number of excused sectors is printed.

import struct
import sys

SECTOR = 512
UNUSED = 0xFFFFFFFF


def checksum(buf, at):
    b = bytearray(buf)
    b[at:at + 4] = b"\0\0\0\0"
    return (~sum(b)) & 0xFFFFFFFF


def fail(msg):
    sys.exit("vhd-chain-read: " + msg)


class Image:
    def __init__(self, path):
        self.path = path
        self.f = open(path, "rb")
        self.f.seek(0, 2)
        end = self.f.tell()
        if end < SECTOR:
            fail("%s: shorter than a footer" % path)
        self.f.seek(end - SECTOR)
        foot = self.f.read(SECTOR)
        if foot[:8] != b"conectix":
            fail("%s: no footer cookie in the last 512 bytes" % path)
        if struct.unpack_from(">I", foot, 64)[0] != checksum(foot, 64):
            fail("%s: bad footer checksum" % path)
        self.type = struct.unpack_from(">I", foot, 60)[0]
        self.size = struct.unpack_from(">Q", foot, 48)[0]
        self.uuid = foot[68:84]
        if self.type == 2:
            if self.size > end - SECTOR:
                fail("%s: fixed disk shorter than its size" % path)
            return
        if self.type not in (3, 4):
            fail("%s: disk type %d" % (path, self.type))
        data_offset = struct.unpack_from(">Q", foot, 16)[0]
        self.f.seek(data_offset)
        hd = self.f.read(1024)
        if hd[:8] != b"cxsparse":
            fail("%s: no dynamic header at %d" % (path, data_offset))
        if struct.unpack_from(">I", hd, 36)[0] != checksum(hd, 36):
            fail("%s: bad dynamic header checksum" % path)
        bat_offset = struct.unpack_from(">Q", hd, 16)[0]
        n = struct.unpack_from(">I", hd, 28)[0]
        self.block_size = struct.unpack_from(">I", hd, 32)[0]
        self.parent_uuid = hd[40:56]
        if self.block_size % SECTOR or self.block_size == 0:
            fail("%s: block size %d" % (path, self.block_size))
        if n * self.block_size < self.size:
            fail("%s: %d BAT entries do not cover the disk" % (path, n))
        self.f.seek(bat_offset)
        self.bat = struct.unpack(">%dI" % n, self.f.read(4 * n))
        spb = self.block_size // SECTOR
        # one bit per sector, padded to a whole number of sectors
        self.bitmap_size = ((spb + 7) // 8 + SECTOR - 1) // SECTOR * SECTOR
        for b, s in enumerate(self.bat):
            if s != UNUSED and \
                    s * SECTOR + self.bitmap_size + self.block_size > end:
                fail("%s: block %d at sector %d runs past the end" %
                     (path, b, s))

    def block(self, b):
        """(bitmap, data) of block b, or None if unallocated."""
        s = self.bat[b]
        if s == UNUSED:
            return None
        self.f.seek(s * SECTOR)
        bitmap = self.f.read(self.bitmap_size)
        data = self.f.read(self.block_size)
        return bitmap, data


def open_chain(paths):
    chain = [Image(p) for p in paths]
    for child, parent in zip(chain, chain[1:]):
        if child.type != 4:
            fail("%s is not differencing but has a parent" % child.path)
        if child.parent_uuid != parent.uuid:
            fail("%s: parent UUID %s is not %s's UUID %s" %
                 (child.path, child.parent_uuid.hex(), parent.path,
                  parent.uuid.hex()))
        if child.size != parent.size:
            fail("%s: size %d, parent %s: %d" %
                 (child.path, child.size, parent.path, parent.size))
    if chain[-1].type == 4:
        fail("%s is differencing: its parent is missing from the list" %
             chain[-1].path)
    bs = {c.block_size for c in chain if c.type != 2}
    if len(bs) > 1:
        fail("levels with different block sizes are not supported here")
    return chain


def spec_bit(bitmap, i):
    return bool(bitmap[i // 8] & (0x80 >> (i % 8)))


def libvhdi_bit(bitmap, i):
    return (bitmap[i // 8] >> (7 - i % 8)) != 0


def read_view(chain, bit, out=None):
    """Yield (offset, sector bytes, misread) for the whole disk, where
    misread says that spec_bit and libvhdi_bit disagree at a level that
    was consulted."""
    size = chain[0].size
    bs = next((c.block_size for c in chain if c.type != 2), 1 << 21)
    spb = bs // SECTOR
    for b in range(-(-size // bs)):
        blocks = []
        for c in chain:
            if c.type == 2:
                c.f.seek(b * bs)
                blocks.append(("fixed", c.f.read(bs).ljust(bs, b"\0")))
            else:
                blocks.append((c.type, c.block(b)))
        for i in range(spb):
            off = b * bs + i * SECTOR
            if off >= size:
                break
            data, misread = None, False
            for kind, blk in blocks:
                if kind == "fixed":
                    data = blk[i * SECTOR:(i + 1) * SECTOR]
                    break
                if blk is not None:
                    bitmap, d = blk
                    if spec_bit(bitmap, i) != libvhdi_bit(bitmap, i):
                        misread = True
                    if bit(bitmap, i):
                        data = d[i * SECTOR:(i + 1) * SECTOR]
                        break
                if kind == 3:
                    break
            yield off, data if data is not None else bytes(SECTOR), misread


def cmd_read(out, paths):
    chain = open_chain(paths)
    with open(out, "wb") as f:
        for off, data, _ in read_view(chain, spec_bit):
            if any(data):
                f.seek(off)
                f.write(data)
        f.truncate(chain[0].size)


def cmd_compare_libvhdi(ref, vhdi, paths):
    chain = open_chain(paths)
    excused = bad = 0
    with open(ref, "rb") as r, open(vhdi, "rb") as v:
        for off, _, misread in read_view(chain, spec_bit):
            a = r.read(SECTOR)
            b = v.read(SECTOR)
            if a == b:
                continue
            if misread:
                excused += 1
                continue
            bad += 1
            if bad <= 10:
                print("sector at %d differs (libvhdi's bitmap misread does"
                      " not explain it)" % off, file=sys.stderr)
        if r.read(1) or v.read(1):
            fail("%s and %s differ in size" % (ref, vhdi))
    print("compare-libvhdi: %d sectors differ only where libvhdi misreads"
          " the bitmap; %d differ otherwise" % (excused, bad))
    if bad:
        sys.exit(1)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "read":
        cmd_read(sys.argv[2], sys.argv[3:])
    elif len(sys.argv) >= 5 and sys.argv[1] == "compare-libvhdi":
        cmd_compare_libvhdi(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit("usage: vhd-chain-read.py read OUT TOP [PARENT...]\n"
                 "       vhd-chain-read.py compare-libvhdi REF VHDI TOP"
                 " [PARENT...]")


if __name__ == "__main__":
    main()
