/* vhdkit: the one walk over a VHD image that open and check share:
 * choose the valid footer copy, load and check the dynamic header, the
 * parent locators' extents and the BAT.
 *
 * Every number read from the file is checked here against the file's size
 * and the other structures before anything uses it: an image is untrusted
 * input.  Each problem goes to the caller's callback (scan.h): open stops
 * at the first one it refuses, check reports them all.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "formats/vhd/format.h"
#include "formats/vhd/scan.h"

/* Hand a problem that open refuses to the callback: err is what the
 * check that found it returned, its message set with vhd_error.  Returns
 * what the callback returns.
 */
static int
refuse (struct vhd_scan *s, enum vhd_scan_problem problem, int err,
        const struct vhd_scan_report *blocks)
{
  char msg[2048];
  struct vhd_scan_report rep = blocks ? *blocks
                                      : (struct vhd_scan_report) { 0 };

  /* A copy: the callback may set another message of its own. */
  snprintf (msg, sizeof msg, "%s", vhd_last_error ());
  rep.problem = problem;
  rep.kind = VHD_CHECK_CORRUPT;
  rep.err = err;
  rep.msg = msg;
  return s->report (s->opaque, &rep);
}

/* Hand a problem that open goes on regardless of to the callback, in
 * check's words (no message is set: the open succeeds).
 */
static int tolerate (struct vhd_scan *s, enum vhd_scan_problem problem,
                     int kind, const char *fmt, ...)
  __attribute__ ((format (printf, 4, 5)));

static int
tolerate (struct vhd_scan *s, enum vhd_scan_problem problem, int kind,
          const char *fmt, ...)
{
  char msg[2048];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  return s->report (s->opaque, &(struct vhd_scan_report) {
                      .problem = problem, .kind = kind, .msg = msg });
}

/* Try a footer of len bytes (512, or 511 with a zero reserved byte
 * after it) at offset at.  Returns 0 when it decodes, -EINVAL with why[]
 * set when it has the cookie but not a valid footer, or 1 when there is
 * no cookie there at all (try elsewhere).
 */
static int
try_trailing_footer_at (struct vhd_scan *s, uint64_t at, size_t len,
                        char *why, size_t why_size)
{
  uint8_t buf[VHD_FOOTER_SIZE] = { 0 };
  int r = vhd_backend_pread_exact (s->be, buf, len, at, "footer");

  if (r < 0) {
    snprintf (why, why_size, "%s", vhd_last_error ());
    return r;
  }
  if (memcmp (buf, "conectix", 8) != 0)
    return 1;
  r = vhd_footer_decode (buf, &s->footer, s->path, at);
  if (r < 0) {
    snprintf (why, why_size, "%s", vhd_last_error ());
    return r;
  }
  s->footer_offset = at;
  memcpy (s->footer_raw, buf, sizeof buf);
  return 0;
}

/* Try the trailing footer: the last 512 bytes, or (as some old writers
 * left it) the last 511 bytes, the missing byte being a reserved zero.
 * On failure the message is kept in why[] for the combined error.
 */
static int
read_trailing_footer (struct vhd_scan *s, char *why, size_t why_size)
{
  int r = 1;

  if (s->file_size < VHD_FOOTER_SIZE - 1) {
    snprintf (why, why_size, "the file is only %" PRIu64 " bytes",
              s->file_size);
    return -EINVAL;
  }
  if (s->file_size >= VHD_FOOTER_SIZE)
    r = try_trailing_footer_at (s, s->file_size - VHD_FOOTER_SIZE,
                                VHD_FOOTER_SIZE, why, why_size);
  /* The 511-byte variant that some old writers left. */
  if (r == 1)
    r = try_trailing_footer_at (s, s->file_size - (VHD_FOOTER_SIZE - 1),
                                VHD_FOOTER_SIZE - 1, why, why_size);
  if (r == 1) {
    snprintf (why, why_size, "no \"conectix\" cookie in the last 512 bytes");
    return -EINVAL;
  }
  return r;
}

