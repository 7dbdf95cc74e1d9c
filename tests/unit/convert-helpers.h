/* Helpers shared by unit/test-source.c and unit/test-async.c: a scratch
 * folder, raw source files with a known pattern, a create from a source,
 * and checks of what it left.  Include after cmocka.h.
 */

#ifndef CONVERT_HELPERS_H
#define CONVERT_HELPERS_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhdkit.h"
#include "scratch.h"

#define MiB (UINT64_C (1) << 20)

static int counter;

static inline void
scratch_path (char *out, size_t n, const char *ext)
{
  snprintf (out, n, "%s/f%d.%s", dir, counter++, ext);
}

/* The byte at offset of the pattern that write_raw writes: data in the
 * first half of every 4 MiB, zeros in the second half (so that each 2 MiB
 * block is all data or all zeros), never zero inside the data.
 */
static inline uint8_t
pattern_byte (uint64_t offset, unsigned seed)
{
  if (offset % (4 * MiB) >= 2 * MiB)
    return 0;
  return (uint8_t) ((offset * 2654435761u + seed) % 251 + 1);
}

static inline void
fill_pattern (uint8_t *buf, uint64_t offset, size_t n, unsigned seed)
{
  for (size_t i = 0; i < n; i++)
    buf[i] = pattern_byte (offset + i, seed);
}

/* A raw file of size bytes holding the pattern; with sparse, its zero
 * halves are holes rather than written zeros.
 */
static inline void
write_raw (const char *path, uint64_t size, unsigned seed, bool sparse)
{
  uint8_t *buf = malloc (MiB);
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

  assert_non_null (buf);
  assert_true (fd >= 0);
  for (uint64_t off = 0; off < size; off += MiB) {
    size_t n = size - off < MiB ? (size_t) (size - off) : MiB;
    fill_pattern (buf, off, n, seed);
    if (sparse && buf[0] == 0 && off % (4 * MiB) >= 2 * MiB)
      continue;
    assert_int_equal (pwrite (fd, buf, n, (off_t) off), (ssize_t) n);
  }
  assert_int_equal (ftruncate (fd, (off_t) size), 0);
  close (fd);
  free (buf);
}

/* One create from a source, version 2. */
struct from_source {
  uint64_t size;                /* maximum_size; 0: the source's */
  uint32_t flags;
  uint32_t source_device;       /* source_virtual_storage_type */
  const char *parent;
  struct vhd_overlapped *overlapped;
};

static inline int
create_from (const char *source, const char *path,
             const struct from_source *o, vhd_disk **disk)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };

  p.version2.source_path = source;
  p.version2.maximum_size = o->size;
  p.version2.parent_path = o->parent;
  p.version2.source_virtual_storage_type.device_id = o->source_device;
  return vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                                  o->flags, 0, &p, o->overlapped, disk);
}

/* The disk reads as the pattern for its first pattern_size bytes, and
 * as zeros after them.
 */
static inline void
assert_disk_holds_pattern (vhd_disk *disk, uint64_t pattern_size,
                           unsigned seed)
{
  uint64_t size = vhd_get_size (disk);
  uint8_t *got = malloc (MiB), *want = malloc (MiB);

  assert_non_null (got);
  assert_non_null (want);
  for (uint64_t off = 0; off < size; off += MiB) {
    size_t n = size - off < MiB ? (size_t) (size - off) : MiB;
    if (vhd_pread (disk, got, n, off) < 0)
      fail_msg ("vhd_pread at %llu: %s", (unsigned long long) off,
                vhd_last_error ());
    for (size_t i = 0; i < n; i++)
      want[i] = off + i < pattern_size ? pattern_byte (off + i, seed) : 0;
    if (memcmp (got, want, n) != 0)
      fail_msg ("the disk differs from the source in [%llu, %llu)",
                (unsigned long long) off, (unsigned long long) (off + n));
  }
  free (got);
  free (want);
}

/* No file at path, and no hidden temporary file in the scratch folder. */
static inline void
assert_nothing_left (const char *path)
{
  struct stat st;
  struct dirent *e;
  DIR *d;

  assert_int_equal (lstat (path, &st), -1);
  d = opendir (dir);
  assert_non_null (d);
  while ((e = readdir (d)) != NULL)
    if (e->d_name[0] == '.' && strcmp (e->d_name, ".") != 0 &&
        strcmp (e->d_name, "..") != 0)
      fail_msg ("temporary file left behind: %s", e->d_name);
  closedir (d);
}

static inline uint32_t
allocated_blocks (vhd_disk *disk)
{
  struct vhd_image_info info;

  assert_int_equal (vhd_get_image_info (disk, &info), 0);
  return info.allocated_blocks;
}

#endif /* CONVERT_HELPERS_H */
