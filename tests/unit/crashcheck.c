/* vhdkit tests: power losses at chosen points of a recorded run, and the
 * checks of each image that one leaves (crashrun.h).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhdkit.h"
#include "crashsim.h"
#include "crashrun.h"

#define TORN_PIECE 4096u
#define POST_WRITES 3

struct interval {
  uint64_t start, end;
};

/* One crash point: what is durable, and what the disk must read. */
struct crash_point {
  struct crash_run *run;
  size_t k;                     /* ops [0, k) happened */
  size_t durable;               /* ops [0, durable) are on the platter */
  size_t flush_requests;        /* requests the last completed flush covered */
  const uint8_t *expected;      /* the disk as that flush left it */
  struct interval *dont_care;   /* touched after that flush, sorted */
  size_t n_dont_care;
  const struct crash_file *file;        /* the state being checked */
  const char *label;            /* "none", "all", "random-1", "torn" */
  char applied[1024];           /* which pending ops, in which order */
};

static int
compare_intervals (const void *a, const void *b)
{
  const struct interval *x = a, *y = b;
  return x->start < y->start ? -1 : x->start > y->start;
}

/* Bytes of requests issued after the last completed flush and begun
 * (one of their file ops happened) before the crash.
 */
static void
build_dont_care (struct crash_point *pt)
{
  const struct crash_run *run = pt->run;
  size_t n = 0;

  for (size_t i = pt->flush_requests; i < run->n_req; i++) {
    const struct request *q = &run->requests[i];
    if (q->log_start >= pt->k)
      break;
    if (q->kind == REQ_WRITE || q->kind == REQ_ZERO || q->kind == REQ_TRIM)
      pt->dont_care[n++] = (struct interval) {
        q->offset, q->offset + q->length,
      };
  }
  qsort (pt->dont_care, n, sizeof *pt->dont_care, compare_intervals);
  pt->n_dont_care = 0;
  for (size_t i = 0; i < n; i++) {
    struct interval *last = pt->n_dont_care
                            ? &pt->dont_care[pt->n_dont_care - 1] : NULL;
    if (last && pt->dont_care[i].start <= last->end) {
      if (pt->dont_care[i].end > last->end)
        last->end = pt->dont_care[i].end;
    }
    else
      pt->dont_care[pt->n_dont_care++] = pt->dont_care[i];
  }
}

/* The first byte outside the don't-care intervals that differs, or
 * UINT64_MAX.
 */
static uint64_t
first_difference (const struct crash_point *pt, const uint8_t *got)
{
  uint64_t at = 0, size = pt->run->disk_size;

  for (size_t i = 0; i <= pt->n_dont_care; i++) {
    uint64_t end = i < pt->n_dont_care ? pt->dont_care[i].start : size;
    if (end > at && memcmp (got + at, pt->expected + at, end - at) != 0) {
      while (got[at] == pt->expected[at])
        at++;
      return at;
    }
    if (i < pt->n_dont_care)
      at = pt->dont_care[i].end;
  }
  return UINT64_MAX;
}

static const char *
op_name (const struct crash_op *op)
{
  switch (op->kind) {
  case CRASH_OP_WRITE: return op->data ? "pwrite" : "pwrite(zeros)";
  case CRASH_OP_ZERO: return op->keep_size ? "zero-range(keep-size)"
                                           : "zero-range";
  case CRASH_OP_PUNCH: return "punch-hole";
  case CRASH_OP_EXTEND: return "fallocate";
  case CRASH_OP_TRUNCATE: return "ftruncate";
  case CRASH_OP_SYNC: return "fdatasync";
  }
  return "?";
}

static const struct request *
request_of_op (const struct crash_run *run, size_t op, size_t *index)
{
  for (size_t i = 0; i < run->n_req; i++)
    if (run->requests[i].log_start <= op && op < run->requests[i].log_end) {
      *index = i;
      return &run->requests[i];
    }
  return NULL;
}

/* Keep the rebuilt image (and the parent beside it) for a person to look
 * at; the child finds the parent through its relative locator.
 */
