/* vhdkit tests: the workload of a crash-consistency run, and the checks of
 * the images that a power loss at each chosen point leaves (crashrun.h).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vhdkit.h"
#include "crashsim.h"
#include "crashrun.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)
#define SECTOR 512u

uint32_t
crash_block_size (const struct crash_run *run)
{
  return run->block_size ? run->block_size : VHD_BLOCK_SIZE_SMALL;
}

const char *
crash_ext (const struct crash_run *run)
{
  return run->vhdx ? "vhdx" : "vhd";
}

double
now_seconds (void)
{
  struct timespec ts;
  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

void
crash_fill_data (uint64_t seed, uint8_t *buf, uint64_t len)
{
  struct rng r = { seed };
  uint64_t i = 0;

  if (seed == 0) {
    memset (buf, 0, len);
    return;
  }
  for (; i + 8 <= len; i += 8) {
    uint64_t v = rng_next (&r);
    memcpy (buf + i, &v, 8);
  }
  if (i < len) {
    uint64_t v = rng_next (&r);
    memcpy (buf + i, &v, len - i);
  }
}

/* The workload -------------------------------------------------------- */

/* Round q out to whole sectors if aligned, then cut it at the disk's end. */
static void
align_and_clip (uint64_t size, bool aligned, struct request *q)
{
  if (aligned) {
    q->offset &= ~(uint64_t) (SECTOR - 1);
    q->length = (q->length + SECTOR - 1) & ~(uint64_t) (SECTOR - 1);
  }
  if (q->length > size - q->offset)
    q->length = size - q->offset;
}

/* A random range: offsets anywhere, lengths 1..max_len, or whole sectors. */
static void
random_range (struct rng *r, uint64_t size, uint64_t max_len, bool aligned,
              struct request *q)
{
  q->length = 1 + rng_below (r, max_len);
  q->offset = rng_below (r, size);
  align_and_clip (size, aligned, q);
}

/* A range across a block boundary (or two). */
static void
crossing_range (struct rng *r, uint64_t size, uint64_t block, bool aligned,
                struct request *q)
{
  uint64_t boundary = block * (1 + rng_below (r, size / block - 1));
  uint64_t max_len = rng_below (r, 4) == 0 ? block + 200 * KiB
                                          : 64 * KiB;

  q->length = 2 + rng_below (r, max_len);
  q->offset = boundary - 1 - rng_below (r, q->length - 1 < boundary
                                           ? q->length - 1 : boundary);
  align_and_clip (size, aligned, q);
}

/* What zero and trim get: small, medium, or whole blocks (one or two):
 * whole_percent of them, or with 0 the default 20%, drawn as it always
 * was so that a seed still gives the workload it gave before.
 */
static void
discard_range (struct rng *r, uint64_t size, uint64_t block,
               unsigned whole_percent, struct request *q)
{
  uint64_t pick = rng_below (r, 10);
  bool aligned = rng_below (r, 2);
  bool whole = whole_percent ? rng_below (r, 100) < whole_percent
                             : pick >= 8;

  if (!whole && pick < (whole_percent ? 5 : 4))
    random_range (r, size, 8 * KiB, aligned, q);
  else if (!whole)
    random_range (r, size, 128 * KiB, aligned, q);
  else {
    q->offset = block * rng_below (r, size / block);
    q->length = block * (1 + rng_below (r, 2));
    if (q->length > size - q->offset)
      q->length = size - q->offset;
  }
}

static void
generate_request (const struct crash_run *run, struct rng *r,
                  struct request *q)
{
  uint64_t p = rng_below (r, 100);
  /* On a big disk most requests stay in the first blocks (the images stay
   * small), the rest reach blocks whose BAT entries and bitmaps lie in
   * other sectors.
   */
  uint64_t size = run->hot_percent && run->disk_size > 4 * MiB &&
                  rng_below (r, 100) < run->hot_percent
                  ? 4 * MiB : run->disk_size;

