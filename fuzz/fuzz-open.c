/* libFuzzer harness: arbitrary bytes as a VHD image, opened, described
 * and read as vhdtool and the plugin would (and, when the first byte
 * says so, as a differencing child beside a fixed parent with the UUID it
 * names).  Any crash, sanitizer report or read outside the buffers is a
 * bug; errors are the expected outcome for nearly every input.
 *
 * Most inputs have their checksums recomputed first (fuzz-repair.c), so
 * that mutations reach the checks behind them; about 1 in 8 is written
 * as it came, to keep the checksum checks themselves covered.  An input
 * that starts with "VHDXTMPL" is a patch of a VHDX template when
 * VHDKIT_FUZZ_VHDX_TEMPLATE names some (fuzz-vhdx-template.h).
 *
 * Environment:
 *   VHDKIT_FUZZ_REPAIR=0      write every input as it came, no checksum
 *                             repaired (1, or unset: repair as above);
 *                             scripts/fuzz-coverage measures coverage
 *                             with and without it, same binary
 *   VHDKIT_FUZZ_VHDX_TEMPLATE=FILE[:FILE...]
 *                             the VHDX templates, in selector order
 *   VHDKIT_FUZZ_VHDX_SEED=PATH
 *                             write the seed that gives back each
 *                             template: into the folder PATH, one file
 *                             per template (NN-BASENAME.vhdxtmpl); or,
 *                             with a single template, the file PATH
 *
 * Build: make fuzz (clang -fsanitize=fuzzer,address,undefined).
 * Run:   fuzz/fuzz-open -max_total_time=60 CORPUS_DIR SEEDS_DIR
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhdkit.h"
#include "fuzz-repair.h"
#include "fuzz-vhdx-template.h"

static char dir[PATH_MAX];
static char image_path[PATH_MAX + 16], parent_path[PATH_MAX + 16];
/* VHDKIT_FUZZ_REPAIR: whether fuzz_should_repair is asked at all. */
static bool repair_enabled = true;

/* A 3 MiB fixed parent that a crafted child may point at by the name
 * "parent.vhd"; created once with the library itself.
 */
static void
make_parent (void)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  vhd_disk *d;

  p.version2.maximum_size = 3 << 20;
  memset (&p.version2.unique_id, 0x5a, sizeof p.version2.unique_id);
  if (vhd_create_virtual_disk (&st, parent_path, VHD_ACCESS_NONE, NULL,
                               VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION |
                               VHD_CREATE_FLAG_SPARSE_FILE, 0, &p, NULL,
                               &d) < 0) {
    fprintf (stderr, "fuzz: creating %s: %s\n", parent_path,
             vhd_last_error ());
    abort ();
  }
  vhd_close (d);
}

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

/* libFuzzer leaves through exit() when a run ends (time or run limit),
 * so the scratch folder goes then; a crash keeps it for a look.
 */
static void
remove_scratch (void)
{
  unlink (image_path);
  unlink (parent_path);
  rmdir (dir);
}

/* Load every template of a colon-separated list, in order: a file that
 * cannot serve is a mistake of the caller's, not a reason to fuzz
 * without it.
 */
static void
load_templates (const char *list)
{
  char *copy = strdup (list), *save = NULL;

  if (copy == NULL)
    abort ();
  for (char *path = strtok_r (copy, ":", &save); path != NULL;
       path = strtok_r (NULL, ":", &save))
    if (fuzz_vhdx_template_load (path) < 0)
      abort ();
  free (copy);
}

/* The seeds for VHDKIT_FUZZ_VHDX_SEED: one per template into a folder,
 * or the only template's into a file.
 */
