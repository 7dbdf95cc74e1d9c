/* Crash consistency of the writers that are not a workload on an open
 * disk: create (each type, in each of create.c's layouts), convert (create
 * from a source disk, as `vhdtool convert` runs it, in the background),
 * and `vhdtool check --repair`.
 *
 * Create is recorded from before its file exists (crash_record_create):
 * the file's bytes, and what happens to its names in the target folder
 * (the temporary name, the link or rename to the final name, the unlink of
 * the temporary name, the folder's fsync).  Power is then lost at every
 * op: the file keeps what its last fsync made durable plus a subset of the
 * later ops (none, all, random subsets, torn into 512-byte sectors), and
 * the folder keeps the names its last fsync made durable plus any prefix
 * of the later name changes (a journalling file system applies them in
 * order).  In every state:
 *  - the final name is absent, or it names a complete image: vhd_check
 *    finds nothing at all (no corruption, leak or footer to restore), it
 *    opens read-only with the requested type and size, and reads what the
 *    create promised (zeros, the parent's contents, or the source's);
 *  - once vhd_create_virtual_disk has returned, the name is there in
 *    every state (the folder's fsync made it durable);
 *  - the parent of a differencing disk and the source are never written;
 *  - a sample of the states with the name present is read by the spec
 *    reader (tests/vhd-chain-read.py) too, and must read the same.
 * The three layouts are reached by making the file system refuse
 * O_TMPFILE, and hard links too (crash_set_fs_kind), as tmpfs-less or
 * vfat folders do.
 *
 * Repair is recorded on an image that an interrupted allocation left
 * behind (a block written past the BAT's last entry, with or without the
 * new trailing footer): after a crash at any op of the repair, the image
 * must check without corruption, read the same as before the repair, and
 * a second repair must leave it fully clean, still reading the same.
 *
 * Environment: VHDKIT_SRCDIR (set by make) finds the spec reader;
 * VHDKIT_CRASH_SUBSETS random states per crash point (default 2).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "vhdkit.h"
#include "crashsim.h"
#include "scratch.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define BLOCK_SIZE (512 * KiB)
#define DISK_SIZE (6 * MiB)      /* 12 blocks */
#define TARGET "disk.vhd"
#define SPEC_EVERY 9
#define MAX_SPEC 24

static unsigned random_subsets = 2;

enum life_type { LIFE_FIXED, LIFE_DYNAMIC, LIFE_DIFFERENCING };
enum life_source { SRC_NONE, SRC_RAW, SRC_VHD };

struct life {
  const char *name;
  enum crash_fs_kind fs;
  enum life_type type;
  enum life_source source;

  char base[300], out_dir[320], target[400], other[400];
  uint8_t *expected;            /* what the new disk must read */
  uint8_t *got;
  size_t returned_at;           /* the log's length when create returned */
  char spec[MAX_SPEC][420];
  size_t n_spec;

  size_t points, states, present, leftovers;
  unsigned failures;
};

static struct {
  size_t runs, ops, points, states, present, spec_reads;
  unsigned failures;
} totals;

static const char *
fs_name (enum crash_fs_kind fs)
{
  return fs == CRASH_FS_TMPFILE ? "O_TMPFILE + linkat"
         : fs == CRASH_FS_NO_TMPFILE ? "temporary name + linkat + unlinkat"
         : "temporary name + renameat2";
}

static void
life_fail (struct life *L, size_t k, const char *state, const char *fmt, ...)
{
  va_list ap;

  L->failures++;
  if (L->failures > 10)
    return;
  fprintf (stderr, "\nCRASH FAILURE in %s (%s): power lost at op %zu of %zu"
           " (create returned at %zu), state %s: ", L->name, fs_name (L->fs),
           k, crash_n_ops (), L->returned_at, state);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
}

/* A recognisable pattern in some sectors of some blocks: the first block
 * whole, a block in the middle partly, the last sector of the disk, and
 * a run crossing a block boundary; the rest stays zero (a convert skips
 * it).
 */