static void
keep_image (const struct crash_point *pt, char *where, size_t where_size)
{
  const struct crash_run *run = pt->run;
  char dir[800], path[900];
  struct crash_file parent = {
    .bytes = run->parent_raw, .size = run->parent_raw_size,
  };

  snprintf (where, where_size, "(not kept)");
  if (*run->kept_images >= 20)
    return;
  snprintf (dir, sizeof dir, "%s/%s", run->keep_dir, run->name);
  mkdir (run->keep_dir, 0755);
  mkdir (dir, 0755);
  snprintf (path, sizeof path, "%s/k%zu-%s.vhd", dir, pt->k, pt->label);
  if (crash_file_save (pt->file, path) < 0)
    return;
  if (run->differencing) {
    char parent_path[900];
    snprintf (parent_path, sizeof parent_path, "%s/parent.vhd", dir);
    if (crash_file_save (&parent, parent_path) < 0)
      return;
  }
  (*run->kept_images)++;
  snprintf (where, where_size, "%s", path);
}

static void fail_point (struct crash_point *pt, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
fail_point (struct crash_point *pt, const char *fmt, ...)
{
  struct crash_run *run = pt->run;
  char reason[4096], kept[1000], flush[64];
  va_list ap;
  size_t shown = 0;

  run->stats.failures++;
  if (run->stats.failures > run->show_failures)
    return;
  va_start (ap, fmt);
  vsnprintf (reason, sizeof reason, fmt, ap);
  va_end (ap);
  keep_image (pt, kept, sizeof kept);

  if (pt->flush_requests)
    snprintf (flush, sizeof flush, "the one ending request %zu",
              pt->flush_requests - 1);
  else
    snprintf (flush, sizeof flush, "none");
  fprintf (stderr, "\nCRASH FAILURE in %s: power lost at file op %zu of %zu"
           " (ops before %zu durable; last completed flush: %s), state"
           " \"%s\"%s%s\n  %s\n", run->name, pt->k, crash_n_ops (),
           pt->durable, flush, pt->label,
           *pt->applied ? ": applied " : "", pt->applied, reason);
  for (size_t i = pt->durable; i < pt->k && shown < 40; i++, shown++) {
    const struct crash_op *op = crash_get_op (i);
    size_t qi = 0;
    const struct request *q = request_of_op (run, i, &qi);
    fprintf (stderr, "  pending op %zu: %s %" PRIu64 "+%" PRIu64
             "  (request %zu: %s %" PRIu64 "+%" PRIu64 "%s)\n", i,
             op_name (op), op->offset, op->length, qi,
             q ? crash_request_name (q) : "?", q ? q->offset : 0,
             q ? q->length : 0,
             q && (q->flags & VHD_IO_FUA) ? " FUA" : "");
  }
  fprintf (stderr, "  image: %s\n  reproduce: VHDKIT_CRASH_SEED=0x%" PRIx64
           "%s%s VHDKIT_CRASH_ONLY=%s:%zu unit/test-crash\n", kept,
           run->repro_seed, run->repro_points ? " VHDKIT_CRASH_POINTS=" : "",
           run->repro_points ? run->repro_points : "", run->name, pt->k);
  if (run->stats.failures == run->show_failures)
    fprintf (stderr, "%s: %u failures shown; the rest are counted"
             " (VHDKIT_CRASH_SHOW to see more)\n", run->name,
             run->show_failures);
}

struct findings {
  char text[2048];
  size_t used;
};

static void
collect_finding (void *opaque, int kind, const char *message)
{
  struct findings *f = opaque;
  int n;

  if (kind != VHD_CHECK_CORRUPT || f->used >= sizeof f->text - 1)
    return;
  n = snprintf (f->text + f->used, sizeof f->text - f->used, "%s%s",
                f->used ? "; " : "", message);
  if (n > 0)
    f->used += (size_t) n;
}

/* vhd_check must run and find no corruption; leaks are allowed. */
static int
check_clean (struct crash_point *pt, const char *when, bool count_leaks)
{
  struct findings f = { .used = 0 };
  struct vhd_check_result result;
  int r;

  f.text[0] = '\0';
  r = vhd_check (pt->run->scratch_path, NULL, 0, collect_finding, &f,
                 &result);
  if (r < 0) {
    fail_point (pt, "%s: vhd_check could not check it: %s", when,
                vhd_last_error ());
    return -1;
  }
  if (result.corruptions) {
    fail_point (pt, "%s: vhd_check reports %u corruption(s): %s", when,
                result.corruptions, f.text);
    return -1;
  }
  if (count_leaks && result.leaks)
    pt->run->stats.leaky++;
  return 0;
}

/* Read the whole disk through a read-only open. */
static int
read_disk (struct crash_point *pt, const char *when, uint8_t *got,
           bool *from_copy)
{
  struct vhd_open_options ro = { .readonly = true };
  struct vhd_image_info info;
  vhd_disk *d;

  if (vhd_open (pt->run->scratch_path, &ro, &d) < 0) {
    fail_point (pt, "%s: it does not open read-only: %s", when,
                vhd_last_error ());
    return -1;
  }
  if (from_copy && vhd_get_image_info (d, &info) == 0)
    *from_copy = info.footer_from_copy;
  if (vhd_get_size (d) != pt->run->disk_size ||
      vhd_pread (d, got, pt->run->disk_size, 0) < 0) {
    fail_point (pt, "%s: reading the disk (size %" PRIu64 "): %s", when,
                vhd_get_size (d), vhd_last_error ());
    vhd_close (d);
    return -1;
  }
  vhd_close (d);
  return 0;
}

/* The recovered image takes new writes (allocating ones too), a flush and
 * a reopen, and still checks clean; what it read after the crash stays
 * as it was, outside the new writes.
 */
static void
write_after_recovery (struct crash_point *pt, const uint8_t *got,
                      uint8_t *expected, uint8_t *buf, struct rng *r)
{
  uint64_t size = pt->run->disk_size;
  vhd_disk *d;
  uint64_t bad;

  memcpy (expected, got, size);
  pt->run->stats.post_writes++;
  if (vhd_open (pt->run->scratch_path, NULL, &d) < 0) {
    fail_point (pt, "reopening it to write: %s", vhd_last_error ());
    return;
  }
  for (int i = 0; i < POST_WRITES; i++) {
    uint64_t len = i == 0 ? VHD_BLOCK_SIZE_SMALL : 1 + rng_below (r, 40000);
    uint64_t off = i == 0 ? VHD_BLOCK_SIZE_SMALL
                            * rng_below (r, size / VHD_BLOCK_SIZE_SMALL)
                          : rng_below (r, size - len);
    uint64_t seed = rng_next (r) | 1;
    crash_fill_data (seed, buf, len);
    if (vhd_pwrite (d, buf, len, off, 0) < 0) {
      fail_point (pt, "writing %" PRIu64 " bytes at %" PRIu64 " after"
                  " recovery: %s", len, off, vhd_last_error ());
      vhd_close (d);
      return;
    }
    memcpy (expected + off, buf, len);
  }
  if (vhd_flush (d) < 0) {
    fail_point (pt, "flushing after recovery: %s", vhd_last_error ());
    vhd_close (d);
    return;
  }
  vhd_close (d);
  check_clean (pt, "after recovery and new writes", false);
  if (read_disk (pt, "after recovery and new writes", buf, NULL) < 0)
    return;
  if (memcmp (buf, expected, size) != 0) {
    bad = 0;
    while (buf[bad] == expected[bad])
      bad++;
    fail_point (pt, "after recovery and new writes: byte %" PRIu64 " reads"
                " 0x%02x, expected 0x%02x (what it read after the crash,"
                " or a new write)", bad, buf[bad], expected[bad]);
  }
}

/* Save the state and check it: opens read-write (recovery), checks
 * clean, reads back what the last completed flush covered.
 */
static void
check_state (struct crash_point *pt, enum subset_kind kind,
             uint8_t *got, uint8_t *scratch, struct rng *r)
{
  struct crash_run *run = pt->run;
  bool from_copy = false;
  vhd_disk *d;
  uint64_t bad;
  int e;

  run->stats.subsets++;
  run->stats.by_kind[kind]++;
  if ((e = crash_file_save (pt->file, run->scratch_path)) < 0) {
    fail_point (pt, "writing %s: %s", run->scratch_path, strerror (-e));
    return;
  }
  if (vhd_open (run->scratch_path, NULL, &d) < 0) {
    fail_point (pt, "it does not open read-write: %s", vhd_last_error ());
    return;
  }
  vhd_close (d);
  /* A failed check does not stop the rest: each failure is reported. */
  check_clean (pt, "after a read-write open", true);
  if (read_disk (pt, "after a read-write open", got, &from_copy) < 0)
    return;
  run->stats.footer_from_copy += from_copy;
  bad = first_difference (pt, got);
  if (bad != UINT64_MAX) {
    fail_point (pt, "byte %" PRIu64 " reads 0x%02x, but the last completed"
                " flush left 0x%02x there (and no later request touched"
                " it)", bad, got[bad], pt->expected[bad]);
    return;
  }
  if (rng_below (r, 100) < run->post_write_percent)
    write_after_recovery (pt, got, scratch, scratch + run->disk_size, r);
}

static void
append_applied (struct crash_point *pt, size_t op)
{
  size_t used = strlen (pt->applied);
  if (used < sizeof pt->applied - 16)
    snprintf (pt->applied + used, sizeof pt->applied - used, "%s%zu",
              used ? "," : "ops ", op);
  else if (!strstr (pt->applied, "..."))
    strcat (pt->applied, " ...");
}

struct piece {
  size_t op;
  uint64_t offset, length;
};

static void
shuffle (struct piece *p, size_t n, struct rng *r)
{
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t) rng_below (r, i);
    struct piece t = p[i - 1];
    p[i - 1] = p[j];
    p[j] = t;
  }
}