  memset (q, 0, sizeof *q);
  q->kind = REQ_WRITE;
  q->data_seed = rng_next (r) | 1;
  if (p < 14)
    q->kind = REQ_FLUSH;
  else if (p < 15)
    q->kind = REQ_REOPEN;
  else if (p < 33)
    random_range (r, size, 64 * KiB, true, q);
  else if (p < 51)
    random_range (r, size, 6000, false, q);
  else if (p < 60)
    crossing_range (r, size, crash_block_size (run), rng_below (r, 2), q);
  else if (p < 63) {
    random_range (r, size, 64 * KiB, rng_below (r, 2), q);
    q->data_seed = 0;
  }
  else if (p < 67) {
    random_range (r, size, 32 * KiB, rng_below (r, 2), q);
    q->flags = VHD_IO_FUA;
  }
  else {
    q->kind = p < 87 ? REQ_ZERO : REQ_TRIM;
    discard_range (r, size, crash_block_size (run),
                   run->whole_block_percent, q);
    if (p >= 77 && p < 87)
      q->flags |= VHD_IO_MAY_TRIM;
    if (rng_below (r, 8) == 0)
      q->flags |= VHD_IO_FUA;
  }
}

const char *
crash_request_name (const struct request *q)
{
  switch (q->kind) {
  case REQ_WRITE: return q->data_seed ? "write" : "write-zeros";
  case REQ_ZERO: return q->flags & VHD_IO_MAY_TRIM ? "zero-may-trim" : "zero";
  case REQ_TRIM: return "trim";
  case REQ_FLUSH: return "flush";
  case REQ_REOPEN: return "close+reopen";
  }
  return "?";
}

/* What the disk reads after the request, as the engine documents it:
 * a dynamic disk's trimmed whole sectors read as zeros; a VHD child's
 * are untouched (zeros there would hide the parent), and a VHDX child
 * writes zeros over them (its driver's trim_hides_parent).
 */
void
crash_apply_request (const struct crash_run *run, const struct request *q,
               uint8_t *disk)
{
  uint64_t start, end;

  switch (q->kind) {
  case REQ_WRITE:
    crash_fill_data (q->data_seed, disk + q->offset, q->length);
    break;
  case REQ_ZERO:
    memset (disk + q->offset, 0, q->length);
    break;
  case REQ_TRIM:
    if (run->differencing && !run->vhdx)
      break;
    start = (q->offset + SECTOR - 1) & ~(uint64_t) (SECTOR - 1);
    end = (q->offset + q->length) & ~(uint64_t) (SECTOR - 1);
    if (start < end)
      memset (disk + start, 0, end - start);
    break;
  case REQ_FLUSH:
  case REQ_REOPEN:
    break;
  }
}

int
crash_open_disk (const char *path, bool readonly, vhd_disk **d)
{
  struct vhd_open_options o = { .readonly = readonly };
  int r = vhd_open (path, &o, d);
  if (r < 0)
    fprintf (stderr, "open %s%s: %s\n", path, readonly ? " (read-only)" : "",
             vhd_last_error ());
  return r;
}

uint64_t
crash_virtual_size (const struct crash_run *run)
{
  return run->disk_size + run->gap_length;
}

int
crash_disk_io (const struct crash_run *run, vhd_disk *d, enum crash_io io,
               void *buf, uint64_t length, uint64_t offset, uint32_t flags)
{
  uint8_t *p = buf;
  int r = 0;

  /* Once at least: a request of no bytes still makes its call (FUA). */
  do {
    uint64_t n = length, at = offset;
    uint32_t f = flags;

    if (run->gap_length && offset >= run->gap_at)
      at += run->gap_length;
    else if (run->gap_length && length > run->gap_at - offset)
      n = run->gap_at - offset;
    if (n < length)
      f &= ~(uint32_t) VHD_IO_FUA;
    switch (io) {
    case CRASH_IO_READ: r = vhd_pread (d, p, n, at); break;
    case CRASH_IO_WRITE: r = vhd_pwrite (d, p, n, at, f); break;
    case CRASH_IO_ZERO: r = vhd_zero (d, n, at, f); break;
    case CRASH_IO_TRIM: r = vhd_trim (d, n, at, f); break;
    }
    if (p)
      p += n;
    offset += n;
    length -= n;
  } while (r == 0 && length > 0);
  return r;
}

