/* vhdkit: open an image, choose the valid footer copy, load and check the
 * dynamic header and the BAT.
 *
 * Every number read from the file is checked here against the file's size
 * and the other structures before anything uses it: an image is untrusted
 * input.  The parent chain of a differencing disk is resolved in chain.c.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "chain.h"
#include "backend/backend.h"
#include "backend/file.h"
#include "formats/vhd/format.h"
#include "image.h"

/* Try a footer of len bytes (512, or 511 with a zero reserved byte
 * after it) at offset at.  Returns 0 when it decodes, -EINVAL with why[]
 * set when it has the cookie but not a valid footer, or 1 when there is
 * no cookie there at all (try elsewhere).
 */
static int
try_trailing_footer_at (struct vhd_disk *disk, uint64_t at, size_t len,
                        char *why, size_t why_size)
{
  uint8_t buf[VHD_FOOTER_SIZE] = { 0 };
  int r = vhd_backend_pread_exact (disk->be, buf, len, at, "footer");

  if (r < 0) {
    snprintf (why, why_size, "%s", vhd_last_error ());
    return r;
  }
  if (memcmp (buf, "conectix", 8) != 0)
    return 1;
  r = vhd_footer_decode (buf, &disk->footer, disk->path, at);
  if (r < 0) {
    snprintf (why, why_size, "%s", vhd_last_error ());
    return r;
  }
  disk->footer_offset = at;
  memcpy (disk->footer_raw, buf, sizeof buf);
  return 0;
}

/* Try the trailing footer: the last 512 bytes, or (as some old writers
 * left it) the last 511 bytes, the missing byte being a reserved zero.
 * On failure the message is kept in why[] for the combined error.
 */