/* The pending ops (or, torn, their 4 KiB pieces) that reach the file:
 * each with a probability of 1/8 to 7/8, in a random order.
 */
static size_t
random_pieces (const struct crash_point *pt, bool torn, struct rng *r,
               struct piece *out)
{
  uint64_t p8 = 1 + rng_below (r, 7);
  size_t n = 0;

  for (size_t i = pt->durable; i < pt->k; i++) {
    const struct crash_op *op = crash_get_op (i);
    uint64_t at = 0;
    bool splits = torn && (op->kind == CRASH_OP_WRITE ||
                           op->kind == CRASH_OP_ZERO ||
                           op->kind == CRASH_OP_PUNCH);
    do {
      uint64_t len = op->length - at;
      if (splits) {
        uint64_t next = (op->offset + at) / TORN_PIECE * TORN_PIECE
                        + TORN_PIECE;
        if (next - (op->offset + at) < len)
          len = next - (op->offset + at);
      }
      if (rng_below (r, 8) < p8)
        out[n++] = (struct piece) { i, at, len };
      at += len;
    } while (at < op->length);
  }
  shuffle (out, n, r);
  return n;
}

static size_t
count_pieces (const struct crash_point *pt)
{
  size_t n = 0;
  for (size_t i = pt->durable; i < pt->k; i++) {
    const struct crash_op *op = crash_get_op (i);
    n += 2 + op->length / TORN_PIECE;
  }
  return n;
}