static int
create_disk (const struct crash_run *run, const char *path, uint64_t size,
             const char *parent, vhd_disk **d)
{
  struct vhd_storage_type st = { run->vhdx ? VHD_STORAGE_DEVICE_VHDX
                                           : VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_2 };
  int r;

  p.version2.maximum_size = parent ? 0 : size;
  p.version2.block_size_in_bytes = crash_block_size (run);
  p.version2.parent_path = parent;
  r = vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL,
                               run->fixed ? VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
                                          : 0, 0, &p, NULL, d);
  if (r < 0)
    fprintf (stderr, "create %s: %s\n", path, vhd_last_error ());
  return r;
}

/* Does the whole disk read as expected?  Prints the first difference. */
static int
disk_matches (const struct crash_run *run, vhd_disk *d,
              const uint8_t *expected, const char *what)
{
  uint64_t size = run->disk_size;
  uint8_t *got = malloc (size);
  int r;

  if (got == NULL)
    return -1;
  r = crash_disk_io (run, d, CRASH_IO_READ, got, size, 0, 0);
  if (r < 0)
    fprintf (stderr, "%s: read: %s\n", what, vhd_last_error ());
  else if (memcmp (got, expected, size) != 0) {
    uint64_t i = 0;
    while (got[i] == expected[i])
      i++;
    fprintf (stderr, "%s: byte %" PRIu64 " reads 0x%02x, expected 0x%02x\n",
             what, i, got[i], expected[i]);
    r = -1;
  }
  free (got);
  return r;
}

static int
read_file (const char *path, uint8_t **bytes, uint64_t *size)
{
  FILE *f = fopen (path, "rb");
  struct stat st;

  if (f == NULL || fstat (fileno (f), &st) == -1) {
    if (f)
      fclose (f);
    return -1;
  }
  *size = (uint64_t) st.st_size;
  *bytes = malloc (*size ? *size : 1);
  if (*bytes == NULL || fread (*bytes, 1, *size, f) != *size) {
    fclose (f);
    return -1;
  }
  fclose (f);
  return 0;
}

/* The parent of a differencing run: every block but each fourth written
 * with a pattern, then part of some of them trimmed, so that the child
 * reads through full, partial and empty parent blocks.
 */
static int
make_parent (struct crash_run *run, struct rng *r)
{
  const struct crash_run parent_run = { .differencing = false };
  const uint64_t bs = crash_block_size (run);
  uint8_t *ref = calloc (1, run->disk_size);
  vhd_disk *d = NULL;
  int ret = -1;

  if (ref == NULL ||
      create_disk (run, run->parent_path, crash_virtual_size (run), NULL,
                   &d) < 0)
    goto out;
  for (uint64_t b = 0; b < run->disk_size / bs; b++) {
    struct request q = {
      .kind = REQ_WRITE, .offset = b * bs, .length = bs,
      .data_seed = rng_next (r) | 1,
    };
    if (b % 4 == 3)
      continue;
    crash_fill_data (q.data_seed, ref + q.offset, q.length);
    if (crash_disk_io (run, d, CRASH_IO_WRITE, ref + q.offset, q.length,
                       q.offset, 0) < 0)
      goto fail;
    if (b % 4 == 1) {
      q.kind = REQ_TRIM;
      q.offset += rng_below (r, bs / 2);
      q.length = 1 + rng_below (r, bs / 2);
      crash_apply_request (&parent_run, &q, ref);
      if (crash_disk_io (run, d, CRASH_IO_TRIM, NULL, q.length, q.offset,
                         0) < 0)
        goto fail;
    }
  }
  if (vhd_flush (d) < 0)
    goto fail;
  if (disk_matches (run, d, ref, "parent") < 0)
    goto out;
  vhd_close (d);
  d = NULL;
  if (read_file (run->parent_path, &run->parent_raw,
                 &run->parent_raw_size) < 0) {
    fprintf (stderr, "%s: cannot read it back\n", run->parent_path);
    goto out;
  }
  run->initial_virtual = ref;
  ref = NULL;
  ret = 0;
  goto out;
 fail:
  fprintf (stderr, "parent %s: %s\n", run->parent_path, vhd_last_error ());
 out:
  if (d)
    vhd_close (d);
  free (ref);
  return ret;
}

