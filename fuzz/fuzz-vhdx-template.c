/* libFuzzer harness: VHDX inputs as patches of a template (see
 * fuzz-vhdx-template.h).
 *
 * The windows are found in the template itself ([MS-VHDX] 2.2), so any
 * small dynamic VHDX can serve: the file identifier, the first bytes of
 * both headers and both region tables, of every region that the first
 * region table lists (the BAT, the metadata table), of every metadata
 * item, and of the log.  Only the template's first meta_end bytes (the
 * header section and those regions) are kept and written; the file is
 * then extended with a hole to the template's size, so that payload
 * blocks stay where the BAT says, reading as zeros.
 */

#include <config.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz-repair.h"
#include "fuzz-vhdx-template.h"

#define MiB (UINT64_C (1) << 20)
/* Regions past this are not kept (nor are payload blocks before it
 * worth writing at every run).
 */
#define MAX_META_END (16 * MiB)
#define MAX_WINDOWS 64

struct window {
  uint64_t offset;
  uint32_t len;
};

static uint8_t *tmpl, *work;    /* the template's first meta_end bytes */
static uint64_t meta_end, tmpl_size;
static struct window windows[MAX_WINDOWS];
static size_t n_windows;

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
add_window (uint64_t offset, uint32_t len)
{
  if (n_windows == MAX_WINDOWS || offset >= meta_end)
    return;
  if (len > meta_end - offset)
    len = (uint32_t) (meta_end - offset);
  windows[n_windows++] = (struct window) { offset, len };
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
  for (uint32_t i = 0; i < n && 16 + 32 * (i + 1) <= 64 * 1024; i++) {
    const uint8_t *ent = regions + 16 + 32 * i;
    e = get_le64 (ent + 16);
    e = (e < MAX_META_END ? e : MAX_META_END) + get_le32 (ent + 24);
    if (e > end)
      end = e;
  }
  return end;
}

static void
find_windows (void)
{
  const uint8_t *regions = tmpl + 192 * 1024;
  uint32_t n = get_le32 (regions + 8);

  add_window (0, 512);                          /* file identifier */
  add_window (64 * 1024, 256);                  /* headers */
  add_window (128 * 1024, 256);
  add_window (192 * 1024, 256);                 /* region tables */
  add_window (256 * 1024, 256);
  add_window (get_le64 (tmpl + 64 * 1024 + 72), 512);       /* log */
  for (uint32_t i = 0; i < n && 16 + 32 * (i + 1) <= 64 * 1024; i++) {
    uint64_t at = get_le64 (regions + 16 + 32 * i + 16);

    add_window (at, 512);
    /* The metadata table: a window at each item. */
    if (at < meta_end && meta_end - at >= 64 * 1024 &&
        memcmp (tmpl + at, "metadata", 8) == 0) {
      uint16_t items = (uint16_t) (tmpl[at + 10] | tmpl[at + 11] << 8);
      for (uint16_t j = 0; j < items && 32 + 32 * (j + 1) <= 64 * 1024; j++) {
        const uint8_t *ent = tmpl + at + 32 + 32 * j;
        uint32_t len = get_le32 (ent + 20);
        add_window (at + get_le32 (ent + 16), len < 64 ? len : 64);
      }
    }
  }
}

int
fuzz_vhdx_template_load (const char *path)
{
  FILE *fp = fopen (path, "rb");
  struct stat st;
  uint8_t first[320 * 1024];

  if (fp == NULL || fstat (fileno (fp), &st) == -1 ||
      fread (first, 1, sizeof first, fp) != sizeof first ||
      memcmp (first, "vhdxfile", 8) != 0 ||
      memcmp (first + 192 * 1024, "regi", 4) != 0) {
    fprintf (stderr, "fuzz: %s: not a VHDX template\n", path);
    goto fail;
  }
  tmpl_size = (uint64_t) st.st_size;
  meta_end = find_meta_end (first + 64 * 1024, first + 192 * 1024);
  if (meta_end > MAX_META_END || meta_end > tmpl_size) {
    fprintf (stderr, "fuzz: %s: regions end at %llu, past the file or"
             " the %llu bytes a template may use\n", path,
             (unsigned long long) meta_end,
             (unsigned long long) MAX_META_END);
    goto fail;
  }
  tmpl = malloc (meta_end);
  work = malloc (meta_end);
  if (tmpl == NULL || work == NULL || fseek (fp, 0, SEEK_SET) == -1 ||
      fread (tmpl, 1, meta_end, fp) != meta_end) {
    fprintf (stderr, "fuzz: %s: cannot read its first %llu bytes\n", path,
             (unsigned long long) meta_end);
    goto fail;
  }
  fclose (fp);
  find_windows ();
  return 0;

 fail:
  if (fp)
    fclose (fp);
  free (tmpl);
  free (work);
  tmpl = work = NULL;
  return -1;
}

bool
fuzz_vhdx_template_applies (const uint8_t *data, size_t size)
{
  return tmpl != NULL && size >= FUZZ_VHDX_TEMPLATE_MAGIC_LEN &&
         memcmp (data, FUZZ_VHDX_TEMPLATE_MAGIC,
                 FUZZ_VHDX_TEMPLATE_MAGIC_LEN) == 0;
}

int
fuzz_vhdx_template_write (int fd, const uint8_t *data, size_t size,
                          bool repair)
{
  const uint8_t *p = data + FUZZ_VHDX_TEMPLATE_MAGIC_LEN;
  size_t left = size - FUZZ_VHDX_TEMPLATE_MAGIC_LEN;

  memcpy (work, tmpl, meta_end);
  for (size_t i = 0; i < n_windows && left > 0; i++) {
    size_t n = windows[i].len < left ? windows[i].len : left;
    memcpy (work + windows[i].offset, p, n);
    p += n;
    left -= n;
  }
  if (repair)
    fuzz_repair_vhdx (work, meta_end);
  if (write (fd, work, meta_end) != (ssize_t) meta_end ||
      ftruncate (fd, (off_t) tmpl_size) == -1)
    return -1;
  return 0;
}

int
fuzz_vhdx_template_write_seed (const char *path)
{
  FILE *fp = fopen (path, "wb");
  int r = 0;

  if (fp == NULL || tmpl == NULL)
    r = -1;
  else if (fwrite (FUZZ_VHDX_TEMPLATE_MAGIC, 1,
                   FUZZ_VHDX_TEMPLATE_MAGIC_LEN, fp)
           != FUZZ_VHDX_TEMPLATE_MAGIC_LEN)
    r = -1;
  for (size_t i = 0; r == 0 && i < n_windows; i++)
    if (fwrite (tmpl + windows[i].offset, 1, windows[i].len, fp)
        != windows[i].len)
      r = -1;
  if (fp && fclose (fp) != 0)
    r = -1;
  return r;
}