static void
fill_pattern (uint8_t *disk, uint64_t seed)
{
  static const struct { uint64_t at, len; } runs[] = {
    { 0, BLOCK_SIZE },
    { 3 * BLOCK_SIZE + 4 * KiB, 60 * KiB },
    { 6 * BLOCK_SIZE - 8 * KiB, 16 * KiB },
    { DISK_SIZE - 512, 512 },
  };

  memset (disk, 0, DISK_SIZE);
  for (size_t i = 0; i < sizeof runs / sizeof runs[0]; i++)
    for (uint64_t b = 0; b < runs[i].len; b++)
      disk[runs[i].at + b] = (uint8_t) (((runs[i].at + b) >> 9) * 131
                                        + (b & 0xff) + seed) | 1;
}

static vhd_disk *
create_plain (const char *path, bool fixed, const char *parent)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_2 };
  vhd_disk *d = NULL;
  int r;

  p.version2.maximum_size = parent ? 0 : DISK_SIZE;
  p.version2.block_size_in_bytes = fixed ? 0 : BLOCK_SIZE;
  p.version2.parent_path = parent;
  r = vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                               fixed ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                                     : 0,
                               0, &p, NULL, &d);
  if (r < 0)
    fprintf (stderr, "create %s: %s\n", path, vhd_last_error ());
  return r < 0 ? NULL : d;
}

/* A dynamic disk holding the pattern, written through the engine. */
static void
make_pattern_vhd (const char *path, const uint8_t *contents)
{
  vhd_disk *d = create_plain (path, false, NULL);

  assert_non_null (d);
  assert_int_equal (vhd_pwrite (d, contents, DISK_SIZE, 0, 0), 0);
  vhd_close (d);
}

static void
make_raw (const char *path, const uint8_t *contents)
{
  FILE *f = fopen (path, "wb");

  assert_non_null (f);
  assert_int_equal (fwrite (contents, 1, DISK_SIZE, f), DISK_SIZE);
  assert_int_equal (fclose (f), 0);
}

/* The disk under test, created as the run asks; the source's way goes
 * through the overlapped (background) path that `vhdtool convert` takes.
 */
static int
create_recorded (struct life *L, vhd_disk **d)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_2 };
  struct vhd_overlapped ov = { .event_fd = -1 };
  uint32_t flags = L->type == LIFE_FIXED
                   ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION : 0;
  int r;

  p.version2.block_size_in_bytes = L->type == LIFE_FIXED ? 0 : BLOCK_SIZE;
  if (L->type == LIFE_DIFFERENCING)
    p.version2.parent_path = L->other;
  else if (L->source != SRC_NONE)
    p.version2.source_path = L->other;
  else
    p.version2.maximum_size = DISK_SIZE;
  if (L->source == SRC_NONE)
    return vhd_create_virtual_disk (&st, L->target, VHD_ACCESS_NONE, NULL,
                                    flags, 0, &p, NULL, d);
  r = vhd_create_virtual_disk (&st, L->target, VHD_ACCESS_NONE, NULL, flags,
                               0, &p, &ov, d);
  if (r == -EINPROGRESS)
    r = vhd_get_overlapped_result (&ov, true);
  return r;
}

/* Does the log show the layout that the file system kind leads to? */
static void
assert_layout (const struct life *L, size_t n)
{
  size_t adds = 0, removes = 0, moves = 0, dir_syncs_after = 0;
  bool target_seen = false;

  for (size_t i = 0; i < n; i++) {
    const struct crash_op *op = crash_get_op (i);
    if (op->kind == CRASH_OP_NAME_ADD)
      adds++;
    if (op->kind == CRASH_OP_NAME_REMOVE)
      removes++;
    if (op->kind == CRASH_OP_NAME_MOVE)
      moves++;
    if (op->name && strcmp (op->name, TARGET) == 0)
      target_seen = true;
    if (op->kind == CRASH_OP_DIR_SYNC && target_seen)
      dir_syncs_after++;
  }
  printf ("%s: %s: %zu file ops; names: %zu made, %zu removed, %zu"
          " renamed; %zu folder fsync(s) after the final name\n",
          L->name, fs_name (L->fs), n, adds, removes, moves, dir_syncs_after);
  assert_true (target_seen);
  switch (L->fs) {
  case CRASH_FS_TMPFILE:
    assert_true (adds == 1 && removes == 0 && moves == 0);
    break;
  case CRASH_FS_NO_TMPFILE:
    assert_true (adds == 2 && removes == 1 && moves == 0);
    break;
  case CRASH_FS_NO_LINKS:
    assert_true (adds == 1 && removes == 0 && moves == 1);
    break;
  }
}