static const char *
type_word (uint32_t t)
{
  return t == VHD_TYPE_FIXED ? "fixed" : t == VHD_TYPE_DYNAMIC ? "dynamic"
         : t == VHD_TYPE_DIFFERENCING ? "differencing" : "unknown";
}

static int
validate_footer_copy (const char *path, const struct vhd_footer *trailing,
                          uint64_t trailing_at, const struct vhd_footer *copy)
{
  char a[37], b[37];

  if (trailing->current_size != copy->current_size)
    return vhd_error (EINVAL, "%s: footer copy at offset 0: current_size %"
                      PRIu64 " disagrees with the trailing footer's %"
                      PRIu64 " (at offset %" PRIu64 "): the disk's size is"
                      " in doubt", path, copy->current_size,
                      trailing->current_size, trailing_at);
  if (trailing->disk_type != copy->disk_type)
    return vhd_error (EINVAL, "%s: footer copy at offset 0: disk_type %"
                      PRIu32 " (%s) disagrees with the trailing footer's %"
                      PRIu32 " (%s, at offset %" PRIu64 ")", path,
                      copy->disk_type, type_word (copy->disk_type),
                      trailing->disk_type, type_word (trailing->disk_type),
                      trailing_at);
  if (memcmp (&trailing->unique_id, &copy->unique_id,
              sizeof copy->unique_id) != 0) {
    vhd_guid_to_string (&copy->unique_id, a);
    vhd_guid_to_string (&trailing->unique_id, b);
    return vhd_error (EINVAL, "%s: footer copy at offset 0: unique_id %s"
                      " disagrees with the trailing footer's %s (at offset %"
                      PRIu64 ")", path, a, b, trailing_at);
  }
  return 0;
}

/* A dynamic or differencing disk's two footers must describe the same
 * disk: served as they are, writes would keep them disagreeing, and the
 * day the trailing footer is lost the copy would silently change the
 * disk's size or identity.  Which one is right cannot be known, so such
 * an image is refused (vhdtool check reports it).  A copy that does not
 * decode at all is no rival: open uses the trailing footer, as before,
 * and check reports the copy as damaged.
 */
static int
compare_footer_copy (struct vhd_scan *s)
{
  uint8_t buf[VHD_FOOTER_SIZE];
  struct vhd_footer copy;
  int r;

  if (s->footer.disk_type == VHD_TYPE_FIXED)
    return 0;
  if (s->footer_offset < VHD_FOOTER_SIZE ||
      vhd_backend_pread_exact (s->be, buf, sizeof buf, 0,
                               "footer copy") < 0 ||
      memcmp (buf, "conectix", 8) != 0 ||
      vhd_footer_decode (buf, &copy, s->path, 0) < 0) {
    vhd_clear_error ();
    return tolerate (s, VHD_SCAN_FOOTER_COPY, VHD_CHECK_CORRUPT,
                     "footer copy at offset 0: missing or invalid");
  }
  r = validate_footer_copy (s->path, &s->footer, s->footer_offset, &copy);
  if (r < 0)
    return refuse (s, VHD_SCAN_FOOTER_COPY, r, NULL);
  /* Same disk, other bytes (a reserved byte, a timestamp): open serves
   * it; check says so.
   */
  if (memcmp (buf, s->footer_raw, VHD_FOOTER_SIZE) != 0)
    return tolerate (s, VHD_SCAN_FOOTER_COPY, VHD_CHECK_CORRUPT,
                     "footer copy at offset 0 differs from the trailing"
                     " footer at offset %" PRIu64, s->footer_offset);
  return 0;
}

/* Choose the footer: the trailing one when it is valid, else (dynamic and
 * differencing disks only) the copy at offset 0.  Sets footer_ok when one
 * of them is usable.
 */