static void
add_flush (struct crash_run *run, uint64_t call_seq, size_t log_end)
{
  pthread_mutex_lock (&run->lock);
  run->flushes[run->n_flushes++] = (struct flush_done) { call_seq, log_end };
  pthread_mutex_unlock (&run->lock);
}

static int
execute_request (struct crash_run *run, vhd_disk **d, struct request *q,
                 uint8_t *buf)
{
  int r = 0;

  switch (q->kind) {
  case REQ_WRITE:
    crash_fill_data (q->data_seed, buf, q->length);
    r = crash_disk_io (run, *d, CRASH_IO_WRITE, buf, q->length, q->offset,
                       q->flags);
    break;
  case REQ_ZERO:
    r = crash_disk_io (run, *d, CRASH_IO_ZERO, NULL, q->length, q->offset,
                       q->flags);
    break;
  case REQ_TRIM:
    r = crash_disk_io (run, *d, CRASH_IO_TRIM, NULL, q->length, q->offset,
                       q->flags);
    break;
  case REQ_FLUSH:
    r = vhd_flush (*d);
    break;
  case REQ_REOPEN:
    vhd_close (*d);
    *d = NULL;
    /* vhd_close flushed: what had completed before it is covered. */
    add_flush (run, q->start_seq, crash_n_ops ());
    return crash_open_disk (run->path, false, d);
  }
  if (r < 0)
    fprintf (stderr, "%s: thread %u, request (%s of %" PRIu64 " at %" PRIu64
             "): %s\n", run->name, q->thread, crash_request_name (q),
             q->length, q->offset, vhd_last_error ());
  return r;
}

/* Run one request between its tickets and log positions. */
static int
run_request (struct crash_run *run, vhd_disk **d, struct request *q,
             uint8_t *buf)
{
  int r;

  /* The log length first: every op of q comes after it. */
  q->log_start = crash_n_ops ();
  q->start_seq = __atomic_fetch_add (&run->seq, 1, __ATOMIC_SEQ_CST);
  r = execute_request (run, d, q, buf);
  /* Then the ticket: a flush that takes a later one was called after q
   * completed.
   */
  q->end_seq = __atomic_fetch_add (&run->seq, 1, __ATOMIC_SEQ_CST);
  q->log_end = crash_n_ops ();
  if (r == 0 && (q->kind == REQ_FLUSH || (q->flags & VHD_IO_FUA)))
    add_flush (run, q->start_seq, q->log_end);
  return r;
}

static int
log_models_file (struct crash_run *run)
{
  struct crash_file f;
  uint8_t *real = NULL;
  uint64_t real_size;
  int r = -1;

  if (crash_file_init (&f) < 0)
    return -1;
  for (size_t i = 0; i < crash_n_ops (); i++)
    crash_file_apply (&f, crash_get_op (i), 0, crash_get_op (i)->length);
  if (read_file (run->path, &real, &real_size) < 0)
    fprintf (stderr, "%s: cannot read it\n", run->path);
  else if (real_size != f.size || memcmp (real, f.bytes, f.size) != 0)
    fprintf (stderr, "%s: replaying the %zu recorded ops does not give the"
             " file (%" PRIu64 " bytes replayed, %" PRIu64 " in the file):"
             " the engine changed it in a way that crashsim does not see\n",
             run->name, crash_n_ops (), f.size, real_size);
  else
    r = 0;
  free (real);
  crash_file_free (&f);
  return r;
}

/* Did the user force the pread backend (as check-valgrind does)?  Then
 * every run uses it.  Read before the first run changes the environment.
 */
static bool
user_forced_pread (void)
{
  static int forced = -1;
  if (forced < 0) {
    const char *e = getenv ("VHDKIT_IO");
    forced = e && strcmp (e, "pread") == 0;
  }
  return forced;
}

/* The backend this workload thread got must be the one asked for: a ring
 * run that silently fell back to pread would test nothing new.
 */
