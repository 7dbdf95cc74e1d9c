/* libFuzzer harness: VHDX inputs as patches of templates (see
 * fuzz-vhdx-template.h).
 *
 * The windows are found in each template itself ([MS-VHDX] 2.2), so any
 * small VHDX can serve: the file identifier, the first bytes of both
 * headers and both region tables, of every region that the first region
 * table lists (the BAT, the metadata table), of every metadata item, and
 * of the log.  Only the template's first meta_end bytes (the header
 * section and those regions) are kept and written; the file is then
 * extended with a hole to the template's size, so that payload blocks
 * stay where the BAT says, reading as zeros.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz-repair.h"
#include "fuzz-vhdx-template.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
/* Regions past this are not kept (nor are payload blocks before it
 * worth writing at every run).
 */
#define MAX_META_END (16 * MiB)
#define MAX_WINDOWS 64
/* The header section up to the end of the second region table. */
#define HEADER_SECTION_READ (320 * KiB)

struct window {
  uint64_t offset;
  uint32_t len;
};

struct template {
  char *path;
  uint8_t *bytes;               /* the template's first meta_end bytes */
  uint64_t meta_end, size;
  struct window windows[MAX_WINDOWS];
  size_t n_windows;
};

static struct template templates[FUZZ_VHDX_MAX_TEMPLATES];
static size_t n_templates;
/* One scratch copy, as large as the largest template's meta_end. */
static uint8_t *work;
static uint64_t work_size;

static uint32_t
get_le32 (const uint8_t *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
         | (uint32_t) p[3] << 24;
}

static uint64_t
get_le64 (const uint8_t *p)
{
  return get_le32 (p) | (uint64_t) get_le32 (p + 4) << 32;
}

/* Add a window of at most len bytes at offset, clipped to meta_end. */
static void
add_window (struct template *t, uint64_t offset, uint32_t len)
{
  if (t->n_windows == MAX_WINDOWS || offset >= t->meta_end)
    return;
  if (len > t->meta_end - offset)
    len = (uint32_t) (t->meta_end - offset);
  t->windows[t->n_windows++] = (struct window) { offset, len };
}

/* The end of the last structure the template's first header and region
 * table name, past the 1 MiB header section.
 */
static uint64_t
find_meta_end (const uint8_t *head, const uint8_t *regions)
{
  uint64_t end = MiB, e;
  uint32_t n = get_le32 (regions + 8);

  /* Offsets past MAX_META_END make the template unusable; capping them
   * first keeps the sums from wrapping.
   */
  e = get_le64 (head + 72);                             /* the log */
  e = (e < MAX_META_END ? e : MAX_META_END) + get_le32 (head + 68);
  if (e > end)
    end = e;
  for (uint32_t i = 0; i < n && 16 + 32 * (i + 1) <= 64 * KiB; i++) {
    const uint8_t *ent = regions + 16 + 32 * i;
    e = get_le64 (ent + 16);
    e = (e < MAX_META_END ? e : MAX_META_END) + get_le32 (ent + 24);
    if (e > end)
      end = e;
  }
  return end;
}

static void
find_windows (struct template *t)
{
  const uint8_t *b = t->bytes, *regions = b + 192 * KiB;
  uint32_t n = get_le32 (regions + 8);

  add_window (t, 0, 512);                       /* file identifier */
  add_window (t, 64 * KiB, 256);                /* headers */
  add_window (t, 128 * KiB, 256);
  add_window (t, 192 * KiB, 256);               /* region tables */
  add_window (t, 256 * KiB, 256);
  add_window (t, get_le64 (b + 64 * KiB + 72), 512);        /* log */
  for (uint32_t i = 0; i < n && 16 + 32 * (i + 1) <= 64 * KiB; i++) {
    uint64_t at = get_le64 (regions + 16 + 32 * i + 16);

    add_window (t, at, 512);
    /* The metadata table: a window at each item. */
    if (at < t->meta_end && t->meta_end - at >= 64 * KiB &&
        memcmp (b + at, "metadata", 8) == 0) {
      uint16_t items = (uint16_t) (b[at + 10] | b[at + 11] << 8);
      for (uint16_t j = 0; j < items && 32 + 32 * (j + 1u) <= 64 * KiB; j++) {
        const uint8_t *ent = b + at + 32 + 32 * j;
        uint32_t len = get_le32 (ent + 20);
        add_window (t, at + get_le32 (ent + 16), len < 64 ? len : 64);
      }
    }
  }
}