static int
choose_footer (struct vhd_scan *s)
{
  char trailing_why[1024], copy_why[1024];
  uint8_t buf[VHD_FOOTER_SIZE] = { 0 };
  struct vhd_footer copy;
  int r;

  if (read_trailing_footer (s, trailing_why, sizeof trailing_why) == 0) {
    s->footer_ok = true;
    return compare_footer_copy (s);
  }

  if (s->file_size < VHD_FOOTER_SIZE)
    return refuse (s, VHD_SCAN_FOOTER,
                   vhd_error (EINVAL, "%s: not a VHD image: %s", s->path,
                              trailing_why), NULL);

  r = vhd_backend_pread_exact (s->be, buf, sizeof buf, 0, "footer copy");
  if (r == 0)
    r = vhd_footer_decode (buf, &copy, s->path, 0);
  if (r == 0 && copy.disk_type == VHD_TYPE_FIXED) {
    snprintf (copy_why, sizeof copy_why,
              "the copy at offset 0 says fixed, and fixed disks have none");
    r = -EINVAL;
  }
  else if (r < 0)
    snprintf (copy_why, sizeof copy_why, "%s", vhd_last_error ());

  if (r < 0) {
    if (memcmp (buf, "conectix", 8) != 0 &&
        strstr (trailing_why, "cookie") != NULL)
      r = vhd_error (EINVAL, "%s: not a VHD image (no \"conectix\" "
                     "footer at the end or at offset 0)", s->path);
    else
      r = vhd_error (EINVAL, "%s: no valid footer: trailing footer: %s; "
                     "footer copy: %s", s->path, trailing_why, copy_why);
    return refuse (s, VHD_SCAN_FOOTER, r, NULL);
  }

  s->footer = copy;
  memcpy (s->footer_raw, buf, sizeof buf);
  s->footer_from_copy = true;
  s->footer_ok = true;
  /* Where the trailing footer belongs is settled once the BAT is known
   * (the end of the last block or of the metadata): see scan_bat.
   */
  s->footer_offset = s->file_size & ~(uint64_t) (VHD_SECTOR_SIZE - 1);
  /* What a crash while a block was appended leaves: nothing is lost,
   * and the next read-write open (or --repair) puts the footer back.
   */
  return tolerate (s, VHD_SCAN_FOOTER, VHD_CHECK_RECOVERABLE,
                   "trailing footer: %s; the copy at offset 0 is valid,"
                   " and a read-write open or --repair restores it",
                   trailing_why);
}

static int
check_fixed_layout (struct vhd_scan *s)
{
  if (s->footer_offset < s->footer.current_size)
    return refuse (s, VHD_SCAN_LAYOUT,
                   vhd_error (EINVAL, "%s: footer: current_size %" PRIu64
                              " is larger than the %" PRIu64
                              " bytes of data the fixed image holds",
                              s->path, s->footer.current_size,
                              s->footer_offset), NULL);
  return 0;
}

/* a + b, or UINT64_MAX if that does not fit: an end computed from
 * untrusted fields never wraps round to a small number.
 */