static int
check_backend (const struct crash_run *run)
{
  const char *want = run->ring && !user_forced_pread () ? "io_uring"
                                                         : "pread";
  if (strcmp (vhd_io_backend (), want) != 0) {
    fprintf (stderr, "%s: the workload thread uses %s, not %s%s\n",
             run->name, vhd_io_backend (), want,
             run->ring ? " (io_uring is unavailable here: the ring path"
             " cannot be crash-tested; VHDKIT_IO=pread runs every run"
             " on pread)" : "");
    return -1;
  }
  return 0;
}

/* Set up the folder, the parent and the image; start recording. */
static int
prepare (struct crash_run *run, struct rng *r)
{
  vhd_disk *d = NULL;

  run->requests = calloc (run->n_requests + 1, sizeof *run->requests);
  run->flushes = calloc (run->n_requests + 2, sizeof *run->flushes);
  if (run->requests == NULL || run->flushes == NULL ||
      mkdir (run->dir, 0755) == -1) {
    fprintf (stderr, "%s: setting up %s: %s\n", run->name, run->dir,
             strerror (errno));
    return -1;
  }
  snprintf (run->path, sizeof run->path, "%s/image.%s", run->dir,
            crash_ext (run));
  snprintf (run->parent_path, sizeof run->parent_path, "%s/parent.%s",
            run->dir, crash_ext (run));
  snprintf (run->scratch_path, sizeof run->scratch_path, "%s/crash.%s",
            run->dir, crash_ext (run));
  if (run->differencing) {
    if (make_parent (run, r) < 0)
      return -1;
    crash_forbid_clear ();
    if (crash_forbid_writes (run->parent_path) < 0)
      return -1;
  }
  else if ((run->initial_virtual = calloc (1, run->disk_size)) == NULL)
    return -1;
  if (create_disk (run, run->path, crash_virtual_size (run),
                   run->differencing ? run->parent_path : NULL, &d) < 0)
    return -1;
  vhd_close (d);
  return crash_record_start (run->path);
}

/* Did the workload give as many chunks a sector bitmap block as the run
 * asks?  (A seed that wrote elsewhere would test less than it says.)
 */
static int
has_bitmap_blocks (const struct crash_run *run)
{
  struct vhd_image_info info;
  vhd_disk *d;
  int r = 0;

  if (run->min_bitmap_blocks == 0)
    return 0;
  if (crash_open_disk (run->path, true, &d) < 0)
    return -1;
  if (vhd_get_image_info (d, &info) < 0 ||
      info.vhdx.sector_bitmap_blocks < run->min_bitmap_blocks) {
    fprintf (stderr, "%s: the workload left %" PRIu64 " sector bitmap"
             " blocks, not %u: it reaches fewer chunks than the run says\n",
             run->name, info.vhdx.sector_bitmap_blocks,
             run->min_bitmap_blocks);
    r = -1;
  }
  else
    printf ("%s: %" PRIu64 " PARTIALLY_PRESENT blocks, %" PRIu64
            " FULLY_PRESENT, %" PRIu64 " sector bitmap blocks\n", run->name,
            info.vhdx.block_states[7], info.vhdx.block_states[6],
            info.vhdx.sector_bitmap_blocks);
  vhd_close (d);
  return r;
}

/* After the workload: the log must model the file exactly, and the
 * engine must have written whole sectors only (the torn states are
 * sector-torn).
 */
static int
finish_recording (struct crash_run *run)
{
  crash_record_stop ();
  run->stats.requests = run->n_req;
  run->stats.file_ops = crash_n_ops ();
  run->stats.ring_ops = crash_n_ring_ops ();
  for (size_t i = 0; i < crash_n_ops (); i++)
    run->stats.syncs += crash_get_op (i)->kind == CRASH_OP_SYNC;
  if (crash_n_unaligned () != 0) {
    fprintf (stderr, "%s: the engine made %zu writes that are not whole"
             " 512-byte sectors\n", run->name, crash_n_unaligned ());
    return -1;
  }
  if (run->ring && !user_forced_pread () && run->stats.ring_ops == 0) {
    fprintf (stderr, "%s: no write went through the ring\n", run->name);
    return -1;
  }
  if (log_models_file (run) < 0)
    return -1;
  return has_bitmap_blocks (run);
}

