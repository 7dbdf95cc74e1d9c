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
#define BLOCK_SIZE VHD_BLOCK_SIZE_SMALL
#define SECTOR 512u

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
crossing_range (struct rng *r, uint64_t size, bool aligned, struct request *q)
{
  uint64_t boundary = BLOCK_SIZE * (1 + rng_below (r, size / BLOCK_SIZE - 1));
  uint64_t max_len = rng_below (r, 4) == 0 ? BLOCK_SIZE + 200 * KiB
                                          : 64 * KiB;

  q->length = 2 + rng_below (r, max_len);
  q->offset = boundary - 1 - rng_below (r, q->length - 1 < boundary
                                           ? q->length - 1 : boundary);
  align_and_clip (size, aligned, q);
}

/* What zero and trim get: small, medium, or whole blocks. */
static void
discard_range (struct rng *r, uint64_t size, struct request *q)
{
  uint64_t pick = rng_below (r, 10);
  bool aligned = rng_below (r, 2);

  if (pick < 4)
    random_range (r, size, 8 * KiB, aligned, q);
  else if (pick < 8)
    random_range (r, size, 128 * KiB, aligned, q);
  else {
    q->offset = BLOCK_SIZE * rng_below (r, size / BLOCK_SIZE);
    q->length = BLOCK_SIZE * (1 + rng_below (r, 2));
    if (q->length > size - q->offset)
      q->length = size - q->offset;
  }
}

static void
generate_request (struct rng *r, uint64_t size, struct request *q)
{
  uint64_t p = rng_below (r, 100);

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
    crossing_range (r, size, rng_below (r, 2), q);
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
    discard_range (r, size, q);
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
 * a dynamic disk's trimmed whole sectors read as zeros, a differencing
 * disk's are untouched (zeros there would hide the parent).
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
    if (run->differencing)
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

static int
create_disk (const char *path, uint64_t size, const char *parent,
             vhd_disk **d)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_2 };
  int r;

  p.version2.maximum_size = parent ? 0 : size;
  p.version2.block_size_in_bytes = BLOCK_SIZE;
  p.version2.parent_path = parent;
  r = vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE, NULL, 0, 0, &p,
                               NULL, d);
  if (r < 0)
    fprintf (stderr, "create %s: %s\n", path, vhd_last_error ());
  return r;
}