/* The names in the folder after ops [0, durable) and the first `extra`
 * name changes among [durable, k): is TARGET there, and a temporary one?
 */
static void
names_after (size_t durable, size_t k, size_t extra, bool *target,
             bool *temp)
{
  char *names[4] = { NULL };
  size_t n = 0;

  for (size_t i = 0; i < k; i++) {
    const struct crash_op *op = crash_get_op (i);
    if (op->kind < CRASH_OP_NAME_ADD || op->kind == CRASH_OP_DIR_SYNC)
      continue;
    if (i >= durable) {
      if (extra == 0)
        break;
      extra--;
    }
    if (op->kind == CRASH_OP_NAME_REMOVE || op->kind == CRASH_OP_NAME_MOVE)
      for (size_t j = 0; j < n; j++)
        if (strcmp (names[j], op->kind == CRASH_OP_NAME_MOVE ? op->old_name
                                                             : op->name) == 0)
          names[j] = names[--n];
    if ((op->kind == CRASH_OP_NAME_ADD || op->kind == CRASH_OP_NAME_MOVE) &&
        n < sizeof names / sizeof names[0])
      names[n++] = op->name;
  }
  *target = *temp = false;
  for (size_t j = 0; j < n; j++) {
    if (strcmp (names[j], TARGET) == 0)
      *target = true;
    else
      *temp = true;
  }
}

static size_t
pending_name_ops (size_t durable, size_t k)
{
  size_t m = 0;
  for (size_t i = durable; i < k; i++) {
    enum crash_op_kind kind = crash_get_op (i)->kind;
    m += kind >= CRASH_OP_NAME_ADD && kind != CRASH_OP_DIR_SYNC;
  }
  return m;
}

static uint32_t
expected_type (const struct life *L)
{
  return L->type == LIFE_FIXED ? VHD_TYPE_FIXED
         : L->type == LIFE_DYNAMIC ? VHD_TYPE_DYNAMIC
         : VHD_TYPE_DIFFERENCING;
}

static void
print_finding (void *opaque, int kind, const char *message)
{
  (void) opaque;
  (void) kind;
  fprintf (stderr, "  check: %s\n", message);
}