static int
workload (struct crash_run *run)
{
  struct rng r = { run->seed };
  /* The longest request crosses a block: a block and 200 KiB. */
  uint8_t *ref = NULL, *buf = malloc (2 * MiB + crash_block_size (run));
  vhd_disk *d = NULL;
  int ret = -1;

  if (buf == NULL || check_backend (run) < 0 || prepare (run, &r) < 0)
    goto out;
  ref = malloc (run->disk_size);
  if (ref == NULL)
    goto out;
  memcpy (ref, run->initial_virtual, run->disk_size);

  if (crash_open_disk (run->path, false, &d) < 0)
    goto out;
  while (run->n_req <= run->n_requests) {
    struct request *q = &run->requests[run->n_req];
    if (run->n_req < run->n_prologue && run->n_req < run->n_requests)
      *q = run->prologue[run->n_req];
    else if (run->n_req < run->n_requests)
      generate_request (run, &r, q);
    else
      *q = (struct request) { .kind = REQ_FLUSH };   /* the last one */
    if (run_request (run, &d, q, buf) < 0)
      goto out;
    crash_apply_request (run, q, ref);
    run->n_req++;
    if (run->n_req % 16 == 0 || run->n_req > run->n_requests) {
      char what[128];
      snprintf (what, sizeof what, "%s: after request %zu", run->name,
                run->n_req - 1);
      if (disk_matches (run, d, ref, what) < 0)
        goto out;
    }
  }
  vhd_close (d);
  d = NULL;
  if (finish_recording (run) < 0)
    goto out;
  ret = 0;
 out:
  if (d)
    vhd_close (d);
  crash_record_stop ();
  free (ref);
  free (buf);
  return ret;
}

/* The multi-threaded workload: several writers and flushes racing on one
 * vhd_disk, as nbdkit's PARALLEL thread model runs them.  Each thread
 * owns stripes of 16 sectors (8 KiB) spread over the whole disk, so that
 * threads allocate the same blocks at once while the expected contents
 * stay exact: a sector's writes all come from one thread, in its order.
 * Stripes are offset by half a stripe, so that the block boundaries fall
 * inside stripes: a write across one is a two-segment write, which goes
 * through the ring.
 */
#define STRIPE_SECTORS 16u
#define STRIPE_BYTES (STRIPE_SECTORS * SECTOR)

static unsigned
stripe_owner (uint64_t stripe, uint64_t block, unsigned threads)
{
  /* Boundary stripes (every 64th) rotate among the threads too. */
  return (unsigned) ((stripe + stripe / (block / STRIPE_BYTES))
                     % threads);
}

static void
thread_request (const struct crash_run *run, unsigned t, struct rng *r,
                struct request *q)
{
  uint64_t stripes = run->disk_size / STRIPE_BYTES;    /* 1..stripes-1 */
  uint64_t per_block = crash_block_size (run) / STRIPE_BYTES;
  uint64_t p = rng_below (r, 100), stripe = 0, start, off, len;
  bool aligned = rng_below (r, 2), crossing = rng_below (r, 3) == 0;

  memset (q, 0, sizeof *q);
  q->thread = t;
  if (p < 12) {
    q->kind = REQ_FLUSH;
    return;
  }
  for (int tries = 0; crossing && tries < 16; tries++) {
    uint64_t s = per_block * (1 + rng_below (r, stripes / per_block - 1));
    if (stripe_owner (s, crash_block_size (run), run->threads) == t) {
      stripe = s;
      break;
    }
  }
  if (stripe == 0)
    crossing = false;
  while (stripe == 0) {
    uint64_t s = 1 + rng_below (r, stripes - 1);
    if (stripe_owner (s, crash_block_size (run), run->threads) == t)
      stripe = s;
  }
  start = stripe * STRIPE_BYTES - STRIPE_BYTES / 2;
  if (crossing) {
    off = rng_below (r, STRIPE_BYTES / 2);
    len = STRIPE_BYTES / 2 - off + 1 + rng_below (r, STRIPE_BYTES / 2 - 1);
  }
  else {
    off = rng_below (r, STRIPE_BYTES);
    len = 1 + rng_below (r, STRIPE_BYTES - off);
  }
  if (aligned) {
    uint64_t end = (off + len + SECTOR - 1) & ~(uint64_t) (SECTOR - 1);
    off &= ~(uint64_t) (SECTOR - 1);
    len = end - off;
  }
  q->offset = start + off;
  q->length = len;
  q->kind = REQ_WRITE;
  q->data_seed = rng_next (r) | 1;
  if (p < 20)
    q->flags = VHD_IO_FUA;
  else if (p < 24)
    q->data_seed = 0;
  else if (p < 34) {
    q->kind = REQ_ZERO;
    if (p < 28)
      q->flags = VHD_IO_MAY_TRIM;
  }
  else if (p < 40)
    q->kind = REQ_TRIM;
}