/* Each state of a crash point draws from its own stream, so that
 * VHDKIT_CRASH_ONLY=NAME:K rebuilds the same states as the full run.
 */
static struct rng
state_rng (const struct crash_point *pt, unsigned state)
{
  struct rng r = { pt->run->seed ^ ((uint64_t) pt->k << 8) ^ state };
  rng_next (&r);
  r.s ^= rng_next (&r);
  return r;
}

/* Every state of one crash point. */
static void
try_point (struct crash_point *pt, const struct crash_file *base,
           struct crash_file *work, size_t *last_none, uint8_t *got,
           uint8_t *scratch)
{
  struct crash_run *run = pt->run;
  struct rng r;
  struct piece *pieces;

  run->stats.points++;
  pt->applied[0] = '\0';
  /* Losing every pending op gives the same file for every k after one
   * sync, and the earliest k has the fewest don't-care bytes.
   */
  if (*last_none != pt->durable) {
    *last_none = pt->durable;
    pt->file = base;
    pt->label = "none";
    r = state_rng (pt, 0);
    check_state (pt, SUBSET_NONE, got, scratch, &r);
  }
  else
    run->stats.duplicates++;
  if (pt->k == pt->durable)
    return;

  pt->file = work;
  pt->label = "all";
  crash_file_copy (work, base);
  for (size_t i = pt->durable; i < pt->k; i++)
    crash_file_apply (work, crash_get_op (i), 0, crash_get_op (i)->length);
  snprintf (pt->applied, sizeof pt->applied, "ops %zu..%zu in order",
            pt->durable, pt->k - 1);
  r = state_rng (pt, 1);
  check_state (pt, SUBSET_ALL, got, scratch, &r);

  pieces = malloc (count_pieces (pt) * sizeof *pieces);
  if (pieces == NULL) {
    fail_point (pt, "out of memory");
    return;
  }
  for (unsigned j = 0; j <= run->random_subsets; j++) {
    bool torn = j == run->random_subsets;
    size_t n;
    char label[32];

    r = state_rng (pt, 2 + j);
    n = random_pieces (pt, torn, &r, pieces);

    snprintf (label, sizeof label, torn ? "torn" : "random-%u", j + 1);
    pt->label = label;
    pt->applied[0] = '\0';
    crash_file_copy (work, base);
    for (size_t i = 0; i < n; i++) {
      const struct crash_op *op = crash_get_op (pieces[i].op);
      crash_file_apply (work, op, pieces[i].offset, pieces[i].length);
      if (torn)
        continue;
      append_applied (pt, pieces[i].op);
    }
    if (torn)
      snprintf (pt->applied, sizeof pt->applied,
                "%zu of the %zu..%zu ops' 4 KiB pieces, shuffled", n,
                pt->durable, pt->k - 1);
    else if (n == 0)
      snprintf (pt->applied, sizeof pt->applied, "no ops");
    check_state (pt, torn ? SUBSET_TORN : SUBSET_RANDOM, got, scratch, &r);
  }
  free (pieces);
}

