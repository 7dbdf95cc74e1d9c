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
#include <sys/wait.h>
#include <unistd.h>

#include "vhdkit.h"
#include "crashsim.h"
#include "crashrun.h"

#define SECTOR 512u
#define POST_WRITES 3

/* A sector's content as one of the requests after the last completed
 * flush left it.
 */
struct version {
  uint64_t sector;
  size_t next;                  /* the sector's next version, or SIZE_MAX */
  uint8_t data[SECTOR];
};

/* One crash point: what is durable, and what the disk may read. */
struct crash_point {
  struct crash_run *run;
  size_t k;                     /* ops [0, k) happened */
  size_t durable;               /* ops [0, durable) are on the platter */
  uint64_t covered_seq;         /* requests that ended before this ticket
                                 * are covered by a completed flush */
  size_t n_covered;
  uint64_t last_none_seq;       /* covered_seq of the last "none" state */
  uint8_t *expected;            /* the disk as the covered requests left it */
  struct version *versions;     /* what later requests put in sectors */
  size_t n_versions, cap_versions;
  size_t *head;                 /* per sector: its first version */
  const struct crash_file *file;        /* the state being checked */
  const char *label;            /* "none", "all", "random-1", "torn" */
  char applied[1024];           /* which pending ops, in which order */
};

static bool
covered (const struct crash_point *pt, const struct request *q)
{
  return q->end_seq < pt->covered_seq ||
         ((q->flags & VHD_IO_FUA) && q->log_end <= pt->k);
}

static bool
touches_disk (const struct request *q)
{
  return q->kind == REQ_WRITE || q->kind == REQ_ZERO || q->kind == REQ_TRIM;
}

/* The expected disk and the versions of the sectors that requests after
 * the last completed flush (and begun before the crash: one of their file
 * ops could have happened) touched: each such sector may hold its covered
 * content or what any of those requests left in it, nothing else.
 * Returns -1 when out of memory.
 */
static int
build_expected (struct crash_point *pt, uint8_t *cur)
{
  const struct crash_run *run = pt->run;

  for (size_t i = 0; i < pt->n_versions; i++)
    pt->head[pt->versions[i].sector] = SIZE_MAX;
  pt->n_versions = 0;
  pt->covered_seq = 0;
  for (size_t i = 0; i < run->n_flushes; i++)
    if (run->flushes[i].log_end <= pt->k &&
        run->flushes[i].call_seq > pt->covered_seq)
      pt->covered_seq = run->flushes[i].call_seq;
  memcpy (pt->expected, run->initial_virtual, run->disk_size);
  pt->n_covered = 0;
  for (size_t i = 0; i < run->n_req; i++)
    if (covered (pt, &run->requests[i])) {
      crash_apply_request (run, &run->requests[i], pt->expected);
      pt->n_covered++;
    }
  memcpy (cur, pt->expected, run->disk_size);
  for (size_t i = 0; i < run->n_req; i++) {
    const struct request *q = &run->requests[i];
    if (covered (pt, q) || !touches_disk (q) || q->log_start >= pt->k ||
        q->length == 0)
      continue;
    crash_apply_request (run, q, cur);
    for (uint64_t s = q->offset / SECTOR;
         s <= (q->offset + q->length - 1) / SECTOR; s++) {
      struct version *v;
      if (pt->n_versions == pt->cap_versions) {
        size_t cap = pt->cap_versions ? 2 * pt->cap_versions : 256;
        struct version *nv = realloc (pt->versions, cap * sizeof *nv);
        if (nv == NULL)
          return -1;
        pt->versions = nv;
        pt->cap_versions = cap;
      }
      v = &pt->versions[pt->n_versions];
      v->sector = s;
      v->next = pt->head[s];
      memcpy (v->data, cur + s * SECTOR, SECTOR);
      pt->head[s] = pt->n_versions++;
    }
  }
  return 0;
}

/* The first sector that holds neither its covered content nor a version,
 * or UINT64_MAX; *new_sectors counts those that hold a version only.
 */