struct writer {
  struct crash_run *run;
  vhd_disk *d;
  unsigned t;
  struct request *reqs;
  size_t n;
  int status;
};

static void *
writer_thread (void *arg)
{
  struct writer *w = arg;
  struct rng r = { w->run->seed ^ (0x1234567ULL * (w->t + 1)) };
  uint8_t *buf = malloc (STRIPE_BYTES);

  w->status = buf == NULL || check_backend (w->run) < 0 ? -1 : 0;
  for (size_t i = 0; i < w->n && w->status == 0; i++) {
    thread_request (w->run, w->t, &r, &w->reqs[i]);
    w->status = run_request (w->run, &w->d, &w->reqs[i], buf);
  }
  free (buf);
  return NULL;
}

static int
compare_start (const void *a, const void *b)
{
  const struct request *x = a, *y = b;
  return x->start_seq < y->start_seq ? -1 : x->start_seq > y->start_seq;
}

static int
workload_threads (struct crash_run *run)
{
  struct rng r = { run->seed };
  struct writer w[16];
  pthread_t tid[16];
  unsigned threads = run->threads < 16 ? run->threads : 16, started = 0;
  size_t per = run->n_requests / threads;
  uint8_t *ref = NULL;
  vhd_disk *d = NULL;
  int ret = -1;

  if (check_backend (run) < 0 || prepare (run, &r) < 0 ||
      crash_open_disk (run->path, false, &d) < 0)
    goto out;
  for (unsigned t = 0; t < threads; t++) {
    w[t] = (struct writer) {
      .run = run, .d = d, .t = t, .reqs = run->requests + t * per, .n = per,
    };
    if (pthread_create (&tid[t], NULL, writer_thread, &w[t]) != 0)
      break;
    started++;
  }
  for (unsigned t = 0; t < started; t++)
    pthread_join (tid[t], NULL);
  if (started < threads) {
    fprintf (stderr, "%s: pthread_create failed\n", run->name);
    goto out;
  }
  for (unsigned t = 0; t < threads; t++)
    if (w[t].status < 0)
      goto out;
  run->n_req = per * threads;
  /* The last flush, alone. */
  run->requests[run->n_req] = (struct request) { .kind = REQ_FLUSH };
  if (run_request (run, &d, &run->requests[run->n_req], NULL) < 0)
    goto out;
  run->n_req++;
  qsort (run->requests, run->n_req, sizeof *run->requests, compare_start);
  if ((ref = malloc (run->disk_size)) == NULL)
    goto out;
  memcpy (ref, run->initial_virtual, run->disk_size);
  for (size_t i = 0; i < run->n_req; i++)
    crash_apply_request (run, &run->requests[i], ref);
  if (disk_matches (run, d, ref, run->name) < 0)
    goto out;
  vhd_close (d);
  d = NULL;
  if (finish_recording (run) < 0)
    goto out;
  ret = 0;
 out:
  if (d)
    vhd_close (d);
  crash_record_stop ();
  free (ref);
  return ret;
}

static void *
workload_thread (void *arg)
{
  struct crash_run *run = arg;
  run->status = run->threads > 1 ? workload_threads (run) : workload (run);
  return NULL;
}