static uint64_t
add_saturating (uint64_t a, uint64_t b)
{
  return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Do [a, a+alen) and [b, b+blen) overlap? */
static bool
ranges_overlap (uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
  return alen > 0 && blen > 0 &&
         a < add_saturating (b, blen) && b < add_saturating (a, alen);
}

uint64_t
vhd_locator_extent (const struct vhd_parent_locator *loc)
{
  uint64_t space = loc->platform_data_space;

  if (loc->platform_code == VHD_PLATFORM_NONE)
    return 0;
  /* The specification counts the space in sectors, Windows in bytes.  A
   * space smaller than the data it holds can only be counted in sectors;
   * otherwise it is taken as bytes, the smaller reading, so that no real
   * image is refused for a reservation that only a misreading makes
   * large.
   */
  if (space < loc->platform_data_length)
    space *= VHD_SECTOR_SIZE;
  return space > loc->platform_data_length ? space
                                           : loc->platform_data_length;
}

/* One metadata structure: where it lies and what it is (a fixed name,
 * or for a locator's data NULL and the locator's index).
 */
struct structure {
  const char *name;
  unsigned locator;
  uint64_t start, length;
};

/* Its name for a message (buf holds it for a locator). */
static const char *
structure_name (const struct structure *s, char buf[40])
{
  if (s->name)
    return s->name;
  snprintf (buf, 40, "parent locator %u's data", s->locator);
  return buf;
}

/* The structures that vhdkit or another writer rewrites in place: the
 * footer copy, the dynamic header, the BAT with the padding of its last
 * sector (the BAT is written back a whole sector at a time) and the data
 * of every parent locator in use.  Returns how many it stored in s[].
 */
static size_t
list_structures (uint64_t header_offset, const struct vhd_dyn_header *h,
                 struct structure s[3 + VHD_LOCATOR_COUNT])
{
  size_t n = 0;

  s[n++] = (struct structure) { "the footer copy", 0, 0, VHD_FOOTER_SIZE };
  s[n++] = (struct structure) { "the dynamic header", 0, header_offset,
                                VHD_DYN_HEADER_SIZE };
  s[n++] = (struct structure) { "the BAT", 0, h->table_offset,
                                vhd_bat_size (h->max_table_entries) };
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++) {
    const struct vhd_parent_locator *loc = &h->locators[i];
    if (loc->platform_code == VHD_PLATFORM_NONE)
      continue;
    s[n++] = (struct structure) { NULL, i, loc->platform_data_offset,
                                  vhd_locator_extent (loc) };
  }
  return n;
}

/* No two structures share a byte, and each ends before data_end, the
 * trailing footer, where the next block goes: a write to one structure
 * (or a block appended there) would otherwise destroy another.  Locators
 * may share data with each other: vhdkit never rewrites them.
 */
static int
validate_structures_disjoint (const char *path, uint64_t header_offset,
                              const struct vhd_dyn_header *h,
                              uint64_t data_end)
{
  struct structure s[3 + VHD_LOCATOR_COUNT];
  size_t n = list_structures (header_offset, h, s);
  char name[40];

  for (size_t i = 0; i < n; i++) {
    if (add_saturating (s[i].start, s[i].length) > data_end)
      return vhd_error (EINVAL, "%s: %s (offset %" PRIu64 ", %" PRIu64
                        " bytes) runs past offset %" PRIu64 ", the"
                        " trailing footer, where the next block goes",
                        path, structure_name (&s[i], name), s[i].start,
                        s[i].length, data_end);
    for (size_t k = 0; k < i && k < 3; k++)
      if (ranges_overlap (s[i].start, s[i].length, s[k].start, s[k].length))
        return vhd_error (EINVAL, "%s: %s (offset %" PRIu64 ", %" PRIu64
                          " bytes) overlaps %s (offset %" PRIu64 ", %"
                          PRIu64 " bytes)", path,
                          structure_name (&s[i], name), s[i].start,
                          s[i].length, s[k].name, s[k].start, s[k].length);
  }
  return 0;
}

/* The rules that relate the dynamic header to the footer and the file:
 * shared by open and check, so that both judge an image the same way.
 * data_end is where the trailing footer is (the file's size if it is
 * lost): every structure must end before it.
 */
static int
validate_dyn_layout (const char *path, uint64_t file_size,
                         uint64_t data_end, const struct vhd_footer *f,
                         uint64_t header_offset,
                         const struct vhd_dyn_header *h)
{
  uint64_t needed = (f->current_size + h->block_size - 1) / h->block_size;
  uint64_t limit = (VHD_MAX_DISK_SIZE + h->block_size - 1) / h->block_size;
  uint64_t bat_bytes = vhd_bat_size (h->max_table_entries);

  if (h->max_table_entries < needed)
    return vhd_error (EINVAL, "%s: dynamic header: max_table_entries %" PRIu32
                      " is too small for current_size %" PRIu64
                      " with block_size %" PRIu32 " (needs %" PRIu64 ")",
                      path, h->max_table_entries, f->current_size,
                      h->block_size, needed);
  if (h->max_table_entries > limit)
    return vhd_error (EINVAL, "%s: dynamic header: max_table_entries %" PRIu32
                      " describes more than the 2040 GiB a VHD can hold"
                      " with block_size %" PRIu32, path,
                      h->max_table_entries, h->block_size);
  if (h->table_offset > file_size || file_size - h->table_offset < bat_bytes)
    return vhd_error (EINVAL, "%s: dynamic header: table_offset %" PRIu64
                      " with %" PRIu32 " entries puts the BAT past the end"
                      " of the file (%" PRIu64 " bytes)", path,
                      h->table_offset, h->max_table_entries, file_size);
  if (ranges_overlap (h->table_offset, bat_bytes, 0, VHD_FOOTER_SIZE) ||
      ranges_overlap (h->table_offset, bat_bytes, header_offset,
                      VHD_DYN_HEADER_SIZE))
    return vhd_error (EINVAL, "%s: dynamic header: table_offset %" PRIu64
                      " overlaps the footer copy or the dynamic header",
                      path, h->table_offset);
  return validate_structures_disjoint (path, header_offset, h, data_end);
}

