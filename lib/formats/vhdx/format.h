/* vhdkit: the VHDX on-disk structures ([MS-VHDX] v20180912), except
 * the log (log.h).
 *
 * As for VHD (formats/vhd/format.h), structures here are decoded copies
 * in host byte order, never a cast over file bytes: vhdx_*_decode() reads
 * a little-endian buffer and validates every field that it can validate
 * on its own, returning 0 or -errno with a message that names the file,
 * the structure and the field; vhdx_*_encode() writes one back (computing
 * its CRC-32C where it has one).  Checks that need several structures or
 * the file's size are vhdx_bat_geometry(), vhdx_bat_entry_check() and
 * vhdx_layout_check().  Nothing here does I/O.  Code: format.c (header
 * section, GUIDs, layout), metadata.c (metadata region), locator.c
 * (parent locator item), bat.c (BAT geometry and entries).
 *
 * Layout of a file (offsets from its start):
 *   0       file type identifier ("vhdxfile", creator)   64 KiB
 *   64 KiB  header 1 ("head", 4 KiB used)                64 KiB
 *   128 KiB header 2                                     64 KiB
 *   192 KiB region table 1 ("regi")                      64 KiB
 *   256 KiB region table 2 (a copy of table 1)           64 KiB
 *   1 MiB.. log, BAT region, metadata region, blocks, anywhere on 1 MiB
 *           boundaries, located by the current header and the region table.
 */

#ifndef VHDKIT_VHDX_FORMAT_H
#define VHDKIT_VHDX_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/text.h"
#include "vhdkit.h"

#define VHDX_KiB                 UINT64_C (1024)
#define VHDX_MiB                 UINT64_C (1048576)

/* Fixed places of the header section. */
#define VHDX_FILE_ID_OFFSET       0u
#define VHDX_FILE_ID_SIZE         65536u      /* the structure's area */
#define VHDX_HEADER1_OFFSET       65536u
#define VHDX_HEADER2_OFFSET       131072u
#define VHDX_HEADER_SIZE          4096u       /* CRC-32C over these */
#define VHDX_REGION_TABLE1_OFFSET 196608u
#define VHDX_REGION_TABLE2_OFFSET 262144u
#define VHDX_REGION_TABLE_SIZE    65536u      /* CRC-32C over all of it */
#define VHDX_HEADER_AREA_SIZE     VHDX_MiB    /* nothing else below 1 MiB */
#define VHDX_METADATA_TABLE_SIZE  65536u      /* at the metadata region */

/* Everything placed by offset in the file (log, regions, blocks) sits on
 * 1 MiB boundaries and regions and the log are whole MiB long.
 */
#define VHDX_ALIGNMENT            VHDX_MiB

/* Limits from [MS-VHDX]. */
#define VHDX_CREATOR_UNITS        256u        /* UTF-16 code units */
#define VHDX_CREATOR_UTF8_SIZE    (VHDX_CREATOR_UNITS * 3 + 1)
#define VHDX_REGION_MAX_ENTRIES   2047u
#define VHDX_METADATA_MAX_ENTRIES 2047u
#define VHDX_METADATA_ITEM_MAX    VHDX_MiB    /* an item's length */
#define VHDX_MIN_BLOCK_SIZE       UINT32_C (1048576)
#define VHDX_MAX_BLOCK_SIZE       UINT32_C (268435456)
#define VHDX_MAX_VIRTUAL_SIZE     (UINT64_C (64) << 40)   /* 64 TiB */
#define VHDX_HEADER_VERSION       1u
#define VHDX_LOG_VERSION          0u
/* A sector bitmap block is 1 MiB: 2^23 bits, one per logical sector. */
#define VHDX_SECTOR_BITMAP_SIZE   VHDX_MiB
#define VHDX_SECTORS_PER_BITMAP   (UINT64_C (1) << 23)

/* GUIDs, in printed (RFC 4122) byte order like every struct vhd_guid;
 * the file stores them mixed-endian (vhdx_guid_decode/encode).
 */