static uint64_t
first_bad_sector (const struct crash_point *pt, const uint8_t *got,
                  size_t *new_sectors)
{
  uint64_t n = pt->run->disk_size / SECTOR;

  if (memcmp (got, pt->expected, pt->run->disk_size) == 0)
    return UINT64_MAX;
  for (uint64_t s = 0; s < n; s++) {
    const uint8_t *g = got + s * SECTOR;
    size_t v;
    if (memcmp (g, pt->expected + s * SECTOR, SECTOR) == 0)
      continue;
    for (v = pt->head[s]; v != SIZE_MAX; v = pt->versions[v].next)
      if (memcmp (g, pt->versions[v].data, SECTOR) == 0)
        break;
    if (v == SIZE_MAX)
      return s;
    (*new_sectors)++;
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
  case CRASH_OP_NAME_ADD: return "link";
  case CRASH_OP_NAME_REMOVE: return "unlink";
  case CRASH_OP_NAME_MOVE: return "rename";
  case CRASH_OP_DIR_SYNC: return "fsync(folder)";
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
  snprintf (path, sizeof path, "%s/k%zu-%s.%s", dir, pt->k, pt->label,
            crash_ext (run));
  if (crash_file_save (pt->file, path) < 0)
    return;
  if (run->differencing) {
    char parent_path[900];
    snprintf (parent_path, sizeof parent_path, "%s/parent.%s", dir,
              crash_ext (run));
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

  if (pt->covered_seq)
    snprintf (flush, sizeof flush, "covers %zu requests (ticket %" PRIu64
              ")", pt->n_covered, pt->covered_seq);
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
    fprintf (stderr, "  pending op %zu: %s%s %" PRIu64 "+%" PRIu64
             "  (request %zu: %s %" PRIu64 "+%" PRIu64 "%s)\n", i,
             op_name (op), op->ring ? " (io_uring)" : "", op->offset,
             op->length, qi,
             q ? crash_request_name (q) : "?", q ? q->offset : 0,
             q ? q->length : 0,
             q && (q->flags & VHD_IO_FUA) ? " FUA" : "");
  }
  fprintf (stderr, "  image: %s\n  reproduce: VHDKIT_CRASH_SEED=0x%" PRIx64
           "%s%s VHDKIT_CRASH_ONLY=%s:%zu unit/%s\n", kept,
           run->repro_seed, run->repro_points ? " VHDKIT_CRASH_POINTS=" : "",
           run->repro_points ? run->repro_points : "", run->name, pt->k,
           run->program ? run->program : "test-crash");
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

/* vhd_check must run and find no corruption; leaks are allowed, and so
 * is what a read-write open undoes (a trailing footer a crash overwrote).
 */
static int
check_clean (struct crash_point *pt, const char *when, bool raw)
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
  if (raw) {
    pt->run->stats.leaky += result.leaks != 0;
    pt->run->stats.recoverable += result.recoverable != 0;
  }
  else if (result.recoverable) {
    fail_point (pt, "%s: vhd_check still finds %u recoverable problem(s)"
                " after the read-write open", when, result.recoverable);
    return -1;
  }
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
  if (vhd_get_size (d) != crash_virtual_size (pt->run) ||
      crash_disk_io (pt->run, d, CRASH_IO_READ, got, pt->run->disk_size, 0,
                     0) < 0) {
    fail_point (pt, "%s: reading the disk (size %" PRIu64 "): %s", when,
                vhd_get_size (d), vhd_last_error ());
    vhd_close (d);
    return -1;
  }
  vhd_close (d);
  return 0;
}

/* The independent reader (tests/vhd-chain-read.py, written from the
 * specification) reads a sample of the states: each is kept as
 * spec-N.vhd beside the parent, and at the end of the run one python3
 * reads them all (python starts slowly) and the engine reads each again;
 * the two must agree.
 */
static void
spec_keep (struct crash_point *pt, const char *from)
{
  struct crash_run *run = pt->run;
  struct spec_sample *sm;
  char path[450];

  if (run->n_spec == sizeof run->spec / sizeof run->spec[0])
    return;
  sm = &run->spec[run->n_spec];
  snprintf (path, sizeof path, "%s/spec-%zu.vhd", run->dir, run->n_spec);
  if (from) {
    /* The repaired image: copy the file. */
    FILE *in = fopen (from, "rb"), *out = fopen (path, "wb");
    char b[65536];
    size_t n;
    int ok = in && out;
    while (ok && (n = fread (b, 1, sizeof b, in)) > 0)
      ok = fwrite (b, 1, n, out) == n;
    if (in)
      fclose (in);
    if (out && fclose (out) != 0)
      ok = 0;
    if (!ok)
      return;
  }
  else if (crash_file_save (pt->file, path) < 0)
    return;
  sm->k = pt->k;
  snprintf (sm->label, sizeof sm->label, "%s%s", pt->label,
            from ? " (after recovery)" : "");
  run->n_spec++;
}

static void
spec_failure (struct crash_run *run, const struct spec_sample *sm,
              const char *why)
{
  run->stats.failures++;
  fprintf (stderr, "\nCRASH FAILURE in %s: power lost at file op %zu, state"
           " \"%s\": %s\n  reproduce: VHDKIT_CRASH_SEED=0x%" PRIx64
           " VHDKIT_CRASH_SPEC_EVERY=1 VHDKIT_CRASH_ONLY=%s:%zu"
           " unit/%s\n", run->name, sm->k, sm->label, why,
           run->repro_seed, run->name, sm->k,
           run->program ? run->program : "test-crash");
}

static void
spec_read_all (struct crash_run *run, uint8_t *got, uint8_t *theirs)
{
  const char *srcdir = getenv ("VHDKIT_SRCDIR");
  char list[450], cmd[2400], img[450], out[450];
  struct vhd_open_options ro = { .readonly = true };
  FILE *f;
  int st;

  if (run->n_spec == 0)
    return;
  if (srcdir == NULL) {
    spec_failure (run, &run->spec[0], "VHDKIT_SRCDIR is not set, so the"
                  " spec reader cannot be found (run it through make)");
    return;
  }
  snprintf (list, sizeof list, "%s/spec.list", run->dir);
  f = fopen (list, "w");
  if (f == NULL)
    return;
  for (size_t i = 0; i < run->n_spec; i++) {
    fprintf (f, "%s/spec-%zu.raw\t%s/spec-%zu.vhd", run->dir, i, run->dir, i);
    if (run->differencing)
      fprintf (f, "\t%s", run->parent_path);
    fprintf (f, "\n");
  }
  fclose (f);
  snprintf (cmd, sizeof cmd, "python3 -c '\n"
            "import importlib.util, os, sys\n"
            "s = importlib.util.spec_from_file_location(\"r\", sys.argv[1])\n"
            "m = importlib.util.module_from_spec(s)\n"
            "s.loader.exec_module(m)\n"
            "for line in open(sys.argv[2]):\n"
            "    out, *paths = line.rstrip(\"\\n\").split(\"\\t\")\n"
            "    try:\n"
            "        m.cmd_read(out, paths)\n"
            "    except SystemExit as e:\n"
            "        print(\"spec reader:\", paths[0], e, file=sys.stderr)\n"
            "        if os.path.exists(out):\n"
            "            os.unlink(out)\n"
            "' '%s/vhd-chain-read.py' '%s'", srcdir, list);
  st = system (cmd);
  if (st != 0) {
    spec_failure (run, &run->spec[0], "python3 could not run the spec"
                  " reader");
    return;
  }
  for (size_t i = 0; i < run->n_spec; i++) {
    const struct spec_sample *sm = &run->spec[i];
    vhd_disk *d;
    size_t n = 0;

    run->stats.spec_reads++;
    snprintf (img, sizeof img, "%s/spec-%zu.vhd", run->dir, i);
    snprintf (out, sizeof out, "%s/spec-%zu.raw", run->dir, i);
    if (vhd_open (img, &ro, &d) < 0) {
      spec_failure (run, sm, "the engine no longer opens its copy");
      continue;
    }
    if (crash_disk_io (run, d, CRASH_IO_READ, got, run->disk_size, 0,
                       0) < 0) {
      spec_failure (run, sm, "the engine no longer reads its copy");
      vhd_close (d);
      continue;
    }
    vhd_close (d);
    f = fopen (out, "rb");
    if (f == NULL) {
      spec_failure (run, sm, "the spec reader refuses it (see its message"
                    " above)");
      continue;
    }
    n = fread (theirs, 1, run->disk_size + 1, f);
    fclose (f);
    if (n != run->disk_size || memcmp (theirs, got, n) != 0) {
      char why[200];
      uint64_t b = 0;
      while (b < n && b < run->disk_size && theirs[b] == got[b])
        b++;
      snprintf (why, sizeof why, "the spec reader reads %zu bytes, which"
                " differ from the engine's from byte %" PRIu64, n, b);
      spec_failure (run, sm, why);
    }
    unlink (out);
    unlink (img);
  }
  unlink (list);
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
    if (crash_disk_io (pt->run, d, CRASH_IO_WRITE, buf, len, off, 0) < 0) {
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

/* Another implementation's opinion of a recovered VHDX: qemu-img check
 * must find it clean (exit 0; 2 is corruption, 3 leaks).  Skipped, once
 * said, when qemu-img is missing.
 */
static void
qemu_check (struct crash_point *pt)
{
  static int have_qemu = -1;
  char cmd[1200];
  int status;

  if (have_qemu < 0) {
    have_qemu = system ("qemu-img --version >/dev/null 2>&1") == 0;
    if (!have_qemu)
      printf ("%s: qemu-img is missing: no qemu-img check of the recovered"
              " states\n", pt->run->name);
  }
  if (!have_qemu)
    return;
  snprintf (cmd, sizeof cmd, "qemu-img check -q -f vhdx '%s' >&2",
            pt->run->scratch_path);
  status = system (cmd);
  if (status != 0) {
    fail_point (pt, "after a read-write open: qemu-img check -f vhdx"
                " exits with status %d (see its message above)",
                WIFEXITED (status) ? WEXITSTATUS (status) : -1);
    return;
  }
  pt->run->stats.qemu_checks++;
}

/* Save the state and check it.  First as the crash left it, before
 * anything repairs it: vhd_check finds no corruption, it opens read-only,
 * and every sector reads as the last completed flush left it or as a
 * later request put it (never anything else); a sample of states is read
 * by the spec reader too.  Then a read-write open (recovery): it checks
 * fully clean and reads exactly as the raw image did.
 */
static void
check_state_once (struct crash_point *pt, enum subset_kind kind,
                  uint8_t *got, uint8_t *scratch, struct rng *r)
{
  struct crash_run *run = pt->run;
  bool from_copy = false, spec;
  vhd_disk *d;
  uint64_t bad;
  size_t new_sectors = 0;
  int e;

  run->stats.subsets++;
  run->stats.by_kind[kind]++;
  /* The spec reader (tests/vhd-chain-read.py) reads VHD only; a VHDX
   * state is checked by qemu-img instead, after recovery.
   */
  spec = !run->vhdx && run->spec_every
         && rng_below (r, run->spec_every) == 0;
  if ((e = crash_file_save (pt->file, run->scratch_path)) < 0) {
    fail_point (pt, "writing %s: %s", run->scratch_path, strerror (-e));
    return;
  }
  /* A failed check does not stop the rest: each failure is reported. */
  check_clean (pt, "as the crash left it", true);
  if (read_disk (pt, "as the crash left it", got, &from_copy) < 0)
    return;
  run->stats.footer_from_copy += from_copy;
  bad = first_bad_sector (pt, got, &new_sectors);
  run->stats.new_sectors += new_sectors;
  if (bad != UINT64_MAX) {
    uint64_t i = bad * SECTOR;
    while (got[i] == pt->expected[i])
      i++;
    fail_point (pt, "as the crash left it: sector %" PRIu64 " (byte %"
                PRIu64 " reads 0x%02x, the last completed flush left 0x%02x)"
                " holds neither what that flush left nor what a later"
                " request put there", bad, i, got[i], pt->expected[i]);
    return;
  }
  /* The spec reader wants the trailing footer; a raw image that needs
   * the copy is read by it after recovery.
   */
  if (spec && !from_copy)
    spec_keep (pt, NULL);
  if (vhd_open (run->scratch_path, NULL, &d) < 0) {
    fail_point (pt, "it does not open read-write: %s", vhd_last_error ());
    return;
  }
  vhd_close (d);
  check_clean (pt, "after a read-write open", false);
  if (read_disk (pt, "after a read-write open", scratch, NULL) < 0)
    return;
  if (memcmp (scratch, got, run->disk_size) != 0) {
    bad = 0;
    while (scratch[bad] == got[bad])
      bad++;
    fail_point (pt, "the read-write open changed the disk: byte %" PRIu64
                " read 0x%02x before it, 0x%02x after", bad, got[bad],
                scratch[bad]);
    return;
  }
  if (spec && from_copy)
    spec_keep (pt, run->scratch_path);
  if (run->vhdx && run->qemu_check_every
      && rng_below (r, run->qemu_check_every) == 0)
    qemu_check (pt);
  if (rng_below (r, 100) < run->post_write_percent)
    write_after_recovery (pt, got, scratch, scratch + run->disk_size, r);
}

/* The same, and nothing it did changed the parent of a differencing
 * run (crashsim forbids writes to it until the run ends): a recovery
 * that replayed or repaired into the parent fails the state that made
 * it, and the parent's bytes are compared once more at the end.
 */
static void
check_state (struct crash_point *pt, enum subset_kind kind,
             uint8_t *got, uint8_t *scratch, struct rng *r)
{
  unsigned before = crash_violations ();

  check_state_once (pt, kind, got, scratch, r);
  if (crash_violations () != before)
    fail_point (pt, "checking it changed a file that must not change (the"
                " parent?) or left io_uring requests in flight: see"
                " crashsim's message above");
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

/* The newest pending op that changes bytes reaches the file, and none of
 * those before it: the state that a write-back order bug (an entry
 * written before what it relies on was synced) leaves most surely, which
 * the random subsets reach only by luck.  Not when that op is the only
 * one: then it is "all".
 */
static void
check_newest_alone (struct crash_point *pt, const struct crash_file *base,
                    struct crash_file *work, uint8_t *got, uint8_t *scratch)
{
  size_t newest = SIZE_MAX, changing = 0;
  struct rng r;

  for (size_t i = pt->durable; i < pt->k; i++) {
    enum crash_op_kind kind = crash_get_op (i)->kind;
    if (kind != CRASH_OP_SYNC && kind != CRASH_OP_DIR_SYNC &&
        kind != CRASH_OP_NAME_ADD && kind != CRASH_OP_NAME_REMOVE &&
        kind != CRASH_OP_NAME_MOVE) {
      newest = i;
      changing++;
    }
  }
  if (changing < 2)
    return;
  pt->file = work;
  pt->label = "newest";
  crash_file_copy (work, base);
  crash_file_apply (work, crash_get_op (newest), 0,
                    crash_get_op (newest)->length);
  snprintf (pt->applied, sizeof pt->applied, "op %zu alone", newest);
  r = state_rng (pt, 1000);
  check_state (pt, SUBSET_RANDOM, got, scratch, &r);
}

/* Every state of one crash point. */
static void
try_point (struct crash_point *pt, const struct crash_file *base,
           struct crash_file *work, size_t *last_none, uint8_t *got,
           uint8_t *scratch)
{
  struct crash_run *run = pt->run;
  struct rng r;
  struct crash_piece *pieces;

  run->stats.points++;
  pt->applied[0] = '\0';
  /* Losing every pending op gives the same file for every k after one
   * sync; while no further flush completes, the earliest k allows the
   * fewest versions.
   */
  if (*last_none != pt->durable || pt->last_none_seq != pt->covered_seq) {
    *last_none = pt->durable;
    pt->last_none_seq = pt->covered_seq;
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

  if (run->newest_alone)
    check_newest_alone (pt, base, work, got, scratch);

  pieces = malloc (crash_count_pieces (pt->durable, pt->k) * sizeof *pieces);
  if (pieces == NULL) {
    fail_point (pt, "out of memory");
    return;
  }
  for (unsigned j = 0; j <= run->random_subsets; j++) {
    bool torn = j == run->random_subsets;
    size_t n;
    char label[32];

    r = state_rng (pt, 2 + j);
    n = crash_random_pieces (pt->durable, pt->k, torn, &r, pieces);

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
                "%zu of the %zu..%zu ops' 512-byte sectors, shuffled", n,
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
  uint8_t *got = malloc (size), *scratch = malloc (2 * size + 1);
  size_t base_done = 0;
  size_t last_none = SIZE_MAX;

  pt.expected = malloc (size);
  pt.head = malloc (size / SECTOR * sizeof *pt.head);
  if (!got || !scratch || !pt.expected || !pt.head ||
      crash_file_init (&base) < 0 || crash_file_init (&work) < 0) {
    fprintf (stderr, "%s: out of memory\n", run->name);
    run->stats.failures++;
    return;
  }
  for (uint64_t s = 0; s < size / SECTOR; s++)
    pt.head[s] = SIZE_MAX;
  for (size_t i = 0; i < n; i++) {
    size_t k = ks[i] <= crash_n_ops () ? ks[i] : crash_n_ops ();

    pt.k = k;
    pt.durable = crash_durable_prefix (k);
    for (; base_done < pt.durable; base_done++)
      crash_file_apply (&base, crash_get_op (base_done), 0,
                        crash_get_op (base_done)->length);
    if (build_expected (&pt, scratch) < 0) {
      fprintf (stderr, "%s: out of memory\n", run->name);
      run->stats.failures++;
      break;
    }
    try_point (&pt, &base, &work, &last_none, got, scratch);
  }
  spec_read_all (run, got, scratch);
  if (run->differencing)
    check_parent_unchanged (run);
  crash_file_free (&base);
  crash_file_free (&work);
  free (pt.versions);
  free (pt.head);
  free (pt.expected);
  free (got);
  free (scratch);
}