int
crash_run_workload (struct crash_run *run)
{
  const char *e = getenv ("VHDKIT_IO");
  char *before = e ? strdup (e) : NULL;
  pthread_t t;
  int r;

  /* A thread picks its backend at its first I/O, from the environment;
   * the caller's threads picked theirs already.
   */
  if (run->ring && !user_forced_pread ())
    unsetenv ("VHDKIT_IO");
  else
    setenv ("VHDKIT_IO", "pread", 1);
  pthread_mutex_init (&run->lock, NULL);
  r = pthread_create (&t, NULL, workload_thread, run);
  if (r == 0)
    pthread_join (t, NULL);
  if (before)
    setenv ("VHDKIT_IO", before, 1);
  else
    unsetenv ("VHDKIT_IO");
  free (before);
  if (r != 0) {
    fprintf (stderr, "pthread_create: %s\n", strerror (r));
    return -1;
  }
  if (run->status == 0 && crash_violations () != 0) {
    fprintf (stderr, "%s: the parent was written, the engine used a file"
             " operation that crashsim cannot model, or left io_uring"
             " requests in flight (see above)\n", run->name);
    return -1;
  }
  return run->status;
}

void
crash_run_free (struct crash_run *run)
{
  crash_record_free ();
  crash_forbid_clear ();
  free (run->requests);
  free (run->flushes);
  free (run->initial_virtual);
  free (run->parent_raw);
  run->requests = NULL;
  run->flushes = NULL;
  run->initial_virtual = NULL;
  run->parent_raw = NULL;
}

/* ---- What the crash test programs share ---- */

static int
compare_size (const void *a, const void *b)
{
  size_t x = *(const size_t *) a, y = *(const size_t *) b;
  return x < y ? -1 : x > y;
}

size_t *
crash_choose_points (size_t n_log, uint64_t seed, size_t want, size_t *n_ks)
{
  struct rng r = { seed };
  size_t *ks;

  *n_ks = want ? want : n_log + 1;
  ks = calloc (*n_ks, sizeof *ks);
  if (ks == NULL)
    return NULL;
  for (size_t i = 0; i < *n_ks; i++)
    ks[i] = want ? (size_t) rng_below (&r, n_log + 1) : i;
  qsort (ks, *n_ks, sizeof *ks, compare_size);
  return ks;
}

void
crash_add_stats (struct crash_stats *to, const struct crash_stats *s)
{
  to->requests += s->requests;
  to->file_ops += s->file_ops;
  to->ring_ops += s->ring_ops;
  to->syncs += s->syncs;
  to->points += s->points;
  to->subsets += s->subsets;
  for (int i = 0; i < SUBSET_KINDS; i++)
    to->by_kind[i] += s->by_kind[i];
  to->duplicates += s->duplicates;
  to->footer_from_copy += s->footer_from_copy;
  to->recoverable += s->recoverable;
  to->new_sectors += s->new_sectors;
  to->spec_reads += s->spec_reads;
  to->qemu_checks += s->qemu_checks;
  to->leaky += s->leaky;
  to->post_writes += s->post_writes;
  to->failures += s->failures;
  to->seconds += s->seconds;
}

void
crash_run_in_child (struct crash_run *run, size_t random_points,
                    long long only_k)
{
  size_t *ks = NULL, n_ks = 0;
  double t0 = now_seconds ();

  if (crash_run_workload (run) < 0) {
    fprintf (stderr, "%s: the workload failed (seed 0x%" PRIx64 "): see"
             " above\n", run->name, run->seed);
    run->stats.failures++;
    return;
  }
  if (only_k >= 0) {
    n_ks = 1;
    ks = calloc (1, sizeof *ks);
    if (ks)
      ks[0] = (size_t) only_k;
  }
  else
    ks = crash_choose_points (run->stats.file_ops,
                              run->seed ^ 0x9e3779b97f4a7c15ULL,
                              random_points, &n_ks);
  if (ks == NULL) {
    fprintf (stderr, "%s: out of memory\n", run->name);
    run->stats.failures++;
    return;
  }
  crash_run_points (run, ks, n_ks);
  free (ks);
  crash_run_free (run);
  run->stats.seconds = now_seconds () - t0;
}