extern const struct vhd_guid vhdx_region_bat;        /* 2DC27766-F623-4200-9D64-115E9BFD4A08 */
extern const struct vhd_guid vhdx_region_metadata;   /* 8B7CA206-4790-4B9A-B8FE-575F050F886E */
extern const struct vhd_guid vhdx_item_file_parameters;    /* CAA16737-FA36-4D43-B3B6-33F0AA44E76B */
extern const struct vhd_guid vhdx_item_virtual_disk_size;  /* 2FA54224-CD1B-4876-B211-5DBED83BF4B8 */
/* [MS-VHDX] 2.6.2.3 names this item "Virtual Disk ID"; the older
 * specification called it "Page 83 Data" (the SCSI page 83 identifier is
 * made from it): one item, two names.
 */
extern const struct vhd_guid vhdx_item_virtual_disk_id;    /* BECA12AB-B2E6-4523-93EF-C309E000C746 */
#define vhdx_item_page83_data vhdx_item_virtual_disk_id
extern const struct vhd_guid vhdx_item_logical_sector_size;  /* 8141BF1D-A96F-4709-BA47-F233A8FAAB5F */
extern const struct vhd_guid vhdx_item_physical_sector_size; /* CDA348C7-445D-4471-9CC9-E9885251C556 */
extern const struct vhd_guid vhdx_item_parent_locator;     /* A8D35F2D-B30B-454D-ABF7-D3D84834AB0C */
extern const struct vhd_guid vhdx_locator_type_vhdx;       /* B04AEFB7-D19E-4A81-B789-25B8E9445913 */

/* Little-endian codec. */
uint16_t vhdx_get_le16 (const uint8_t *p);
uint32_t vhdx_get_le32 (const uint8_t *p);
uint64_t vhdx_get_le64 (const uint8_t *p);
void vhdx_put_le16 (uint8_t *p, uint16_t v);
void vhdx_put_le32 (uint8_t *p, uint32_t v);
void vhdx_put_le64 (uint8_t *p, uint64_t v);

/* GUIDs as stored: Data1 (4 bytes), Data2, Data3 (2 each) little-endian,
 * then Data4's 8 bytes as they are.
 */
void vhdx_guid_decode (const uint8_t p[16], struct vhd_guid *guid);
void vhdx_guid_encode (const struct vhd_guid *guid, uint8_t p[16]);
bool vhdx_guid_equal (const struct vhd_guid *a, const struct vhd_guid *b);

/* File type identifier.  decode() checks the signature "vhdxfile" and
 * converts the creator (UTF-16LE, up to 256 units, NUL-padded) to UTF-8;
 * the creator is only for diagnostics ([MS-VHDX] 2.2.1), so malformed
 * UTF-16 in it leaves creator empty rather than refusing the file.
 * encode() writes all VHDX_FILE_ID_SIZE bytes (zeros after the creator)
 * and returns 0, -EINVAL (creator not UTF-8) or -ENAMETOOLONG (more than
 * 255 UTF-16 code units, which would leave no room for the NUL).
 */
struct vhdx_file_id {
  char creator[VHDX_CREATOR_UTF8_SIZE];       /* UTF-8, NUL-terminated */
};
int vhdx_file_id_decode (const uint8_t buf[VHDX_FILE_ID_SIZE],
                         const char *file, struct vhdx_file_id *id);
int vhdx_file_id_encode (const struct vhdx_file_id *id,
                         uint8_t buf[VHDX_FILE_ID_SIZE]);

/* Header ([MS-VHDX] 2.2.2). */
struct vhdx_header {
  uint32_t checksum;                /* as stored; recomputed by encode */
  uint64_t sequence_number;
  struct vhd_guid file_write_guid;
  struct vhd_guid data_write_guid;
  struct vhd_guid log_guid;         /* all zero: the log is empty */
  uint16_t log_version;             /* 0 */
  uint16_t version;                 /* 1 */
  uint32_t log_length;              /* bytes, a multiple of 1 MiB */
  uint64_t log_offset;              /* bytes, a multiple of 1 MiB, >= 1 MiB */
};