/* One state of the file under the final name. */
static void
check_named_state (struct life *L, const struct crash_file *f, size_t k,
                   const char *state)
{
  struct vhd_check_result res;
  /* The parent sits one folder up, beside the new disk's folder. */
  const char *const parent_dirs[] = { L->base, NULL };
  struct vhd_open_options ro = { .readonly = true,
                                 .parent_dirs = parent_dirs };
  struct vhd_image_info info;
  vhd_disk *d;

  L->states++;
  L->present++;
  if (crash_file_save (f, L->target) < 0) {
    life_fail (L, k, state, "cannot save the rebuilt file");
    return;
  }
  if (vhd_check (L->target, &ro, 0, NULL, NULL, &res) < 0) {
    life_fail (L, k, state, "vhd_check: %s", vhd_last_error ());
    return;
  }
  if (res.corruptions || res.leaks || res.recoverable) {
    vhd_check (L->target, &ro, 0, print_finding, NULL, &res);
    life_fail (L, k, state, "the new disk is not clean: %u corruption(s),"
               " %u leak(s), %u recoverable", res.corruptions, res.leaks,
               res.recoverable);
    return;
  }
  if (vhd_open (L->target, &ro, &d) < 0) {
    life_fail (L, k, state, "open: %s", vhd_last_error ());
    return;
  }
  if (vhd_get_image_info (d, &info) < 0 || info.disk_type != expected_type (L)
      || vhd_get_size (d) != DISK_SIZE)
    life_fail (L, k, state, "type %u size %" PRIu64 ", expected type %u"
               " size %" PRIu64, info.disk_type, vhd_get_size (d),
               expected_type (L), DISK_SIZE);
  else if (vhd_pread (d, L->got, DISK_SIZE, 0) < 0)
    life_fail (L, k, state, "read: %s", vhd_last_error ());
  else if (memcmp (L->got, L->expected, DISK_SIZE) != 0) {
    uint64_t b = 0;
    while (L->got[b] == L->expected[b])
      b++;
    life_fail (L, k, state, "byte %" PRIu64 " reads 0x%02x, the create"
               " promised 0x%02x", b, L->got[b], L->expected[b]);
  }
  vhd_close (d);
  if (L->present % SPEC_EVERY == 1 && L->n_spec < MAX_SPEC) {
    snprintf (L->spec[L->n_spec], sizeof L->spec[0], "%s/spec-%zu.vhd",
              L->out_dir, L->n_spec);
    if (crash_file_save (f, L->spec[L->n_spec]) == 0)
      L->n_spec++;
  }
}

static struct rng
state_rng (size_t k, unsigned state)
{
  struct rng r = { 0x11fecafeULL ^ ((uint64_t) k << 8) ^ state };
  rng_next (&r);
  return r;
}

/* Every data state of crash point k: none of the pending ops, all in
 * order, random subsets, and one torn.
 */
static void
check_data_states (struct life *L, const struct crash_file *durable_file,
                   size_t durable, size_t k, struct crash_file *work,
                   struct crash_piece *pieces)
{
  check_named_state (L, durable_file, k, "none");
  if (k == durable)
    return;
  crash_file_copy (work, durable_file);
  for (size_t i = durable; i < k; i++)
    crash_file_apply (work, crash_get_op (i), 0, crash_get_op (i)->length);
  check_named_state (L, work, k, "all");
  for (unsigned j = 0; j <= random_subsets; j++) {
    bool torn = j == random_subsets;
    struct rng r = state_rng (k, j);
    size_t n = crash_random_pieces (durable, k, torn, &r, pieces);
    char label[32];

    crash_file_copy (work, durable_file);
    for (size_t i = 0; i < n; i++)
      crash_file_apply (work, crash_get_op (pieces[i].op), pieces[i].offset,
                        pieces[i].length);
    snprintf (label, sizeof label, torn ? "torn" : "random-%u", j + 1);
    check_named_state (L, work, k, label);
  }
}

/* The independent reader reads the sampled states; the engine's reading
 * was already compared with what the create promised.
 */
static void
spec_read (struct life *L)
{
  const char *srcdir = getenv ("VHDKIT_SRCDIR");
  char cmd[1400], out[450];

  if (L->n_spec == 0) {
    life_fail (L, 0, "-", "no state was sampled for the spec reader");
    return;
  }
  assert_non_null (srcdir);
  for (size_t i = 0; i < L->n_spec; i++) {
    FILE *f;
    size_t n;

    snprintf (out, sizeof out, "%s.raw", L->spec[i]);
    snprintf (cmd, sizeof cmd, "python3 '%s/vhd-chain-read.py' read '%s'"
              " '%s'%s%s%s", srcdir, out, L->spec[i],
              L->type == LIFE_DIFFERENCING ? " '" : "",
              L->type == LIFE_DIFFERENCING ? L->other : "",
              L->type == LIFE_DIFFERENCING ? "'" : "");
    if (system (cmd) != 0) {
      life_fail (L, 0, "-", "the spec reader refuses %s", L->spec[i]);
      continue;
    }
    f = fopen (out, "rb");
    assert_non_null (f);
    n = fread (L->got, 1, DISK_SIZE, f);
    fclose (f);
    if (n != DISK_SIZE || memcmp (L->got, L->expected, DISK_SIZE) != 0)
      life_fail (L, 0, "-", "the spec reader reads %s differently", L->spec[i]);
    totals.spec_reads++;
    unlink (out);
  }
}