/* Where BAT entry i's block (bitmap and data) may lie: inside the image
 * data, clear of the footer copy, the header, the BAT and the parent
 * locators' data (a write there would rewrite where the parent is).
 */
static int
validate_block (const char *path, const struct vhd_dyn_header *h,
                    uint64_t header_offset, uint64_t data_end, uint32_t i,
                    uint32_t sector)
{
  uint64_t start = (uint64_t) sector * VHD_SECTOR_SIZE;
  uint64_t block_bytes = vhd_bitmap_size (h->block_size) + h->block_size;
  struct structure s[3 + VHD_LOCATOR_COUNT];
  char name[40];
  size_t n;

  if (start > data_end || data_end - start < block_bytes)
    return vhd_error (EINVAL, "%s: BAT: entry %" PRIu32 " (sector %" PRIu32
                      ") puts its block past the end of the image data"
                      " at %" PRIu64, path, i, sector, data_end);
  n = list_structures (header_offset, h, s);
  for (size_t k = 0; k < n; k++)
    if (ranges_overlap (start, block_bytes, s[k].start, s[k].length))
      return vhd_error (EINVAL, "%s: BAT: entry %" PRIu32 " (sector %"
                        PRIu32 ") overlaps %s at offset %" PRIu64, path, i,
                        sector, structure_name (&s[k], name), s[k].start);
  return 0;
}

uint64_t
vhd_metadata_end (const struct vhd_dyn_header *h, uint64_t header_offset,
                  uint64_t file_size)
{
  struct structure s[3 + VHD_LOCATOR_COUNT];
  size_t n = list_structures (header_offset, h, s);
  uint64_t end = 0;

  /* Locator data may lie anywhere (Windows puts it after the BAT); what
   * lies past the file is not counted (open refuses such an image, check
   * reports it).
   */
  for (size_t k = 0; k < n; k++) {
    uint64_t e = add_saturating (s[k].start, s[k].length);
    if (e <= file_size && e > end)
      end = e;
  }
  return end;
}

/* The trailing footer is lost and the copy at offset 0 is all that says
 * how large the disk is.  If the BAT holds a block past that size, the
 * lost footer said more (the two disagreed): serving the copy would
 * silently shrink the disk and restoring the trailing footer from it
 * would make that permanent.  The BAT's tail is read in small chunks.
 */