/* decode() checks, in this order, the signature "head", the checksum,
 * then the version (1), log version (0), log length and offset (multiples
 * of 1 MiB, offset >= 1 MiB, their sum not wrapping) and that a non-zero
 * LogGuid comes with a non-empty log.  which (1 or 2) names the header
 * in messages: "FILE: header 1: FIELD: why".
 */
int vhdx_header_decode (const uint8_t buf[VHDX_HEADER_SIZE],
                        const char *file, int which,
                        struct vhdx_header *header);
void vhdx_header_encode (struct vhdx_header *header,
                         uint8_t buf[VHDX_HEADER_SIZE]);

/* The current header ([MS-VHDX] 2.2.2): a header is valid when its
 * signature and checksum are; the current one is the only valid one, or
 * the valid one with the greater sequence number.  The current header is
 * then decoded (and its fields validated) into *header and *which is set
 * to 1 or 2.  When neither is valid the error names both reasons.
 */
int vhdx_pick_header (const uint8_t buf1[VHDX_HEADER_SIZE],
                      const uint8_t buf2[VHDX_HEADER_SIZE],
                      const char *file,
                      struct vhdx_header *header, int *which);

/* Region table ([MS-VHDX] 2.2.3).  Only the two regions that this
 * version knows are kept; other entries are checked and skipped (refused
 * when marked required).
 */
struct vhdx_region {
  uint64_t offset;                  /* bytes, a multiple of 1 MiB, >= 1 MiB */
  uint32_t length;                  /* bytes, a non-zero multiple of 1 MiB */
  bool required;                    /* as stored (qemu writes false) */
};
struct vhdx_regions {
  uint32_t checksum;                /* as stored; recomputed by encode */
  uint32_t entry_count;             /* every entry, known or not */
  struct vhdx_region bat;
  struct vhdx_region metadata;
};

/* decode() checks the signature "regi", the checksum, the entry count
 * (<= 2047), every entry's offset and length, that no two entries share
 * a GUID or overlap, and refuses an unknown required region (naming its
 * GUID) and a missing BAT or metadata entry.  which (1 or 2) names the table in messages.
 * encode() writes the BAT entry then the metadata entry (as Hyper-V
 * does), both marked required, and sets entry_count and checksum.
 */
int vhdx_region_table_decode (const uint8_t buf[VHDX_REGION_TABLE_SIZE],
                              const char *file, int which,
                              struct vhdx_regions *regions);
void vhdx_region_table_encode (struct vhdx_regions *regions,
                               uint8_t buf[VHDX_REGION_TABLE_SIZE]);

/* Metadata table ([MS-VHDX] 2.6.1): where the known system items are.
 * Items are named by their offset from the metadata region's start.
 */
struct vhdx_metadata_item {
  bool present;
  uint32_t offset;                  /* >= 64 KiB, or 0 with length 0 */
  uint32_t length;                  /* <= 1 MiB */
  bool is_user;
  bool is_virtual_disk;
  bool is_required;
};
struct vhdx_metadata_table {
  uint16_t entry_count;             /* every entry, known or not */
  struct vhdx_metadata_item file_parameters;
  struct vhdx_metadata_item virtual_disk_size;
  struct vhdx_metadata_item virtual_disk_id;
  struct vhdx_metadata_item logical_sector_size;
  struct vhdx_metadata_item physical_sector_size;
  struct vhdx_metadata_item parent_locator;
};

/* decode() checks the signature "metadata", the entry count (<= 2047),
 * and every entry: offset >= 64 KiB (or 0 with length 0), length <= 1 MiB,
 * the item inside the region (region_length bytes), no two items
 * overlapping, no (ItemId, IsUser) pair twice, no unknown item marked
 * required.  The known items are matched as system items (IsUser clear).
 * encode() writes the present known items in Hyper-V's order: file
 * parameters, virtual disk size, logical and physical sector size,
 * virtual disk id, parent locator; and sets entry_count.
 */