static int
read_trailing_footer (struct vhd_disk *disk, char *why, size_t why_size)
{
  int r = 1;

  if (disk->file_size < VHD_FOOTER_SIZE - 1) {
    snprintf (why, why_size, "the file is only %" PRIu64 " bytes",
              disk->file_size);
    return -EINVAL;
  }
  if (disk->file_size >= VHD_FOOTER_SIZE)
    r = try_trailing_footer_at (disk, disk->file_size - VHD_FOOTER_SIZE,
                                VHD_FOOTER_SIZE, why, why_size);
  /* The 511-byte variant that some old writers left. */
  if (r == 1)
    r = try_trailing_footer_at (disk, disk->file_size - (VHD_FOOTER_SIZE - 1),
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

int
vhd_validate_footer_copy (const char *path, const struct vhd_footer *trailing,
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
 * decode at all is no rival: the trailing footer is used, as before.
 */
static int
compare_footer_copy (struct vhd_disk *disk)
{
  uint8_t buf[VHD_FOOTER_SIZE];
  struct vhd_footer copy;

  if (disk->footer.disk_type == VHD_TYPE_FIXED ||
      disk->footer_offset < VHD_FOOTER_SIZE)
    return 0;
  if (vhd_backend_pread_exact (disk->be, buf, sizeof buf, 0,
                               "footer copy") < 0 ||
      memcmp (buf, "conectix", 8) != 0 ||
      vhd_footer_decode (buf, &copy, disk->path, 0) < 0) {
    vhd_clear_error ();
    return 0;
  }
  return vhd_validate_footer_copy (disk->path, &disk->footer,
                                   disk->footer_offset, &copy);
}

/* Choose the footer: the trailing one when it is valid, else (dynamic and
 * differencing disks only) the copy at offset 0.
 */
static int
choose_footer (struct vhd_disk *disk)
{
  char trailing_why[1024], copy_why[1024];
  uint8_t buf[VHD_FOOTER_SIZE];
  struct vhd_footer copy;
  int r;

  if (read_trailing_footer (disk, trailing_why, sizeof trailing_why) == 0)
    return compare_footer_copy (disk);

  if (disk->file_size < VHD_FOOTER_SIZE)
    return vhd_error (EINVAL, "%s: not a VHD image: %s", disk->path,
                      trailing_why);

  r = vhd_backend_pread_exact (disk->be, buf, sizeof buf, 0, "footer copy");
  if (r == 0)
    r = vhd_footer_decode (buf, &copy, disk->path, 0);
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
      return vhd_error (EINVAL, "%s: not a VHD image (no \"conectix\" "
                        "footer at the end or at offset 0)", disk->path);
    return vhd_error (EINVAL, "%s: no valid footer: trailing footer: %s; "
                      "footer copy: %s", disk->path, trailing_why, copy_why);
  }

  disk->footer = copy;
  memcpy (disk->footer_raw, buf, sizeof buf);
  disk->footer_from_copy = true;
  /* Where the trailing footer belongs is settled once the BAT is known
   * (the end of the last block or of the metadata): see load_bat.
   */
  disk->footer_offset = disk->file_size & ~(uint64_t) (VHD_SECTOR_SIZE - 1);
  return 0;
}

static int
check_fixed_layout (struct vhd_disk *disk)
{
  if (disk->footer_offset < disk->footer.current_size)
    return vhd_error (EINVAL, "%s: footer: current_size %" PRIu64
                      " is larger than the %" PRIu64
                      " bytes of data the fixed image holds",
                      disk->path, disk->footer.current_size,
                      disk->footer_offset);
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
int
vhd_validate_dyn_layout (const char *path, uint64_t file_size,
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
int
vhd_validate_block (const char *path, const struct vhd_dyn_header *h,
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

static int
compare_block_extents (const void *a, const void *b)
{
  const struct vhd_block_extent *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

void
vhd_sort_block_extents (struct vhd_block_extent *ext, size_t n)
{
  qsort (ext, n, sizeof *ext, compare_block_extents);
}

/* No two blocks may share a byte: a write to one would corrupt the other. */
size_t
vhd_next_block_overlap (const struct vhd_block_extent *ext, size_t n,
                        uint64_t block_bytes, size_t from)
{
  for (size_t i = from; i < n; i++)
    if (ext[i - 1].start + block_bytes > ext[i].start)
      return i;
  return n;
}

/* The trailing footer is lost and the copy at offset 0 is all that says
 * how large the disk is.  If the BAT holds a block past that size, the
 * lost footer said more (the two disagreed): serving the copy would
 * silently shrink the disk and restoring the trailing footer from it
 * would make that permanent.  The BAT's tail is read in small chunks.
 */
static int
check_copy_covers_bat (struct vhd_disk *disk)
{
  const struct vhd_dyn_header *h = &disk->header;
  uint64_t needed = (disk->footer.current_size + h->block_size - 1)
                    / h->block_size;
  uint8_t buf[4096];

  for (uint64_t i = needed; i < h->max_table_entries; ) {
    uint64_t n = h->max_table_entries - i;
    int r;

    if (n > sizeof buf / 4)
      n = sizeof buf / 4;
    r = vhd_backend_pread_exact (disk->be, buf, n * 4,
                                 h->table_offset + 4 * i, "BAT");
    if (r < 0)
      return r;
    for (uint64_t k = 0; k < n; k++)
      if (vhd_get_be32 (buf + 4 * k) != VHD_BAT_UNUSED)
        return vhd_error (EINVAL, "%s: BAT: entry %" PRIu64 " holds a block"
                          " past current_size %" PRIu64 " of the footer"
                          " copy at offset 0, and the trailing footer is"
                          " lost: the disk's size is in doubt, and using"
                          " the copy would drop that block", disk->path,
                          i + k, disk->footer.current_size);
    i += n;
  }
  return 0;
}

static int
load_dynamic_header (struct vhd_disk *disk)
{
  uint8_t buf[VHD_DYN_HEADER_SIZE];
  uint64_t at = disk->footer.data_offset;
  struct vhd_dyn_header *h = &disk->header;
  int r;

  if (at > disk->file_size || disk->file_size - at < VHD_DYN_HEADER_SIZE)
    return vhd_error (EINVAL, "%s: footer: data_offset %" PRIu64
                      " puts the dynamic header past the end of the file"
                      " (%" PRIu64 " bytes)", disk->path, at,
                      disk->file_size);
  if (at < VHD_FOOTER_SIZE)
    return vhd_error (EINVAL, "%s: footer: data_offset %" PRIu64
                      " overlaps the footer copy at offset 0",
                      disk->path, at);
  r = vhd_backend_pread_exact (disk->be, buf, sizeof buf, at,
                               "dynamic header");
  if (r < 0)
    return r;
  r = vhd_dyn_header_decode (buf, h, disk->path, at);
  if (r < 0)
    return r;
  disk->header_offset = at;

  /* Every structure must end before the trailing footer, where the
   * next block goes (or before the end of the file when that footer is
   * lost: it goes back past the last structure).
   */
  r = vhd_validate_dyn_layout (disk->path, disk->file_size,
                               disk->footer_from_copy ? disk->file_size
                                                      : disk->footer_offset,
                               &disk->footer, at, h);
  if (r < 0)
    return r;
  if (disk->footer_from_copy) {
    r = check_copy_covers_bat (disk);
    if (r < 0)
      return r;
  }
  disk->bitmap_size = vhd_bitmap_size (h->block_size);
  return 0;
}

/* The BAT is read this many bytes at a time, so that a bad entry stops
 * the open after a read of its own chunk, not of the whole table.
 */
#define BAT_CHUNK_BYTES (64 * 1024)

/* What load_bat and vhd_io_init allocate for a BAT of n entries: the BAT
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
check_metadata_cap (struct vhd_disk *disk)
{
  uint64_t need = vhd_metadata_bytes (disk->header.max_table_entries);
  uint64_t cap = disk->max_metadata_bytes;

  if (need > cap)
    return vhd_error (EFBIG, "%s: dynamic header: max_table_entries %"
                      PRIu32 " (block_size %" PRIu32 ") would take %"
                      PRIu64 " bytes of memory, more than the cap of %"
                      PRIu64 " bytes; to open it anyway, raise the cap"
                      " (vhd_open_options.max_metadata_bytes, the"
                      " plugin's max-metadata=SIZE)", disk->path,
                      disk->header.max_table_entries,
                      disk->header.block_size, need, cap);
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

/* No two blocks may share a byte: a write to one would corrupt the other. */
static int
check_blocks_disjoint (struct vhd_disk *disk, uint64_t *keys, size_t n,
                       uint64_t block_bytes)
{
  if (n < 2)
    return 0;                   /* keys is NULL when no block is allocated */
  qsort (keys, n, sizeof *keys, compare_u64);
  for (size_t i = 1; i < n; i++) {
    uint64_t a = (keys[i - 1] >> 32) * VHD_SECTOR_SIZE;
    uint64_t b = (keys[i] >> 32) * VHD_SECTOR_SIZE;
    if (a + block_bytes > b)
      return vhd_error (EINVAL, "%s: BAT: entries %" PRIu32 " and %" PRIu32
                        " overlap (blocks at offsets %" PRIu64 " and %"
                        PRIu64 ", %" PRIu64 " bytes each)", disk->path,
                        (uint32_t) keys[i - 1], (uint32_t) keys[i], a, b,
                        block_bytes);
  }
  return 0;
}

/* Append a sort key, growing the array as blocks turn up (most images
 * have far fewer blocks allocated than entries).
 */
static int
push_key (struct vhd_disk *disk, uint64_t **keys, size_t *n, size_t *cap,
          uint64_t key)
{
  if (*n == *cap) {
    size_t c = *cap ? *cap * 2 : 1024;
    uint64_t *k = realloc (*keys, c * sizeof *k);
    if (k == NULL)
      return vhd_error (ENOMEM, "%s: BAT: out of memory for %zu blocks",
                        disk->path, c);
    *keys = k;
    *cap = c;
  }
  (*keys)[(*n)++] = key;
  return 0;
}

/* Make room in disk->bat for entries [0, want) as the BAT is read:
 * a table refused at its first chunk has cost one chunk's worth, even
 * where malloc fills what it hands out (MALLOC_PERTURB_).
 */
static int
grow_bat (struct vhd_disk *disk, uint32_t *cap, uint64_t want)
{
  uint64_t max = disk->header.max_table_entries;
  uint64_t c = *cap;
  uint32_t *bat;

  if (want > max)
    want = max;
  if (want <= c)
    return 0;
  c = c * 2 > want ? c * 2 : want;
  if (c > max)
    c = max;
  bat = realloc (disk->bat, (size_t) c * sizeof *bat);
  if (bat == NULL)
    return vhd_error (ENOMEM, "%s: BAT of %" PRIu32 " entries: out of memory",
                      disk->path, disk->header.max_table_entries);
  disk->bat = bat;
  *cap = (uint32_t) c;
  return 0;
}

/* Read the BAT and check every allocated entry: its block (bitmap and
 * data) lies inside the file, before the trailing footer, clear of the
 * metadata and of every other block.  The table is read a chunk at a time
 * and checked as it is read, so that a bad entry stops the open at once;
 * what it would cost in memory is checked against the cap first.
 */
static int
load_bat (struct vhd_disk *disk)
{
  const struct vhd_dyn_header *h = &disk->header;
  uint64_t bat_bytes = vhd_bat_size (h->max_table_entries);
  uint64_t block_bytes = (uint64_t) disk->bitmap_size + h->block_size;
  uint64_t data_end = disk->footer_from_copy ? disk->file_size
                                             : disk->footer_offset;
  uint64_t metadata_end;
  uint64_t *keys = NULL;
  uint8_t *raw;
  size_t n = 0, cap = 0;
  uint32_t i = 0, bat_cap = 0;
  int r;

  r = check_metadata_cap (disk);
  if (r < 0)
    return r;
  raw = malloc (BAT_CHUNK_BYTES);
  if (raw == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", disk->path);

  metadata_end = vhd_metadata_end (h, disk->header_offset, disk->file_size);

  for (uint64_t at = 0; at < bat_bytes && i < h->max_table_entries && r == 0;
       at += BAT_CHUNK_BYTES) {
    size_t len = bat_bytes - at < BAT_CHUNK_BYTES ? (size_t) (bat_bytes - at)
                                                  : BAT_CHUNK_BYTES;
    r = vhd_backend_pread_exact (disk->be, raw, len, h->table_offset + at,
                                 "BAT");
    if (r == 0)
      r = grow_bat (disk, &bat_cap, i + len / 4);
    for (size_t k = 0; r == 0 && k < len / 4 && i < h->max_table_entries;
         k++, i++) {
      uint32_t sector = vhd_get_be32 (raw + k * 4);
      uint64_t start = (uint64_t) sector * VHD_SECTOR_SIZE;

      disk->bat[i] = sector;
      if (sector == VHD_BAT_UNUSED)
        continue;
      r = vhd_validate_block (disk->path, h, disk->header_offset, data_end,
                              i, sector);
      if (r == 0)
        r = push_key (disk, &keys, &n, &cap, (uint64_t) sector << 32 | i);
      if (r == 0 && start + block_bytes > metadata_end)
        metadata_end = start + block_bytes;
    }
  }
  if (r < 0)
    goto out;
  disk->allocated_blocks = (uint32_t) n;
  r = check_blocks_disjoint (disk, keys, n, block_bytes);
  if (r == 0 && disk->footer_from_copy) {
    /* The trailing footer is lost (a crash while a block was appended).
     * It goes back at the end of the file, past whatever was half
     * written there: those bytes belong to no block (a leak that
     * vhdtool check --repair reclaims), and structures that this reader
     * does not know about (a blktap batmap) stay untouched.
     */
    uint64_t end = disk->file_size > metadata_end ? disk->file_size
                                                  : metadata_end;
    disk->footer_offset = (end + VHD_SECTOR_SIZE - 1)
                          & ~(uint64_t) (VHD_SECTOR_SIZE - 1);
  }
 out:
  free (raw);
  free (keys);
  return r;
}

static void
free_disk (struct vhd_disk *disk)
{
  if (disk == NULL)
    return;
  if (disk->parent)
    vhd_close (disk->parent);
  vhd_io_fini (disk);
  vhd_backend_close (disk->be);
  free (disk->bat);
  free (disk->path);
  free (disk);
}

int
vhd_open_backend (struct vhd_backend *be, bool readonly, uint32_t flags,
                  const struct vhd_chain_context *chain,
                  struct vhd_disk **out)
{
  const char *path = be->name;
  struct vhd_disk *disk;
  int r;

  disk = calloc (1, sizeof *disk);
  if (disk == NULL) {
    vhd_backend_close (be);
    return vhd_error (ENOMEM, "%s: out of memory", path);
  }
  disk->be = be;
  disk->readonly = readonly;
  disk->force_share = chain && chain->options &&
                      (chain->options->flags & VHD_OPEN_FLAG_FORCE_SHARE);
  disk->max_metadata_bytes = chain && chain->options &&
                             chain->options->max_metadata_bytes
                             ? chain->options->max_metadata_bytes
                             : VHD_DEFAULT_MAX_METADATA_BYTES;
  disk->path = strdup (path);
  if (disk->path == NULL) {
    r = vhd_error (ENOMEM, "%s: out of memory", path);
    goto fail;
  }

  r = vhd_backend_get_size (be, &disk->file_size);
  if (r < 0)
    goto fail;
  r = choose_footer (disk);
  if (r < 0)
    goto fail;

  if (disk->footer.disk_type == VHD_TYPE_FIXED)
    r = check_fixed_layout (disk);
  else {
    r = load_dynamic_header (disk);
    if (r == 0)
      r = load_bat (disk);
    if (r == 0 && disk->footer.disk_type == VHD_TYPE_DIFFERENCING &&
        !(flags & VHD_OPEN_FLAG_NO_PARENTS))
      r = vhd_chain_open_parent (disk, chain);
  }
  if (r == 0)
    r = vhd_io_init (disk);
  if (r < 0)
    goto fail;

  *out = disk;
  return 0;

 fail:
  free_disk (disk);
  return r;
}

int
vhd_open_fd (int fd, const char *path, bool readonly, uint32_t flags,
             const struct vhd_chain_context *chain, struct vhd_disk **out)
{
  struct vhd_backend *be = vhd_backend_file_new (fd, path);

  if (be == NULL)
    return -ENOMEM;
  return vhd_open_backend (be, readonly, flags, chain, out);
}

int
vhd_open (const char *path, const struct vhd_open_options *options,
          vhd_disk **disk_out)
{
  static const struct vhd_open_options defaults;
  int fd;

  vhd_clear_error ();
  if (disk_out == NULL)
    return vhd_error (EINVAL, "vhd_open: disk_out is NULL");
  *disk_out = NULL;
  if (path == NULL || *path == '\0')
    return vhd_error (EINVAL, "vhd_open: path is NULL or empty");
  if (options == NULL)
    options = &defaults;

  if ((options->flags & VHD_OPEN_FLAG_FORCE_SHARE) && !options->readonly)
    return vhd_error (EINVAL, "%s: force-share is for read-only opens"
                      " only (a writer never shares)", path);

  /* No FIFO or device can block here; only files and block devices. */
  fd = vhd_file_open (path, options->readonly ? O_RDONLY : O_RDWR);
  if (fd < 0)
    return fd;

  return vhd_open_fd (fd, path, options->readonly, options->flags,
                      &(struct vhd_chain_context) {
                        .options = options, .depth = 0, .children = NULL,
                      },
                      disk_out);
}

int
vhd_open_with_backend (const struct vhd_backend_callbacks *cb, void *opaque,
                       const char *name,
                       const struct vhd_open_options *options,
                       vhd_disk **disk_out)
{
  static const struct vhd_open_options defaults;
  struct vhd_backend *be;
  int r;

  vhd_clear_error ();
  if (disk_out == NULL)
    return vhd_error (EINVAL, "vhd_open_with_backend: disk_out is NULL");
  *disk_out = NULL;
  if (name == NULL || *name == '\0')
    return vhd_error (EINVAL, "vhd_open_with_backend: name is NULL or"
                      " empty (it names the image in messages)");
  if (options == NULL)
    options = &defaults;
  /* Callback storage has no lock to take or to share: force-share means
   * nothing more here than it does for a path.
   */
  if ((options->flags & VHD_OPEN_FLAG_FORCE_SHARE) && !options->readonly)
    return vhd_error (EINVAL, "%s: force-share is for read-only opens"
                      " only (a writer never shares)", name);

  r = vhd_backend_callbacks_new (cb, opaque, name, options->readonly, &be);
  if (r < 0)
    return r;
  return vhd_open_backend (be, options->readonly, options->flags,
                           &(struct vhd_chain_context) {
                             .options = options, .depth = 0,
                             .children = NULL,
                           },
                           disk_out);
}

void
vhd_close (vhd_disk *disk)
{
  /* Write back what a client left unflushed, as qemu does on close; a
   * caller that must know it succeeded calls vhd_flush first.
   */
  if (disk && !disk->readonly && disk->locks_initialized)
    vhd_flush (disk);
  free_disk (disk);
}

uint64_t
vhd_get_size (const vhd_disk *disk)
{
  return disk->footer.current_size;
}

const vhd_disk *
vhd_get_parent (const vhd_disk *disk)
{
  return disk->parent;
}