static int
check_copy_covers_bat (struct vhd_scan *s)
{
  const struct vhd_dyn_header *h = &s->header;
  uint64_t needed = (s->footer.current_size + h->block_size - 1)
                    / h->block_size;
  uint8_t buf[4096];

  for (uint64_t i = needed; i < h->max_table_entries; ) {
    uint64_t n = h->max_table_entries - i;
    int r;

    if (n > sizeof buf / 4)
      n = sizeof buf / 4;
    r = vhd_backend_pread_exact (s->be, buf, n * 4,
                                 h->table_offset + 4 * i, "BAT");
    if (r < 0)
      return refuse (s, VHD_SCAN_BAT_READ, r, NULL);
    for (uint64_t k = 0; k < n; k++) {
      uint32_t sector = vhd_get_be32 (buf + 4 * k);
      if (sector == VHD_BAT_UNUSED)
        continue;
      r = vhd_error (EINVAL, "%s: BAT: entry %" PRIu64 " holds a block"
                     " past current_size %" PRIu64 " of the footer"
                     " copy at offset 0, and the trailing footer is"
                     " lost: the disk's size is in doubt, and using"
                     " the copy would drop that block", s->path,
                     i + k, s->footer.current_size);
      r = refuse (s, VHD_SCAN_BLOCK_PAST_SIZE, r,
                  &(struct vhd_scan_report) {
                    .entry = { (uint32_t) (i + k) },
                    .start = { (uint64_t) sector * VHD_SECTOR_SIZE } });
      if (r < 0)
        return r;
    }
    i += n;
  }
  return 0;
}

/* Sets header_ok when the header decodes and the layout is valid. */
static int
scan_dynamic_header (struct vhd_scan *s)
{
  uint8_t buf[VHD_DYN_HEADER_SIZE];
  uint64_t at = s->footer.data_offset;
  struct vhd_dyn_header *h = &s->header;
  int r;

  if (at > s->file_size || s->file_size - at < VHD_DYN_HEADER_SIZE)
    return refuse (s, VHD_SCAN_LAYOUT,
                   vhd_error (EINVAL, "%s: footer: data_offset %" PRIu64
                              " puts the dynamic header past the end of"
                              " the file (%" PRIu64 " bytes)", s->path, at,
                              s->file_size), NULL);
  if (at < VHD_FOOTER_SIZE)
    return refuse (s, VHD_SCAN_LAYOUT,
                   vhd_error (EINVAL, "%s: footer: data_offset %" PRIu64
                              " overlaps the footer copy at offset 0",
                              s->path, at), NULL);
  r = vhd_backend_pread_exact (s->be, buf, sizeof buf, at,
                               "dynamic header");
  if (r == 0)
    r = vhd_dyn_header_decode (buf, h, s->path, at);
  if (r < 0)
    return refuse (s, VHD_SCAN_LAYOUT, r, NULL);
  s->header_offset = at;
  s->metadata_end = at + VHD_DYN_HEADER_SIZE;

  /* Every structure must end before the trailing footer, where the
   * next block goes (or before the end of the file when that footer is
   * lost: it goes back past the last structure).
   */
  r = validate_dyn_layout (s->path, s->file_size,
                               s->footer_from_copy ? s->file_size
                                                      : s->footer_offset,
                               &s->footer, at, h);
  if (r < 0)
    return refuse (s, VHD_SCAN_LAYOUT, r, NULL);
  s->metadata_end = vhd_metadata_end (h, at, s->file_size);
  s->bitmap_size = vhd_bitmap_size (h->block_size);
  s->header_ok = true;
  if (s->footer_from_copy)
    return check_copy_covers_bat (s);
  return 0;
}

/* The BAT is read this many bytes at a time, so that a bad entry stops
 * the open after a read of its own chunk, not of the whole table.
 */
#define BAT_CHUNK_BYTES (64 * 1024)

/* What scan_bat and vhd_io_init allocate for a BAT of n entries: the BAT
 * (4 bytes an entry), the block states (1), the sort keys of the overlap
 * check while opening (8, if every entry is allocated), the BAT-sector
 * dirty tracking (5 bytes per 128 entries) and one chunk of raw BAT.
 */
uint64_t
vhd_metadata_bytes (uint32_t max_table_entries)
{
  uint64_t n = max_table_entries;
  uint64_t sectors = vhd_bat_size (max_table_entries) / VHD_SECTOR_SIZE;

  return n * (4 + 1 + 8) + sectors * (1 + 4) + BAT_CHUNK_BYTES;
}