static void
run_life (struct life *L)
{
  struct crash_file durable_file, work;
  struct crash_piece *pieces;
  size_t n, applied = 0;
  vhd_disk *d = NULL;
  int r;

  snprintf (L->base, sizeof L->base, "%s/%s", dir, L->name);
  snprintf (L->out_dir, sizeof L->out_dir, "%s/out", L->base);
  snprintf (L->target, sizeof L->target, "%s/%s", L->out_dir, TARGET);
  assert_int_equal (mkdir (L->base, 0755), 0);
  assert_int_equal (mkdir (L->out_dir, 0755), 0);
  L->expected = calloc (1, DISK_SIZE);
  L->got = malloc (DISK_SIZE);
  assert_non_null (L->expected);
  assert_non_null (L->got);

  if (L->type == LIFE_DIFFERENCING || L->source != SRC_NONE) {
    fill_pattern (L->expected, L->type == LIFE_DIFFERENCING ? 7 : 3);
    snprintf (L->other, sizeof L->other, "%s/%s", L->base,
              L->source == SRC_RAW ? "source.img" : "other.vhd");
    if (L->source == SRC_RAW)
      make_raw (L->other, L->expected);
    else
      make_pattern_vhd (L->other, L->expected);
    assert_int_equal (crash_forbid_writes (L->other), 0);
  }

  crash_set_fs_kind (L->fs);
  assert_int_equal (crash_record_create (L->out_dir), 0);
  r = create_recorded (L, &d);
  if (r < 0)
    fprintf (stderr, "%s: create: %s\n", L->name, vhd_last_error ());
  assert_int_equal (r, 0);
  L->returned_at = crash_n_ops ();
  vhd_close (d);
  crash_record_stop ();
  crash_set_fs_kind (CRASH_FS_TMPFILE);
  crash_forbid_clear ();
  assert_int_equal (crash_violations (), 0);
  n = crash_n_ops ();
  assert_layout (L, n);

  assert_int_equal (crash_file_init (&durable_file), 0);
  memset (&work, 0, sizeof work);
  pieces = malloc ((crash_count_pieces (0, n) + 1) * sizeof *pieces);
  assert_non_null (pieces);
  for (size_t k = 0; k <= n; k++) {
    size_t durable = crash_durable_prefix (k);
    size_t names_durable = crash_names_durable_prefix (k);
    size_t m = pending_name_ops (names_durable, k);
    bool any_present = false;

    L->points++;
    for (; applied < durable; applied++)
      crash_file_apply (&durable_file, crash_get_op (applied), 0,
                        crash_get_op (applied)->length);
    for (size_t extra = 0; extra <= m; extra++) {
      bool target, temp;
      names_after (names_durable, k, extra, &target, &temp);
      L->leftovers += temp;
      if (target)
        any_present = true;
      else if (k >= L->returned_at) {
        L->states++;
        life_fail (L, k, "names", "create had returned, but the folder"
                   " can lose the name %s (%zu of %zu later name changes"
                   " kept)", TARGET, extra, m);
      }
      else
        L->states++;            /* absent before it returned: allowed */
    }
    if (any_present)
      check_data_states (L, &durable_file, durable, k, &work, pieces);
  }
  spec_read (L);
  free (pieces);
  crash_file_free (&durable_file);
  crash_file_free (&work);
  crash_record_free ();

  printf ("%s: %zu crash points, %zu states (%zu with the name, checked"
          " and read; %zu with a temporary name left), %zu read by the spec"
          " reader, %u failures\n", L->name, L->points, L->states, L->present,
          L->leftovers, L->n_spec, L->failures);
  fflush (stdout);
  totals.runs++;
  totals.ops += n;
  totals.points += L->points;
  totals.states += L->states;
  totals.present += L->present;
  totals.failures += L->failures;
  free (L->expected);
  free (L->got);
  assert_int_equal (L->failures, 0);
}