int
fuzz_vhdx_template_load (const char *path)
{
  struct template t = { 0 };
  FILE *fp = NULL;
  struct stat st;
  uint8_t *grown;

  if (n_templates == FUZZ_VHDX_MAX_TEMPLATES) {
    fprintf (stderr, "fuzz: %s: more than %d templates\n", path,
             FUZZ_VHDX_MAX_TEMPLATES);
    return -1;
  }
  fp = fopen (path, "rb");
  t.path = strdup (path);
  t.bytes = malloc (HEADER_SECTION_READ);
  if (fp == NULL || t.path == NULL || t.bytes == NULL ||
      fstat (fileno (fp), &st) == -1 ||
      fread (t.bytes, 1, HEADER_SECTION_READ, fp) != HEADER_SECTION_READ ||
      memcmp (t.bytes, "vhdxfile", 8) != 0 ||
      memcmp (t.bytes + 192 * KiB, "regi", 4) != 0) {
    fprintf (stderr, "fuzz: %s: not a VHDX template\n", path);
    goto fail;
  }
  t.size = (uint64_t) st.st_size;
  t.meta_end = find_meta_end (t.bytes + 64 * KiB, t.bytes + 192 * KiB);
  if (t.meta_end > MAX_META_END || t.meta_end > t.size) {
    fprintf (stderr, "fuzz: %s: regions end at %llu, past the file or"
             " the %llu bytes a template may use\n", path,
             (unsigned long long) t.meta_end,
             (unsigned long long) MAX_META_END);
    goto fail;
  }
  free (t.bytes);
  t.bytes = malloc (t.meta_end);
  if (t.bytes == NULL || fseek (fp, 0, SEEK_SET) == -1 ||
      fread (t.bytes, 1, t.meta_end, fp) != t.meta_end) {
    fprintf (stderr, "fuzz: %s: cannot read its first %llu bytes\n", path,
             (unsigned long long) t.meta_end);
    goto fail;
  }
  if (t.meta_end > work_size) {
    grown = realloc (work, t.meta_end);
    if (grown == NULL) {
      fprintf (stderr, "fuzz: %s: out of memory\n", path);
      goto fail;
    }
    work = grown;
    work_size = t.meta_end;
  }
  fclose (fp);
  find_windows (&t);
  templates[n_templates++] = t;
  return 0;

 fail:
  if (fp)
    fclose (fp);
  free (t.path);
  free (t.bytes);
  return -1;
}

size_t
fuzz_vhdx_template_count (void)
{
  return n_templates;
}

void
fuzz_vhdx_template_unload_all (void)
{
  for (size_t i = 0; i < n_templates; i++) {
    free (templates[i].path);
    free (templates[i].bytes);
  }
  n_templates = 0;
  free (work);
  work = NULL;
  work_size = 0;
}

const char *
fuzz_vhdx_template_path (size_t index)
{
  return index < n_templates ? templates[index].path : NULL;
}

bool
fuzz_vhdx_template_applies (const uint8_t *data, size_t size)
{
  return n_templates > 0 && size >= FUZZ_VHDX_TEMPLATE_MAGIC_LEN &&
         memcmp (data, FUZZ_VHDX_TEMPLATE_MAGIC,
                 FUZZ_VHDX_TEMPLATE_MAGIC_LEN) == 0;
}

int
fuzz_vhdx_template_write (int fd, const uint8_t *data, size_t size,
                          bool repair)
{
  const struct template *t = &templates[0];
  const uint8_t *p = data + FUZZ_VHDX_TEMPLATE_PATCH_AT;
  size_t left = 0;

  if (size >= FUZZ_VHDX_TEMPLATE_PATCH_AT) {
    t = &templates[data[FUZZ_VHDX_TEMPLATE_MAGIC_LEN] % n_templates];
    left = size - FUZZ_VHDX_TEMPLATE_PATCH_AT;
  }
  memcpy (work, t->bytes, t->meta_end);
  for (size_t i = 0; i < t->n_windows && left > 0; i++) {
    size_t n = t->windows[i].len < left ? t->windows[i].len : left;
    memcpy (work + t->windows[i].offset, p, n);
    p += n;
    left -= n;
  }
  if (repair)
    fuzz_repair_vhdx (work, t->meta_end);
  if (write (fd, work, t->meta_end) != (ssize_t) t->meta_end ||
      ftruncate (fd, (off_t) t->size) == -1)
    return -1;
  return 0;
}

int
fuzz_vhdx_template_write_seed (size_t index, const char *path)
{
  const struct template *t;
  uint8_t selector = (uint8_t) index;
  FILE *fp;
  int r = 0;

  if (index >= n_templates || (fp = fopen (path, "wb")) == NULL)
    return -1;
  t = &templates[index];
  if (fwrite (FUZZ_VHDX_TEMPLATE_MAGIC, 1,
              FUZZ_VHDX_TEMPLATE_MAGIC_LEN, fp)
      != FUZZ_VHDX_TEMPLATE_MAGIC_LEN ||
      fwrite (&selector, 1, 1, fp) != 1)
    r = -1;
  for (size_t i = 0; r == 0 && i < t->n_windows; i++)
    if (fwrite (t->bytes + t->windows[i].offset, 1, t->windows[i].len, fp)
        != t->windows[i].len)
      r = -1;
  if (fclose (fp) != 0)
    r = -1;
  return r;
}