static int
check_metadata_cap (struct vhd_scan *s)
{
  uint64_t need = vhd_metadata_bytes (s->header.max_table_entries);
  uint64_t cap = s->max_metadata_bytes;

  if (cap != 0 && need > cap)
    return vhd_error (EFBIG, "%s: dynamic header: max_table_entries %"
                      PRIu32 " (block_size %" PRIu32 ") would take %"
                      PRIu64 " bytes of memory, more than the cap of %"
                      PRIu64 " bytes; to open it anyway, raise the cap"
                      " (vhd_open_options.max_metadata_bytes, the"
                      " plugin's max-metadata=SIZE)", s->path,
                      s->header.max_table_entries,
                      s->header.block_size, need, cap);
  return 0;
}

/* An allocated block as a sort key: where it starts (in sectors) above,
 * its BAT index below.
 */
static int
compare_u64 (const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
  return x < y ? -1 : x > y;
}

/* No two blocks may share a byte: a write to one would corrupt the other.
 * Each pair of neighbours (by where they start) that overlaps is a
 * problem.
 */
static int
check_blocks_disjoint (struct vhd_scan *s, uint64_t *keys, size_t n,
                       uint64_t block_bytes)
{
  if (n < 2)
    return 0;                   /* keys is NULL when no block is allocated */
  qsort (keys, n, sizeof *keys, compare_u64);
  for (size_t i = 1; i < n; i++) {
    uint64_t a = (keys[i - 1] >> 32) * VHD_SECTOR_SIZE;
    uint64_t b = (keys[i] >> 32) * VHD_SECTOR_SIZE;
    int r;

    if (a + block_bytes <= b)
      continue;
    r = vhd_error (EINVAL, "%s: BAT: entries %" PRIu32 " and %" PRIu32
                   " overlap (blocks at offsets %" PRIu64 " and %"
                   PRIu64 ", %" PRIu64 " bytes each)", s->path,
                   (uint32_t) keys[i - 1], (uint32_t) keys[i], a, b,
                   block_bytes);
    r = refuse (s, VHD_SCAN_BLOCK_OVERLAP, r, &(struct vhd_scan_report) {
                  .entry = { (uint32_t) keys[i - 1], (uint32_t) keys[i] },
                  .start = { a, b } });
    if (r < 0)
      return r;
  }
  return 0;
}

/* Append a sort key, growing the array as blocks turn up (most images
 * have far fewer blocks allocated than entries).
 */
static int
push_key (struct vhd_scan *s, uint64_t **keys, size_t *n, size_t *cap,
          uint64_t key)
{
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 1024;
    uint64_t *k = realloc (*keys, c * sizeof *k);
    if (k == NULL)
      return vhd_error (ENOMEM, "%s: BAT: out of memory for %zu blocks",
                        s->path, c);
    *keys = k;
    *cap = c;
  }
  (*keys)[(*n)++] = key;
  return 0;
}

/* Make room in s->bat for entries [0, want) as the BAT is read:
 * a table refused at its first chunk has cost one chunk's worth, even
 * where malloc fills what it hands out (MALLOC_PERTURB_).
 */
static int
grow_bat (struct vhd_scan *s, uint32_t *cap, uint64_t want)
{
  uint64_t max = s->header.max_table_entries;
  uint64_t c = *cap;
  uint32_t *bat;

  if (want > max)
    want = max;
  if (want <= c)
    return 0;
  c = c * 2 > want ? c * 2 : want;
  if (c > max)
    c = max;
  bat = realloc (s->bat, (size_t) c * sizeof *bat);
  if (bat == NULL)
    return vhd_error (ENOMEM, "%s: BAT of %" PRIu32 " entries: out of memory",
                      s->path, s->header.max_table_entries);
  s->bat = bat;
  *cap = (uint32_t) c;
  return 0;
}

/* Read the BAT and check every allocated entry: its block (bitmap and
 * data) lies inside the file, before the trailing footer, clear of the
 * metadata and of every other block.  The table is read a chunk at a time
 * and checked as it is read, so that a bad entry stops the open at once;
 * what it would cost in memory is checked against the cap first.  An
 * entry found bad is left out of the overlap check and of metadata_end.
 */