int vhdx_metadata_table_decode (const uint8_t buf[VHDX_METADATA_TABLE_SIZE],
                                uint32_t region_length, const char *file,
                                struct vhdx_metadata_table *table);
void vhdx_metadata_table_encode (struct vhdx_metadata_table *table,
                                 uint8_t buf[VHDX_METADATA_TABLE_SIZE]);

/* The kind of disk that the file parameters describe. */
enum vhdx_disk_kind {
  VHDX_KIND_FIXED,                  /* LeaveBlockAllocated, no parent */
  VHDX_KIND_DYNAMIC,
  VHDX_KIND_DIFFERENCING,           /* HasParent */
};

/* The known items' values ([MS-VHDX] 2.6.2). */
struct vhdx_metadata {
  uint32_t block_size;              /* power of two, 1 MiB .. 256 MiB */
  bool leave_block_allocated;
  bool has_parent;
  uint64_t virtual_size;            /* bytes, <= 64 TiB, sector multiple */
  struct vhd_guid virtual_disk_id;
  uint32_t logical_sector_size;     /* 512 or 4096 */
  uint32_t physical_sector_size;    /* 512 or 4096 */
};

/* Decode the items that table locates in the metadata region (region:
 * the region's first region_len bytes, which must hold every item).
 * Checks each item's length and value, that every item this version
 * needs is there (the parent locator when HasParent is set), and that
 * the virtual size is a multiple of the logical sector size.  The parent
 * locator itself is decoded by vhdx_parent_locator_decode().
 */
int vhdx_metadata_decode (const uint8_t *region, size_t region_len,
                          const struct vhdx_metadata_table *table,
                          const char *file, struct vhdx_metadata *md);

enum vhdx_disk_kind vhdx_disk_kind (const struct vhdx_metadata *md);
const char *vhdx_disk_kind_name (enum vhdx_disk_kind kind);

/* Parent locator ([MS-VHDX] 2.6.2.6), code in locator.c, in two layers.
 * First the item as stored: a type GUID and key/value pairs, UTF-16LE on
 * disk, UTF-8 here, whatever the type.
 */
struct vhdx_locator_pair {
  char *key;
  char *value;
};
struct vhdx_parent_locator {
  struct vhd_guid type;             /* vhdx_locator_type_vhdx */
  uint16_t count;
  struct vhdx_locator_pair *pairs;  /* count of them, malloc'd */
};

/* decode() reads the item (item_len bytes at item, at most 1 MiB): the
 * key/value count must fit, every key and value must lie inside the
 * item, be non-empty, of even length, without NUL, valid UTF-16; keys
 * must be unique (case-sensitive).  Neither the type nor the reserved
 * field is checked here.  Errors name the file, the entry and the field
 * ("FILE: parent locator: entry 2: value of key \"relative_path\" ...").
 * On success the caller frees with vhdx_parent_locator_free(); on
 * failure nothing is left to free.
 */
int vhdx_parent_locator_decode (const uint8_t *item, size_t item_len,
                                const char *file,
                                struct vhdx_parent_locator *loc);
void vhdx_parent_locator_free (struct vhdx_parent_locator *loc);
/* The value of key, or NULL. */
const char *vhdx_parent_locator_get (const struct vhdx_parent_locator *loc,
                                     const char *key);
/* Write loc into buf (buf_size bytes) and set *len to the bytes used:
 * the header, the entry table, then keys and values in order.  Returns
 * 0, -EINVAL (bad UTF-8, empty key or value) or -ENOSPC, with a message.
 */
int vhdx_parent_locator_encode (const struct vhdx_parent_locator *loc,
                                uint8_t *buf, size_t buf_size,
                                size_t *len);