#define LIFE_TEST(fn, fs_, type_, source_)              \
  static void                                           \
  fn (void **state)                                     \
  {                                                     \
    struct life L = {                                   \
      .name = #fn, .fs = fs_, .type = type_,            \
      .source = source_,                                \
    };                                                  \
    (void) state;                                       \
    run_life (&L);                                      \
  }

LIFE_TEST (create_fixed_tmpfile, CRASH_FS_TMPFILE, LIFE_FIXED, SRC_NONE)
LIFE_TEST (create_fixed_tempname, CRASH_FS_NO_TMPFILE, LIFE_FIXED, SRC_NONE)
LIFE_TEST (create_fixed_rename, CRASH_FS_NO_LINKS, LIFE_FIXED, SRC_NONE)
LIFE_TEST (create_dynamic_tmpfile, CRASH_FS_TMPFILE, LIFE_DYNAMIC, SRC_NONE)
LIFE_TEST (create_dynamic_tempname, CRASH_FS_NO_TMPFILE, LIFE_DYNAMIC,
           SRC_NONE)
LIFE_TEST (create_dynamic_rename, CRASH_FS_NO_LINKS, LIFE_DYNAMIC, SRC_NONE)
LIFE_TEST (create_diff_tmpfile, CRASH_FS_TMPFILE, LIFE_DIFFERENCING, SRC_NONE)
LIFE_TEST (create_diff_tempname, CRASH_FS_NO_TMPFILE, LIFE_DIFFERENCING,
           SRC_NONE)
LIFE_TEST (create_diff_rename, CRASH_FS_NO_LINKS, LIFE_DIFFERENCING,
           SRC_NONE)
LIFE_TEST (convert_raw_to_dynamic, CRASH_FS_TMPFILE, LIFE_DYNAMIC, SRC_RAW)
LIFE_TEST (convert_raw_to_fixed, CRASH_FS_TMPFILE, LIFE_FIXED, SRC_RAW)
LIFE_TEST (convert_vhd_to_dynamic, CRASH_FS_TMPFILE, LIFE_DYNAMIC, SRC_VHD)
LIFE_TEST (convert_vhd_to_fixed_tempname, CRASH_FS_NO_TMPFILE, LIFE_FIXED,
           SRC_VHD)
LIFE_TEST (convert_raw_to_dynamic_rename, CRASH_FS_NO_LINKS, LIFE_DYNAMIC,
           SRC_RAW)

/* ---- check --repair ---- */

enum damage {
  DAMAGE_LEAK,                  /* block and new footer written, BAT not */
  DAMAGE_NO_FOOTER,             /* block written over the footer, no new
                                 * footer: only the copy at 0 is left */
};

static uint64_t
file_size_of (const char *path)
{
  struct stat st;
  assert_int_equal (stat (path, &st), 0);
  return (uint64_t) st.st_size;
}

static void
pwrite_all (int fd, const void *buf, size_t n, uint64_t at)
{
  assert_int_equal (pwrite (fd, buf, n, (off_t) at), (ssize_t) n);
}

/* What an allocation that lost power before its BAT entry leaves: the
 * block's bitmap and data where the trailing footer was, and then
 * (DAMAGE_LEAK) the new trailing footer after it, or (DAMAGE_NO_FOOTER)
 * nothing.
 */
static void
interrupt_allocation (const char *path, enum damage damage)
{
  uint64_t size = file_size_of (path), footer_at = size - 512;
  uint8_t footer[512], *block = malloc (512 + BLOCK_SIZE);
  int fd = open (path, O_RDWR | O_CLOEXEC);

  assert_true (fd >= 0);
  assert_non_null (block);
  assert_int_equal (pread (fd, footer, sizeof footer, (off_t) footer_at),
                    512);
  memset (block, 0xff, 512);
  for (uint64_t i = 512; i < 512 + BLOCK_SIZE; i++)
    block[i] = (uint8_t) (i * 7 + 1);
  pwrite_all (fd, block, 512 + BLOCK_SIZE, footer_at);
  if (damage == DAMAGE_LEAK)
    pwrite_all (fd, footer, sizeof footer, footer_at + 512 + BLOCK_SIZE);
  assert_int_equal (close (fd), 0);
  free (block);
}