static void
check_parent_unchanged (struct crash_run *run)
{
  FILE *f = fopen (run->parent_path, "rb");
  uint8_t *now = malloc (run->parent_raw_size + 1);
  size_t n = 0;

  if (f && now)
    n = fread (now, 1, run->parent_raw_size + 1, f);
  if (!f || !now || n != run->parent_raw_size ||
      memcmp (now, run->parent_raw, n) != 0) {
    run->stats.failures++;
    fprintf (stderr, "\nCRASH FAILURE in %s: the parent %s changed (%zu"
             " bytes now, %" PRIu64 " before)\n", run->name,
             run->parent_path, n, run->parent_raw_size);
  }
  if (f)
    fclose (f);
  free (now);
}

void
crash_run_points (struct crash_run *run, const size_t *ks, size_t n)
{
  struct crash_file base, work;
  struct crash_point pt = { .run = run };
  uint64_t size = run->disk_size;
  uint8_t *snapshot = malloc (size);
  uint8_t *got = malloc (size), *scratch = malloc (2 * size);
  size_t base_done = 0, snapshot_done = 0, flushes = 0;
  size_t last_none = SIZE_MAX;

  pt.dont_care = calloc (run->n_req + 1, sizeof *pt.dont_care);
  if (!snapshot || !got || !scratch || !pt.dont_care ||
      crash_file_init (&base) < 0 || crash_file_init (&work) < 0) {
    fprintf (stderr, "%s: out of memory\n", run->name);
    run->stats.failures++;
    return;
  }
  memcpy (snapshot, run->initial_virtual, size);
  for (size_t i = 0; i < n; i++) {
    size_t k = ks[i] <= crash_n_ops () ? ks[i] : crash_n_ops ();

    pt.k = k;
    pt.durable = crash_durable_prefix (k);
    for (; base_done < pt.durable; base_done++)
      crash_file_apply (&base, crash_get_op (base_done), 0,
                        crash_get_op (base_done)->length);
    while (flushes < run->n_flushes && run->flushes[flushes].log_end <= k)
      flushes++;
    pt.flush_requests = flushes ? run->flushes[flushes - 1].requests_done
                                : 0;
    for (; snapshot_done < pt.flush_requests; snapshot_done++)
      crash_apply_request (run, &run->requests[snapshot_done], snapshot);
    pt.expected = snapshot;
    build_dont_care (&pt);
    try_point (&pt, &base, &work, &last_none, got, scratch);
  }
  if (run->differencing)
    check_parent_unchanged (run);
  crash_file_free (&base);
  crash_file_free (&work);
  free (pt.dont_care);
  free (snapshot);
  free (got);
  free (scratch);
}