/* Then what the pairs of the VHDX locator type ([MS-VHDX] 2.6.2.6.3)
 * say: the parent's identity and where to look for it.  GUIDs are in
 * printed order like every struct vhd_guid (the text "{ff34003b-...}" in
 * the file is that order, and vhdx_header's data_write_guid compares
 * with it as it is).  Paths are as stored, in UTF-8, with Windows' "\"
 * separators; NULL when the key is absent.
 */
struct vhdx_parent_link {
  struct vhd_guid parent_linkage;   /* the parent's DataWriteGuid */
  bool has_parent_linkage2;
  struct vhd_guid parent_linkage2;  /* another accepted identity; Hyper-V
                                       writes it, all zero */
  char *relative_path;              /* .\parent.vhdx, ..\p\parent.vhdx */
  char *volume_path;                /* \\?\Volume{GUID}\p\parent.vhdx */
  char *absolute_win32_path;        /* C:\p\parent.vhdx */
};

/* decode() = vhdx_parent_locator_decode(), then: the type must be the
 * VHDX locator type (-ENOTSUP otherwise: another kind of parent, not a
 * damaged file); parent_linkage must be there; parent_linkage and
 * parent_linkage2 must be "{8-4-4-4-12 hex digits}" (either case); at
 * least one of the three paths must be there.  Other keys are checked
 * as pairs and then ignored (the format lets implementations add keys).
 * Returns 0 or -errno with a message naming the file and the key; on
 * success free with vhdx_parent_link_free(), on failure nothing is left
 * to free.
 */
int vhdx_parent_link_decode (const uint8_t *item, size_t item_len,
                             const char *file,
                             struct vhdx_parent_link *link);
/* Frees the paths (and sets them to NULL); the struct is the caller's. */
void vhdx_parent_link_free (struct vhdx_parent_link *link);
/* Write the item as Hyper-V lays it out: the header (reserved field 0),
 * the entries, then each key and its value in UTF-16LE without NULs or
 * padding, in Hyper-V's order: parent_linkage, absolute_win32_path,
 * relative_path, volume_path (those not NULL), parent_linkage2 (when
 * has_parent_linkage2); GUIDs in lower case in braces.  At most
 * min (buf_size, 1 MiB) bytes; *len is set to the bytes used.  Returns 0,
 * -EINVAL (no path, an empty path, a path not valid UTF-8 or longer than
 * 65535 bytes in UTF-16) or -ENOSPC, with a message.
 */
int vhdx_parent_link_encode (const struct vhdx_parent_link *link,
                             uint8_t *buf, size_t buf_size, size_t *len);

/* Lay out a whole metadata region for create, as Hyper-V does: the table,
 * then at 64 KiB the file parameters, virtual disk size, logical and
 * physical sector sizes, virtual disk id and (when md->has_parent) the
 * parent locator loc.  region (region_len bytes, at least 64 KiB plus
 * the items) is zeroed first.  Returns 0, -EINVAL or -ENOSPC.
 */
int vhdx_metadata_encode (const struct vhdx_metadata *md,
                          const struct vhdx_parent_locator *loc,
                          uint8_t *region, size_t region_len);

/* BAT geometry ([MS-VHDX] 2.5). */
struct vhdx_bat_geometry {
  uint64_t chunk_ratio;             /* payload blocks per sector bitmap */
  uint64_t payload_blocks;          /* ceil (size / block size) */
  uint64_t bitmap_blocks;           /* ceil (payload_blocks / chunk_ratio) */
  uint64_t total_entries;           /* entries the BAT must hold */
  uint64_t bat_bytes;               /* total_entries * 8 */
};

/* chunk ratio = 2^23 * logical_sector_size / block_size, which must be
 * a whole number >= 1; payload and bitmap block counts as above; total
 * entries: for fixed and dynamic disks payload + floor ((payload - 1) /
 * chunk ratio) (the last entry is the last payload block's), for
 * differencing disks bitmap_blocks * (chunk ratio + 1) (the last entry is
 * the last chunk's sector bitmap).  Refuses what overflows 64 bits and a
 * BAT region (bat_region_length bytes) too small for total_entries.
 */