static int
scan_bat (struct vhd_scan *s)
{
  const struct vhd_dyn_header *h = &s->header;
  uint64_t bat_bytes = vhd_bat_size (h->max_table_entries);
  uint64_t block_bytes = (uint64_t) s->bitmap_size + h->block_size;
  uint64_t data_end = s->footer_from_copy ? s->file_size
                                             : s->footer_offset;
  uint64_t metadata_end;
  uint64_t *keys = NULL;
  uint8_t *raw;
  size_t n = 0, cap = 0;
  uint32_t i = 0, bat_cap = 0;
  int r;

  r = check_metadata_cap (s);
  if (r < 0)
    return refuse (s, VHD_SCAN_METADATA_CAP, r, NULL);
  raw = malloc (BAT_CHUNK_BYTES);
  if (raw == NULL)
    return refuse (s, VHD_SCAN_BAT_READ,
                   vhd_error (ENOMEM, "%s: out of memory", s->path), NULL);

  metadata_end = vhd_metadata_end (h, s->header_offset, s->file_size);

  for (uint64_t at = 0; at < bat_bytes && i < h->max_table_entries && r == 0;
       at += BAT_CHUNK_BYTES) {
    size_t len = bat_bytes - at < BAT_CHUNK_BYTES ? (size_t) (bat_bytes - at)
                                                  : BAT_CHUNK_BYTES;
    r = vhd_backend_pread_exact (s->be, raw, len, h->table_offset + at,
                                 "BAT");
    if (r == 0)
      r = grow_bat (s, &bat_cap, i + len / 4);
    if (r < 0) {
      /* Nothing more of the BAT can be checked. */
      r = refuse (s, VHD_SCAN_BAT_READ, r, NULL);
      goto out;
    }
    for (size_t k = 0; r == 0 && k < len / 4 && i < h->max_table_entries;
         k++, i++) {
      uint32_t sector = vhd_get_be32 (raw + k * 4);
      uint64_t start = (uint64_t) sector * VHD_SECTOR_SIZE;

      s->bat[i] = sector;
      if (sector == VHD_BAT_UNUSED)
        continue;
      r = validate_block (s->path, h, s->header_offset, data_end,
                              i, sector);
      if (r < 0) {
        r = refuse (s, VHD_SCAN_BAT_ENTRY, r, &(struct vhd_scan_report) {
                      .entry = { i }, .start = { start } });
        continue;
      }
      r = push_key (s, &keys, &n, &cap, (uint64_t) sector << 32 | i);
      if (r < 0) {
        r = refuse (s, VHD_SCAN_BAT_READ, r, NULL);
        goto out;
      }
      if (start + block_bytes > metadata_end)
        metadata_end = start + block_bytes;
    }
  }
  if (r < 0)
    goto out;
  s->allocated_blocks = (uint32_t) n;
  s->metadata_end = metadata_end;
  s->bat_ok = true;
  r = check_blocks_disjoint (s, keys, n, block_bytes);
  if (r == 0 && s->footer_from_copy) {
    /* The trailing footer is lost (a crash while a block was appended).
     * It goes back at the end of the file, past whatever was half
     * written there: those bytes belong to no block (a leak that
     * vhdtool check --repair reclaims), and structures that this reader
     * does not know about (a blktap batmap) stay untouched.
     */
    uint64_t end = s->file_size > metadata_end ? s->file_size
                                                  : metadata_end;
    s->footer_offset = (end + VHD_SECTOR_SIZE - 1)
                          & ~(uint64_t) (VHD_SECTOR_SIZE - 1);
  }
 out:
  free (raw);
  free (keys);
  return r;
}


int
vhd_scan_image (struct vhd_scan *s)
{
  int r = choose_footer (s);

  if (r < 0 || !s->footer_ok)
    return r;
  if (s->footer.disk_type == VHD_TYPE_FIXED)
    return check_fixed_layout (s);
  r = scan_dynamic_header (s);
  if (r < 0 || !s->header_ok)
    return r;
  return scan_bat (s);
}