static void
read_all_ro (const char *path, uint8_t *got)
{
  struct vhd_open_options ro = { .readonly = true };
  vhd_disk *d;

  assert_int_equal (vhd_open (path, &ro, &d), 0);
  assert_int_equal (vhd_pread (d, got, DISK_SIZE, 0), 0);
  vhd_close (d);
}

static unsigned repair_failures;

static void
repair_state (const char *path, const struct crash_file *f, size_t k,
              const char *state, const uint8_t *expected, uint8_t *got)
{
  struct vhd_check_result res;
  struct vhd_open_options ro = { .readonly = true };
  vhd_disk *d;
  const char *why = NULL;

  totals.states++;
  if (crash_file_save (f, path) < 0)
    why = "cannot save the rebuilt file";
  else if (vhd_check (path, NULL, 0, NULL, NULL, &res) < 0 ||
           res.corruptions)
    why = "the interrupted repair left corruption";
  else if (vhd_open (path, &ro, &d) < 0)
    why = "the interrupted repair left an image that does not open";
  else {
    int r = vhd_pread (d, got, DISK_SIZE, 0);
    vhd_close (d);
    if (r < 0 || memcmp (got, expected, DISK_SIZE) != 0)
      why = "the interrupted repair changed what the disk reads";
    else if (vhd_check (path, NULL, VHD_CHECK_REPAIR, NULL, NULL, &res) < 0
             || res.corruptions || res.leaks || res.recoverable)
      why = "a second repair does not finish the job";
    else if (vhd_check (path, NULL, 0, NULL, NULL, &res) < 0
             || res.corruptions || res.leaks || res.recoverable)
      why = "after the second repair, check still finds something";
    else {
      read_all_ro (path, got);
      if (memcmp (got, expected, DISK_SIZE) != 0)
        why = "the second repair changed what the disk reads";
    }
  }
  if (why) {
    repair_failures++;
    fprintf (stderr, "\nCRASH FAILURE in check --repair: power lost at op"
             " %zu, state %s: %s\n", k, state, why);
    vhd_check (path, NULL, 0, print_finding, NULL, &res);
  }
}