int vhdx_bat_geometry (uint64_t virtual_size, uint32_t block_size,
                       uint32_t logical_sector_size, bool has_parent,
                       uint32_t bat_region_length, const char *file,
                       struct vhdx_bat_geometry *geom);

/* BAT index of payload block `block` and of chunk `chunk`'s sector bitmap
 * entry (each chunk's chunk_ratio payload entries then its bitmap entry).
 */
static inline uint64_t
vhdx_bat_payload_index (const struct vhdx_bat_geometry *g, uint64_t block)
{
  return block + block / g->chunk_ratio;
}
static inline uint64_t
vhdx_bat_bitmap_index (const struct vhdx_bat_geometry *g, uint64_t chunk)
{
  return chunk * (g->chunk_ratio + 1) + g->chunk_ratio;
}
static inline bool
vhdx_bat_is_bitmap_index (const struct vhdx_bat_geometry *g, uint64_t index)
{
  return index % (g->chunk_ratio + 1) == g->chunk_ratio;
}

/* BAT entry states ([MS-VHDX] 2.5.1.1, 2.5.1.2; 4, 5 reserved). */
#define VHDX_PAYLOAD_NOT_PRESENT        0u
#define VHDX_PAYLOAD_UNDEFINED          1u
#define VHDX_PAYLOAD_ZERO               2u
#define VHDX_PAYLOAD_UNMAPPED           3u
#define VHDX_PAYLOAD_FULLY_PRESENT      6u
#define VHDX_PAYLOAD_PARTIALLY_PRESENT  7u
#define VHDX_SB_NOT_PRESENT             0u
#define VHDX_SB_PRESENT                 6u

#define VHDX_BAT_ENTRY_SIZE             8u
#define VHDX_BAT_MAX_OFFSET_MB          ((UINT64_C (1) << 44) - 1)

/* State (bits 0-2), reserved (bits 3-19), FileOffsetMB (bits 20-63). */
struct vhdx_bat_entry {
  uint8_t state;
  uint32_t reserved;                /* 17 bits, kept as read */
  uint64_t offset_mb;               /* 44 bits: file offset / 1 MiB */
};
void vhdx_bat_entry_decode (const uint8_t p[VHDX_BAT_ENTRY_SIZE],
                            struct vhdx_bat_entry *entry);
/* Writes the fields masked to their widths. */
void vhdx_bat_entry_encode (const struct vhdx_bat_entry *entry,
                            uint8_t p[VHDX_BAT_ENTRY_SIZE]);

/* Validate entry `index` of the BAT: its state must exist for its kind
 * of entry (payload or sector bitmap, from the index) and for the kind of
 * disk; an entry that locates a block (FULLY/PARTIALLY_PRESENT, SB
 * PRESENT) must put it at or above 1 MiB and wholly inside the file
 * (file_size bytes; payload blocks are block_size bytes, bitmaps 1 MiB).
 */
int vhdx_bat_entry_check (const struct vhdx_bat_entry *entry, uint64_t index,
                          const struct vhdx_bat_geometry *geom,
                          enum vhdx_disk_kind kind, uint32_t block_size,
                          uint64_t file_size, const char *file);

/* The whole layout: the log (when not empty), the BAT region and the
 * metadata region must lie past the 1 MiB header area, inside the file
 * (file_size bytes) and overlap nothing else; the BAT region must hold the
 * geometry's entries (computed into *geom).
 */
int vhdx_layout_check (const struct vhdx_header *header,
                       const struct vhdx_regions *regions,
                       const struct vhdx_metadata *md,
                       uint64_t file_size, const char *file,
                       struct vhdx_bat_geometry *geom);

#endif /* VHDKIT_VHDX_FORMAT_H */