/* Does the whole disk read as expected?  Prints the first difference. */
static int
disk_matches (vhd_disk *d, const uint8_t *expected, uint64_t size,
              const char *what)
{
  uint8_t *got = malloc (size);
  int r;

  if (got == NULL)
    return -1;
  r = vhd_pread (d, got, size, 0);
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
  uint8_t *ref = calloc (1, run->disk_size);
  vhd_disk *d = NULL;
  int ret = -1;

  if (ref == NULL ||
      create_disk (run->parent_path, run->disk_size, NULL, &d) < 0)
    goto out;
  for (uint64_t b = 0; b < run->disk_size / BLOCK_SIZE; b++) {
    struct request q = {
      .kind = REQ_WRITE, .offset = b * BLOCK_SIZE, .length = BLOCK_SIZE,
      .data_seed = rng_next (r) | 1,
    };
    if (b % 4 == 3)
      continue;
    crash_fill_data (q.data_seed, ref + q.offset, q.length);
    if (vhd_pwrite (d, ref + q.offset, q.length, q.offset, 0) < 0)
      goto fail;
    if (b % 4 == 1) {
      q.kind = REQ_TRIM;
      q.offset += rng_below (r, BLOCK_SIZE / 2);
      q.length = 1 + rng_below (r, BLOCK_SIZE / 2);
      crash_apply_request (&parent_run, &q, ref);
      if (vhd_trim (d, q.length, q.offset, 0) < 0)
        goto fail;
    }
  }
  if (vhd_flush (d) < 0)
    goto fail;
  if (disk_matches (d, ref, run->disk_size, "parent") < 0)
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

static int
execute_request (struct crash_run *run, vhd_disk **d, struct request *q,
                 uint8_t *buf)
{
  int r = 0;

  switch (q->kind) {
  case REQ_WRITE:
    crash_fill_data (q->data_seed, buf, q->length);
    r = vhd_pwrite (*d, buf, q->length, q->offset, q->flags);
    break;
  case REQ_ZERO:
    r = vhd_zero (*d, q->length, q->offset, q->flags);
    break;
  case REQ_TRIM:
    r = vhd_trim (*d, q->length, q->offset, q->flags);
    break;
  case REQ_FLUSH:
    r = vhd_flush (*d);
    break;
  case REQ_REOPEN:
    vhd_close (*d);
    *d = NULL;
    /* vhd_close flushed: what the log holds now is covered. */
    q->log_end = crash_n_ops ();
    run->flushes[run->n_flushes++] = (struct flush_done) {
      run->n_req + 1, q->log_end,
    };
    return crash_open_disk (run->path, false, d);
  }
  if (r < 0)
    fprintf (stderr, "%s: request %zu (%s of %" PRIu64 " at %" PRIu64
             "): %s\n", run->name, run->n_req, crash_request_name (q),
             q->length, q->offset, vhd_last_error ());
  return r;
}

/* Replaying the whole log must give the file as the workload left it;
 * else the log misses a kind of change and every check would be wrong.
 */
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

static int
workload (struct crash_run *run)
{
  struct rng r = { run->seed };
  uint8_t *ref = NULL, *buf = malloc (2 * MiB);
  vhd_disk *d = NULL;
  int ret = -1;

  if (strcmp (vhd_io_backend (), "pread") != 0) {
    fprintf (stderr, "%s: the workload thread uses %s, not pread: its"
             " writes would bypass the recording\n", run->name,
             vhd_io_backend ());
    goto out;
  }
  run->requests = calloc (run->n_requests + 1, sizeof *run->requests);
  run->flushes = calloc (run->n_requests + 1, sizeof *run->flushes);
  if (buf == NULL || run->requests == NULL || run->flushes == NULL ||
      mkdir (run->dir, 0755) == -1) {
    fprintf (stderr, "%s: setting up %s: %s\n", run->name, run->dir,
             strerror (errno));
    goto out;
  }
  snprintf (run->path, sizeof run->path, "%s/image.vhd", run->dir);
  snprintf (run->parent_path, sizeof run->parent_path, "%s/parent.vhd",
            run->dir);
  snprintf (run->scratch_path, sizeof run->scratch_path, "%s/crash.vhd",
            run->dir);
  if (run->differencing) {
    if (make_parent (run, &r) < 0)
      goto out;
    crash_forbid_clear ();
    if (crash_forbid_writes (run->parent_path) < 0)
      goto out;
  }
  else if ((run->initial_virtual = calloc (1, run->disk_size)) == NULL)
    goto out;
  if (create_disk (run->path, run->disk_size,
                   run->differencing ? run->parent_path : NULL, &d) < 0)
    goto out;
  vhd_close (d);
  d = NULL;
  ref = malloc (run->disk_size);
  if (ref == NULL)
    goto out;
  memcpy (ref, run->initial_virtual, run->disk_size);

  if (crash_record_start (run->path) < 0 ||
      crash_open_disk (run->path, false, &d) < 0)
    goto out;
  while (run->n_req <= run->n_requests) {
    struct request *q = &run->requests[run->n_req];
    if (run->n_req < run->n_requests)
      generate_request (&r, run->disk_size, q);
    else
      *q = (struct request) { .kind = REQ_FLUSH };   /* the last one */
    q->log_start = crash_n_ops ();
    if (execute_request (run, &d, q, buf) < 0)
      goto out;
    q->log_end = crash_n_ops ();
    if (q->kind == REQ_FLUSH || (q->flags & VHD_IO_FUA))
      run->flushes[run->n_flushes++] = (struct flush_done) {
        run->n_req + 1, q->log_end,
      };
    crash_apply_request (run, q, ref);
    run->n_req++;
    if (run->n_req % 16 == 0 || run->n_req > run->n_requests) {
      char what[128];
      snprintf (what, sizeof what, "%s: after request %zu", run->name,
                run->n_req - 1);
      if (disk_matches (d, ref, run->disk_size, what) < 0)
        goto out;
    }
  }
  vhd_close (d);
  d = NULL;
  crash_record_stop ();
  run->stats.requests = run->n_req;
  run->stats.file_ops = crash_n_ops ();
  for (size_t i = 0; i < crash_n_ops (); i++)
    run->stats.syncs += crash_get_op (i)->kind == CRASH_OP_SYNC;
  if (log_models_file (run) < 0)
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

static void *
workload_thread (void *arg)
{
  struct crash_run *run = arg;
  run->status = workload (run);
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
  setenv ("VHDKIT_IO", "pread", 1);
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
    fprintf (stderr, "%s: the parent was written, or the engine used a"
             " file operation that crashsim cannot model\n", run->name);
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