static void
run_repair (const char *name, enum damage damage)
{
  char base[300], path[400];
  uint8_t *expected = malloc (DISK_SIZE), *got = malloc (DISK_SIZE);
  struct vhd_check_result res;
  struct crash_file durable_file, work;
  size_t n, applied = 0;
  unsigned before = repair_failures;

  assert_non_null (expected);
  assert_non_null (got);
  snprintf (base, sizeof base, "%s/%s", dir, name);
  snprintf (path, sizeof path, "%s/disk.vhd", base);
  assert_int_equal (mkdir (base, 0755), 0);
  fill_pattern (expected, 5);
  make_pattern_vhd (path, expected);
  interrupt_allocation (path, damage);

  /* The damage is what the repair is for, and loses nothing. */
  assert_int_equal (vhd_check (path, NULL, 0, NULL, NULL, &res), 0);
  assert_int_equal (res.corruptions, 0);
  /* A lost trailing footer is recoverable (the copy at 0 stands in);
   * the orphaned block behind it is then part of the tail that the
   * repair cuts, counted as a leak only when a footer follows it.
   */
  if (damage == DAMAGE_LEAK)
    assert_true (res.leaks > 0);
  else
    assert_true (res.recoverable > 0);
  read_all_ro (path, got);
  assert_memory_equal (got, expected, DISK_SIZE);

  assert_int_equal (crash_record_start (path), 0);
  assert_int_equal (vhd_check (path, NULL, VHD_CHECK_REPAIR, NULL, NULL,
                               &res), 0);
  crash_record_stop ();
  assert_int_equal (res.corruptions + res.leaks + res.recoverable, 0);
  assert_true (res.repaired > 0);
  n = crash_n_ops ();
  assert_true (n > 0);

  assert_int_equal (crash_file_init (&durable_file), 0);
  memset (&work, 0, sizeof work);
  for (size_t k = 0; k <= n; k++) {
    size_t durable = crash_durable_prefix (k);

    totals.points++;
    for (; applied < durable; applied++)
      crash_file_apply (&durable_file, crash_get_op (applied), 0,
                        crash_get_op (applied)->length);
    repair_state (path, &durable_file, k, "none", expected, got);
    if (k == durable)
      continue;
    crash_file_copy (&work, &durable_file);
    for (size_t i = durable; i < k; i++)
      crash_file_apply (&work, crash_get_op (i), 0, crash_get_op (i)->length);
    repair_state (path, &work, k, "all", expected, got);
    /* Every subset and order of so few ops: each op in or out, and the
     * two orders of each pair (a sector is never torn: the footer is one).
     */
    for (unsigned mask = 0; mask < (1u << (k - durable)) && k - durable < 8;
         mask++)
      for (int reverse = 0; reverse <= 1; reverse++) {
        char label[40];
        crash_file_copy (&work, &durable_file);
        for (size_t j = 0; j < k - durable; j++) {
          size_t i = reverse ? k - 1 - j : durable + j;
          if (mask & (1u << (i - durable)))
            crash_file_apply (&work, crash_get_op (i), 0,
                              crash_get_op (i)->length);
        }
        snprintf (label, sizeof label, "subset 0x%x%s", mask,
                  reverse ? " reversed" : "");
        repair_state (path, &work, k, label, expected, got);
      }
  }
  crash_file_free (&durable_file);
  crash_file_free (&work);
  crash_record_free ();
  printf ("%s: the repair made %zu file ops; every crash point and subset"
          " checked; %u failures\n", name, n, repair_failures - before);
  fflush (stdout);
  totals.runs++;
  totals.ops += n;
  free (expected);
  free (got);
  assert_int_equal (repair_failures, before);
}

static void
repair_leak (void **state)
{
  (void) state;
  run_repair ("repair_leak", DAMAGE_LEAK);
}

static void
repair_no_footer (void **state)
{
  (void) state;
  run_repair ("repair_no_footer", DAMAGE_NO_FOOTER);
}

static int
setup (void **state)
{
  const char *e = getenv ("VHDKIT_CRASH_SUBSETS");
  (void) state;
  if (e)
    random_subsets = (unsigned) strtoul (e, NULL, 0);
  return make_scratch ("test-crash-life");
}

static int
teardown (void **state)
{
  (void) state;
  printf ("lifecycle crash runs: %zu runs, %zu file ops recorded, %zu"
          " crash points, %zu states checked (%zu with the new disk's name"
          " present), %zu read by the spec reader, %u failures\n",
          totals.runs, totals.ops, totals.points, totals.states,
          totals.present, totals.spec_reads,
          totals.failures + repair_failures);
  return remove_scratch ();
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (create_fixed_tmpfile),
    cmocka_unit_test (create_fixed_tempname),
    cmocka_unit_test (create_fixed_rename),
    cmocka_unit_test (create_dynamic_tmpfile),
    cmocka_unit_test (create_dynamic_tempname),
    cmocka_unit_test (create_dynamic_rename),
    cmocka_unit_test (create_diff_tmpfile),
    cmocka_unit_test (create_diff_tempname),
    cmocka_unit_test (create_diff_rename),
    cmocka_unit_test (convert_raw_to_dynamic),
    cmocka_unit_test (convert_raw_to_fixed),
    cmocka_unit_test (convert_vhd_to_dynamic),
    cmocka_unit_test (convert_vhd_to_fixed_tempname),
    cmocka_unit_test (convert_raw_to_dynamic_rename),
    cmocka_unit_test (repair_leak),
    cmocka_unit_test (repair_no_footer),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