static void
write_template_seeds (const char *path)
{
  size_t n = fuzz_vhdx_template_count ();
  struct stat st;

  if (stat (path, &st) == 0 && S_ISDIR (st.st_mode)) {
    for (size_t i = 0; i < n; i++) {
      const char *name = fuzz_vhdx_template_path (i);
      const char *slash = strrchr (name, '/');
      char seed[PATH_MAX];

      if (snprintf (seed, sizeof seed, "%s/%02zu-%s.vhdxtmpl", path, i,
                    slash ? slash + 1 : name) >= (int) sizeof seed ||
          fuzz_vhdx_template_write_seed (i, seed) < 0) {
        fprintf (stderr, "fuzz: cannot write the VHDX seed %s\n", seed);
        abort ();
      }
    }
    return;
  }
  if (n != 1) {
    fprintf (stderr, "fuzz: VHDKIT_FUZZ_VHDX_SEED=%s: %zu templates"
             " loaded: name a folder for their seeds\n", path, n);
    abort ();
  }
  if (fuzz_vhdx_template_write_seed (0, path) < 0) {
    fprintf (stderr, "fuzz: cannot write the VHDX seed %s\n", path);
    abort ();
  }
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  const char *tmp = getenv ("TMPDIR");

  if (snprintf (dir, sizeof dir, "%s/vhdkit-fuzz-XXXXXX",
                tmp ? tmp : "/tmp") >= (int) sizeof dir ||
      mkdtemp (dir) == NULL) {
    fprintf (stderr, "fuzz: cannot make a scratch folder under %s\n",
             tmp ? tmp : "/tmp");
    abort ();
  }
  atexit (remove_scratch);
  snprintf (image_path, sizeof image_path, "%s/image.vhd", dir);
  snprintf (parent_path, sizeof parent_path, "%s/parent.vhd", dir);
  make_parent ();
  if ((tmp = getenv ("VHDKIT_FUZZ_REPAIR")) != NULL && *tmp) {
    if (strcmp (tmp, "0") != 0 && strcmp (tmp, "1") != 0) {
      fprintf (stderr, "fuzz: VHDKIT_FUZZ_REPAIR=%s: 0 or 1\n", tmp);
      abort ();
    }
    repair_enabled = strcmp (tmp, "1") == 0;
  }
  /* VHDX inputs as patches of templates (fuzz-vhdx-template.h), and the
   * seeds that give back the templates themselves.
   */
  if ((tmp = getenv ("VHDKIT_FUZZ_VHDX_TEMPLATE")) != NULL && *tmp)
    load_templates (tmp);
  if ((tmp = getenv ("VHDKIT_FUZZ_VHDX_SEED")) != NULL && *tmp)
    write_template_seeds (tmp);
  return 0;
}

static int
count_extent (void *opaque, uint64_t offset, uint64_t length, uint32_t flags)
{
  (*(uint64_t *) opaque) += length;
  return 0;
}

static void
exercise (vhd_disk *disk, const uint8_t *data, size_t size)
{
  struct vhd_image_info info;
  uint64_t disk_size = vhd_get_size (disk), seen = 0;
  static uint8_t buf[1 << 20];

  vhd_get_image_info (disk, &info);
  /* The start, the end, and a few offsets the input chooses. */
  vhd_pread (disk, buf, disk_size < sizeof buf ? disk_size : sizeof buf, 0);
  if (disk_size >= 4096)
    vhd_pread (disk, buf, 4096, disk_size - 4096);
  for (size_t i = 0; i + 8 <= size && i < 64; i += 8) {
    uint64_t off;
    memcpy (&off, data + i, 8);
    if (disk_size)
      vhd_pread (disk, buf, 777, off % disk_size);
  }
  vhd_extents (disk, disk_size < (64u << 20) ? disk_size : (64u << 20), 0,
               count_extent, &seen);
}

/* Write the input as the image, its checksums repaired when
 * fuzz_should_repair says so.  libFuzzer's buffer is read-only: the
 * repair works on a copy.
 */
static void
write_image (const uint8_t *data, size_t size)
{
  bool repair = repair_enabled && size > 0 &&
                fuzz_should_repair (data, size);
  uint8_t *copy = NULL;
  int fd;

  if (fuzz_vhdx_template_applies (data, size)) {
    unlink (image_path);
    fd = open (image_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd == -1 || fuzz_vhdx_template_write (fd, data, size, repair) < 0)
      abort ();
    close (fd);
    return;
  }
  if (repair) {
    copy = malloc (size);
    if (copy == NULL)
      abort ();
    memcpy (copy, data, size);
    fuzz_repair (copy, size);
    data = copy;
  }
  unlink (image_path);
  fd = open (image_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd == -1 || write (fd, data, size) != (ssize_t) size)
    abort ();
  close (fd);
  free (copy);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct vhd_open_options ro = { .readonly = true };
  struct vhd_check_result result;
  vhd_disk *disk;

  write_image (data, size);

  if (vhd_open (image_path, &ro, &disk) == 0) {
    exercise (disk, data, size);
    vhd_close (disk);
  }
  /* Writes through a hostile image: allocation, bitmaps, zero, trim. */
  if (size > 0 && (data[0] & 1)) {
    struct vhd_open_options rw = { .readonly = false };
    if (vhd_open (image_path, &rw, &disk) == 0) {
      static uint8_t block[8192];
      uint64_t disk_size = vhd_get_size (disk), off = 0;
      if (size >= 16)
        memcpy (&off, data + 8, 8);
      memset (block, data[0], sizeof block);
      if (disk_size > sizeof block) {
        off %= disk_size - sizeof block;
        vhd_pwrite (disk, block, sizeof block, off, 0);
        vhd_pwrite (disk, block, 100, off + 3, VHD_IO_FUA);
        vhd_zero (disk, 4096, off & ~4095ull, VHD_IO_MAY_TRIM);
        vhd_trim (disk, 1 << 20, 0, 0);
      }
      vhd_flush (disk);
      vhd_close (disk);
      if (vhd_open (image_path, &ro, &disk) == 0) {
        exercise (disk, data, size);
        vhd_close (disk);
      }
    }
  }
  vhd_check (image_path, &ro, 0, NULL, NULL, &result);
  return 0;
}
