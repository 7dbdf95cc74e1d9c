#!/usr/bin/env python3
# craft-vhd.py: rewrite the parent locators and parent name of an existing
# differencing VHD (one that vhdtool created), to make hostile children for
# the confinement tests.  Only the standard library; nothing here trusts the
# engine under test: the layout is decoded straight from the VHD spec.
#
#   craft-vhd.py CHILD [--name NAME] [--locator CODE:PATH]...
#                [--raw-locator CODE:SPACE:LENGTH:OFFSET]... [--keep]
#                [--locator-in-bat-padding CODE:PATH]
#   craft-vhd.py CHILD --show
#
# --locator may be repeated; CODE is W2ru, W2ku or MacX.  Unless --keep is
# given, every existing locator is dropped first, so the child carries only
# the locators given.  The new locator data is written into the data areas
# that the existing locators reserved (vhdtool reserves one per locator), so
# the file's size and its footer do not move.  The dynamic header's
# checksum is recomputed.  --raw-locator writes an entry as given (no
# data), for locators whose fields lie: lengths past the end of the file,
# offsets into the headers.  --name sets the parent unicode name (UTF-16BE,
# 512 bytes); --name '' clears it.  --locator-in-bat-padding writes the
# locator's data into the padding of the BAT's last sector (after the last
# entry), where a writer that rewrites BAT sectors whole destroys it.

import argparse
import struct
import sys

SECTOR = 512
HEADER_SIZE = 1024
CHECKSUM_AT = 36                # in both footer and dynamic header
PARENT_NAME_AT = 64
PARENT_NAME_SIZE = 512
LOCATORS_AT = 576
LOCATOR_SIZE = 24
N_LOCATORS = 8

CODES = {
    "W2ru": 0x57327275,
    "W2ku": 0x57326B75,
    "MacX": 0x4D616358,
}


def checksum(buf, at):
    b = bytearray(buf)
    b[at:at + 4] = b"\0\0\0\0"
    return (~sum(b)) & 0xFFFFFFFF


def read_layout(f):
    f.seek(0)
    footer = f.read(SECTOR)
    if footer[:8] != b"conectix":
        sys.exit("craft-vhd: no footer copy at offset 0 (not a dynamic or "
                 "differencing VHD)")
    disk_type = struct.unpack_from(">I", footer, 60)[0]
    if disk_type != 4:
        sys.exit("craft-vhd: disk type %d is not differencing (4)"
                 % disk_type)
    data_offset = struct.unpack_from(">Q", footer, 16)[0]
    f.seek(data_offset)
    header = bytearray(f.read(HEADER_SIZE))
    if header[:8] != b"cxsparse":
        sys.exit("craft-vhd: no dynamic header at %d" % data_offset)
    if struct.unpack_from(">I", header, CHECKSUM_AT)[0] != \
            checksum(header, CHECKSUM_AT):
        sys.exit("craft-vhd: the dynamic header's checksum is already bad")
    return data_offset, header


def bat_padding(header, nbytes):
    """The offset of nbytes in the padding of the BAT's last sector."""
    table, = struct.unpack_from(">Q", header, 16)
    entries, = struct.unpack_from(">I", header, 28)
    at = table + 4 * entries
    room = (SECTOR - at % SECTOR) % SECTOR
    if room < nbytes:
        sys.exit("craft-vhd: the BAT's last sector has %d bytes of padding,"
                 " not %d" % (room, nbytes))
    return at


def locators(header):
    out = []
    for i in range(N_LOCATORS):
        at = LOCATORS_AT + LOCATOR_SIZE * i
        code, space, length, _res, offset = struct.unpack_from(
            ">IIIIQ", header, at)
        out.append((code, space, length, offset))
    return out


def space_bytes(space):
    # Writers disagree: the spec says sectors, several store bytes.
    return space if space >= SECTOR else space * SECTOR


def encode(code, path):
    if code == CODES["MacX"]:
        return path.encode("utf-8")
    return path.encode("utf-16-le")


def show(f):
    _, header = read_layout(f)
    name = header[PARENT_NAME_AT:PARENT_NAME_AT + PARENT_NAME_SIZE]
    print("parent-name: %s" % name.decode("utf-16-be").rstrip("\0"))
    for i, (code, space, length, offset) in enumerate(locators(header)):
        if code == 0:
            continue
        f.seek(offset)
        data = f.read(length)
        text = data.decode("utf-8" if code == CODES["MacX"] else "utf-16-le",
                           errors="replace")
        print("locator %d: %s space=%d length=%d offset=%d %s"
              % (i, struct.pack(">I", code).decode("latin-1"), space, length,
                 offset, text))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("child")
    ap.add_argument("--name")
    ap.add_argument("--locator", action="append", default=[])
    ap.add_argument("--raw-locator", action="append", default=[])
    ap.add_argument("--locator-in-bat-padding", action="append",
                    default=[])
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--show", action="store_true")
    args = ap.parse_args()

    with open(args.child, "r+b") as f:
        if args.show:
            show(f)
            return
        data_offset, header = read_layout(f)
        old = locators(header)
        areas = sorted({(offset, space_bytes(space), space)
                        for code, space, length, offset in old
                        if code != 0 and offset != 0})
        new = []
        if args.keep:
            new = [l for l in old if l[0] != 0]
            used = {l[3] for l in new}
            areas = [a for a in areas if a[0] not in used]
        for spec in args.locator:
            code_name, _, path = spec.partition(":")
            if code_name not in CODES:
                sys.exit("craft-vhd: unknown platform code %r" % code_name)
            data = encode(CODES[code_name], path)
            fit = [a for a in areas if a[1] >= len(data)]
            if not fit:
                sys.exit("craft-vhd: no reserved locator area holds %d bytes"
                         % len(data))
            offset, nbytes, space = fit[0]
            areas.remove(fit[0])
            f.seek(offset)
            f.write(data + b"\0" * (nbytes - len(data)))
            new.append((CODES[code_name], space, len(data), offset))
        for spec in args.locator_in_bat_padding:
            code_name, _, path = spec.partition(":")
            if code_name not in CODES:
                sys.exit("craft-vhd: unknown platform code %r" % code_name)
            data = encode(CODES[code_name], path)
            offset = bat_padding(header, len(data))
            f.seek(offset)
            f.write(data)
            new.append((CODES[code_name], len(data), len(data), offset))
        for spec in args.raw_locator:
            code_name, space, length, offset = spec.split(":")
            if code_name not in CODES:
                sys.exit("craft-vhd: unknown platform code %r" % code_name)
            new.append((CODES[code_name], int(space, 0), int(length, 0),
                        int(offset, 0)))
        if len(new) > N_LOCATORS:
            sys.exit("craft-vhd: more than %d locators" % N_LOCATORS)
        for i in range(N_LOCATORS):
            at = LOCATORS_AT + LOCATOR_SIZE * i
            entry = new[i] if i < len(new) else (0, 0, 0, 0)
            struct.pack_into(">IIIIQ", header, at, entry[0], entry[1],
                             entry[2], 0, entry[3])
        if args.name is not None:
            name = args.name.encode("utf-16-be")
            if len(name) > PARENT_NAME_SIZE:
                sys.exit("craft-vhd: parent name longer than 256 UTF-16 "
                         "units")
            header[PARENT_NAME_AT:PARENT_NAME_AT + PARENT_NAME_SIZE] = \
                name + b"\0" * (PARENT_NAME_SIZE - len(name))
        struct.pack_into(">I", header, CHECKSUM_AT,
                         checksum(header, CHECKSUM_AT))
        f.seek(data_offset)
        f.write(header)


if __name__ == "__main__":
    main()
