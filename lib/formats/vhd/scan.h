/* vhdkit: the one walk over a VHD image's structures that open and check
 * share (internal; see scan.c).
 *
 * The scanner reads the footers, the dynamic header, the BAT and the
 * parent locators' extents, checks every number against the file and the
 * other structures, and hands each problem to a callback.  Open stops at
 * the first problem that it refuses (the callback returns the error);
 * check lets it go on and reports them all.
 */

#ifndef VHDKIT_VHD_SCAN_H
#define VHDKIT_VHD_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "formats/vhd/format.h"

/* What a problem is about: check caps the kinds that can repeat once per
 * BAT entry, and words two of them in its own terms.
 */
enum vhd_scan_problem {
  VHD_SCAN_FOOTER,              /* the footers: none usable, or one lost */
  VHD_SCAN_FOOTER_COPY,         /* the copy at offset 0 against the other */
  VHD_SCAN_LAYOUT,              /* header, structures, fixed data size */
  VHD_SCAN_METADATA_CAP,        /* the BAT would take more memory than
                                 * the cap allows */
  VHD_SCAN_BAT_READ,            /* the BAT could not be read */
  VHD_SCAN_BAT_ENTRY,           /* an entry whose block lies wrong */
  VHD_SCAN_BLOCK_PAST_SIZE,     /* a block past the copy's current_size */
  VHD_SCAN_BLOCK_OVERLAP,       /* two entries whose blocks overlap */
};

struct vhd_scan_report {
  enum vhd_scan_problem problem;
  int kind;                     /* VHD_CHECK_CORRUPT or _RECOVERABLE */
  /* What open returns for it (-EINVAL, -EFBIG, an I/O error...), its
   * message set with vhd_error; 0 when open goes on regardless (a lost
   * trailing footer, a footer copy that open does not need).
   */
  int err;
  const char *msg;              /* as open reports it ("FILE: field ...");
                                 * for err == 0, as check does */
  /* Block problems: the BAT entries and where their blocks start. */
  uint32_t entry[2];
  uint64_t start[2];
};

/* Return 0 to go on, or a negative errno to stop the scan with it. */
typedef int (*vhd_scan_report_fn) (void *opaque,
                                   const struct vhd_scan_report *rep);

struct vhd_scan {
  /* In. */
  const char *path;
  struct vhd_backend *be;
  uint64_t file_size;
  uint64_t max_metadata_bytes;  /* 0: no cap */
  vhd_scan_report_fn report;
  void *opaque;

  /* Out: what the walk got to, as far as it got. */
  bool footer_ok;               /* footer (one of the two) is usable */
  struct vhd_footer footer;
  uint8_t footer_raw[VHD_FOOTER_SIZE]; /* its bytes, as the writer left them */
  uint64_t footer_offset;       /* where the trailing footer is (or goes) */
  bool footer_from_copy;        /* trailing footer missing or bad */

  bool header_ok;               /* dynamic header decoded, layout valid */
  struct vhd_dyn_header header;
  uint64_t header_offset;
  uint32_t bitmap_size;

  bool bat_ok;                  /* the BAT was read (its entries checked) */
  uint32_t *bat;                /* max_table_entries entries, host order;
                                 * the caller's to free */
  uint32_t allocated_blocks;
  /* Where the last structure or block ends: what lies between it and the
   * trailing footer belongs to nothing.
   */
  uint64_t metadata_end;
};

/* Walk the image.  Returns 0 when the walk ended (every problem was
 * reported and the callback let it go on), or the callback's error.
 */
int vhd_scan_image (struct vhd_scan *s);

/* The layout rules, also used where the writes happen (io.c).
 *
 * Where the footer copy, the dynamic header, the BAT and the parent
 * locators' data (what of it lies inside file_size) end: no block may be
 * placed before it.
 */
uint64_t vhd_metadata_end (const struct vhd_dyn_header *h,
                           uint64_t header_offset, uint64_t file_size);
/* The bytes a parent locator's data may occupy from platform_data_offset:
 * the larger of its length and the space reserved for it (in sectors or
 * bytes: see scan.c); 0 for an unused locator.
 */
uint64_t vhd_locator_extent (const struct vhd_parent_locator *loc);

#endif /* VHDKIT_VHD_SCAN_H */
