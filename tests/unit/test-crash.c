/* Crash consistency under simulated power loss.
 *
 * A seeded random workload (allocating, unaligned, block-crossing and FUA
 * writes; zero with and without VHD_IO_MAY_TRIM; trim; flushes; reopens)
 * runs on a small dynamic disk, on a differencing child of a dynamic
 * parent that holds a pattern, and on a disk of 144 blocks (its BAT spans
 * two sectors), with every change to the image file recorded by
 * crashsim.c: pwrite and friends, and what the io_uring ring submits.
 * Each workload runs on the default backend (the ring, which takes every
 * multi-segment write) or on pread; others run four writer threads with
 * flushes racing on one vhd_disk, as nbdkit's PARALLEL model does, each
 * thread owning its own interleaved stripes of sectors.  The recording is
 * then crashed offline: power is lost at op k, for every k of short runs
 * and for random k of longer ones, and the file is rebuilt from what was
 * durable at the last sync before k plus a subset (none, all in order,
 * random subsets in random orders, and the same torn into 512-byte
 * sectors) of the ops after it.  The rebuilt image, as the crash left
 * it, must
 *  - check with no corruption (vhd_check before anything repairs it;
 *    leaks and a trailing footer to restore from the copy are allowed),
 *  - open read-only and read, in each sector, what the last completed
 *    flush left there or what a later request (begun before the crash)
 *    put there, nothing else; a flush covers the requests that had
 *    completed before it was called;
 *  - read the same through the spec reader (tests/vhd-chain-read.py), for
 *    one state in VHDKIT_CRASH_SPEC_EVERY;
 * then open read-write (recovery), check fully clean, read exactly as
 * before, and take new writes, a flush and a reopen, still checking
 * clean.  The parent of a differencing disk must never be written, and a
 * ring batch must never return with a request in flight (a submit error
 * is injected to show it).
 *
 * Environment:
 *   VHDKIT_CRASH_SEED      the workloads' seed (default fixed)
 *   VHDKIT_CRASH_REQUESTS  requests of each short run, which is crashed at
 *                          every file op (default 60)
 *   VHDKIT_CRASH_POINTS    random crash points over the long runs of 1000
 *                          requests, 250 per run (default 500)
 *   VHDKIT_CRASH_SUBSETS   random states per crash point, besides none,
 *                          all and one torn state (default 1)
 *   VHDKIT_CRASH_POST_WRITES  percent of states written again after
 *                          recovery (default 33)
 *   VHDKIT_CRASH_SPEC_EVERY  the spec reader reads 1 state in this many
 *                          (default 50; 0: never)
 *   VHDKIT_CRASH_ONLY      NAME or NAME:K: one run, or one crash point of
 *                          it, to reproduce a failure
 *   VHDKIT_CRASH_SHOW      failures of a run printed in full (default 10)
 *   VHDKIT_CRASH_KEEP      folder for the images of the first 20 failures
 *                          (default $TMPDIR/vhdkit-test-crash-failures)
 *   VHDKIT_CRASH_REAL_SYNC=1  also make the real fdatasync calls
 *   VHDKIT_IO=pread        every run on pread (valgrind cannot follow the
 *                          ring's reads)
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "vhdkit.h"
#include "crashsim.h"
#include "crashrun.h"
#include "scratch.h"

#define MiB (UINT64_C (1) << 20)

static struct crash_program prog;

/* What a run varies. */
struct run_shape {
  bool differencing;
  bool ring;                    /* the default backend, else pread */
  unsigned threads;
  uint64_t disk_size;
  unsigned hot_percent;
};

static void
one_run (const char *name, struct run_shape shape, size_t n_requests,
         uint64_t seed, size_t random_points)
{
  struct crash_run run = {
    .name = name, .differencing = shape.differencing, .ring = shape.ring,
    .threads = shape.threads, .hot_percent = shape.hot_percent,
    .seed = seed, .spec_every = prog.spec_every,
    .disk_size = shape.disk_size, .n_requests = n_requests,
  };

  crash_program_run (&prog, dir, &run, random_points);
}

/* The runs of one test all run; then it fails if any of them did. */
#define assert_no_failures(before) \
  crash_program_assert_no_failures (&prog, (before))

#define DYNAMIC(ring_) { .ring = ring_, .disk_size = 4 * MiB }
#define DIFFERENCING(ring_) \
  { .differencing = true, .ring = ring_, .disk_size = 4 * MiB }

static void
test_dynamic_crash_at_every_op (void **state)
{
  unsigned before = prog.totals.failures;
  one_run ("dynamic-every-op-ring", (struct run_shape) DYNAMIC (true),
           prog.short_requests, prog.base_seed + 1, 0);
  one_run ("dynamic-every-op-pread", (struct run_shape) DYNAMIC (false),
           prog.short_requests, prog.base_seed + 2, 0);
  assert_no_failures (before);
}

static void
test_differencing_crash_at_every_op (void **state)
{
  unsigned before = prog.totals.failures;
  one_run ("differencing-every-op-ring",
           (struct run_shape) DIFFERENCING (true),
           prog.short_requests, prog.base_seed + 3, 0);
  one_run ("differencing-every-op-pread",
           (struct run_shape) DIFFERENCING (false), prog.short_requests,
           prog.base_seed + 4, 0);
  assert_no_failures (before);
}

/* Four writer threads with flushes racing on one disk. */
static void
test_threads_crash_at_every_op (void **state)
{
  unsigned before = prog.totals.failures;
  struct run_shape dyn = { .ring = true, .threads = 4,
                           .disk_size = 4 * MiB };
  struct run_shape diff = dyn;

  diff.differencing = true;
  one_run ("threads-dynamic-every-op", dyn, 2 * prog.short_requests,
           prog.base_seed + 5, 0);
  one_run ("threads-differencing-every-op", diff, 2 * prog.short_requests,
           prog.base_seed + 6, 0);
  assert_no_failures (before);
}

/* 144 blocks of 512 KiB: the BAT takes two sectors, so a flush writes
 * (and a crash tears) more than one.
 */
static void
test_big_disk_crash_at_random_points (void **state)
{
  unsigned before = prog.totals.failures;
  struct run_shape big = { .ring = true, .disk_size = 72 * MiB,
                           .hot_percent = 70 };
  /* Each state reads 72 MiB a few times: random points, not every op
   * (as many as the short runs' requests, at most 60).
   */
  size_t points = prog.short_requests < 60 ? prog.short_requests : 60;

  one_run ("big-dynamic-random", big, prog.short_requests,
           prog.base_seed + 7, points);
  big.differencing = true;
  big.threads = 4;
  one_run ("big-threads-differencing-random", big, 2 * prog.short_requests,
           prog.base_seed + 8, points);
  assert_no_failures (before);
}

/* Longer runs, random crash points: VHDKIT_CRASH_POINTS in all, at most
 * 250 per run of 1000 requests, going round dynamic, differencing, ring,
 * pread and threads.
 */
static void
test_crash_at_random_points_of_long_runs (void **state)
{
  const char *e = getenv ("VHDKIT_CRASH_POINTS");
  size_t want = e ? strtoull (e, NULL, 0) : 500;
  unsigned before = prog.totals.failures;
  char name[64];

  for (unsigned i = 0; want > 0; i++) {
    size_t n = want < 250 ? want : 250;
    struct run_shape shape = {
      .differencing = i % 2, .ring = i % 4 < 2 || i % 3 == 0,
      .threads = i % 3 == 2 ? 4 : 1,
      .disk_size = i % 5 == 4 ? 72 * MiB : 8 * MiB, .hot_percent = 80,
    };
    snprintf (name, sizeof name, "%s%s-%s-long-%u",
              shape.threads > 1 ? "threads-" : "",
              shape.differencing ? "differencing" : "dynamic",
              shape.ring ? "ring" : "pread", i);
    one_run (name, shape, 1000, prog.base_seed + 100 + i, n);
    want -= n;
  }
  assert_no_failures (before);
}

struct submit_error_test {
  char path[600];
  unsigned violations, violations_before;
  int write_result, after_result;
  const char *backend;
};

static void *
submit_error_thread (void *arg)
{
  struct submit_error_test *t = arg;
  const uint64_t at = VHD_BLOCK_SIZE_SMALL - 1000;
  uint8_t buf[3000], back[3000];
  vhd_disk *d;

  t->backend = vhd_io_backend ();
  if (crash_open_disk (t->path, false, &d) < 0)
    return NULL;
  /* Unaligned and across a block boundary: a bounce buffer, two
   * segments, so the ring; its submit fails with the requests in flight.
   */
  memset (buf, 0xa5, sizeof buf);
  crash_inject_submit_errors (1);
  t->write_result = vhd_pwrite (d, buf, sizeof buf, at, 0);
  crash_inject_submit_errors (0);
  t->violations = crash_violations ();
  if (t->violations != t->violations_before) {
    /* Stale completions are left in the ring: the next batch on it could
     * wait for ever.  The test fails on the count; stop here.
     */
    return NULL;
  }
  /* The ring still works for the next request, and nothing stale in it
   * changes the data.
   */
  memset (buf, 0x5a, sizeof buf);
  t->after_result = vhd_pwrite (d, buf, sizeof buf, at, 0);
  if (t->after_result == 0 && vhd_pread (d, back, sizeof back, at) == 0 &&
      memcmp (back, buf, sizeof buf) != 0)
    t->after_result = -1;
  vhd_close (d);
  return NULL;
}

/* A failed io_uring submit must not return before every request that
 * the kernel took has completed: write_unaligned frees its bounce buffer
 * at once.
 */
static void
test_ring_submit_error_reaps_in_flight (void **state)
{
  struct submit_error_test t = { .write_result = 1 };
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = VHD_CREATE_VERSION_2 };
  const char *e = getenv ("VHDKIT_IO");
  char *before = e ? strdup (e) : NULL;
  pthread_t tid;
  vhd_disk *d;

  if (before && strcmp (before, "pread") == 0) {
    printf ("test_ring_submit_error_reaps_in_flight: VHDKIT_IO=pread: the"
            " ring is not used, nothing to test\n");
    free (before);
    return;
  }
  snprintf (t.path, sizeof t.path, "%s/submit-error.vhd", dir);
  p.version2.maximum_size = 4 * MiB;
  p.version2.block_size_in_bytes = VHD_BLOCK_SIZE_SMALL;
  assert_int_equal (vhd_create_virtual_disk (&st, t.path, VHD_ACCESS_NONE,
                                             NULL, 0, 0, &p, NULL, &d), 0);
  vhd_close (d);
  unsetenv ("VHDKIT_IO");
  t.violations_before = crash_violations ();
  assert_int_equal (pthread_create (&tid, NULL, submit_error_thread, &t), 0);
  pthread_join (tid, NULL);
  if (before)
    setenv ("VHDKIT_IO", before, 1);
  free (before);
  assert_non_null (t.backend);
  if (strcmp (t.backend, "io_uring") != 0)
    fail_msg ("io_uring is unavailable here: the submit-error path cannot"
              " be tested");
  if (t.write_result >= 0)
    fail_msg ("the write whose submit failed returned %d", t.write_result);
  if (t.violations != t.violations_before)
    fail_msg ("vhd_io_run returned after a submit error with io_uring"
              " requests still in flight (see crashsim above)");
  assert_int_equal (t.after_result, 0);
}

static int
setup (void **state)
{
  return make_scratch ("test-crash");
}

static int
teardown (void **state)
{
  crash_print_stats ("test-crash total", &prog.totals);
  return remove_scratch ();
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_ring_submit_error_reaps_in_flight),
    cmocka_unit_test (test_dynamic_crash_at_every_op),
    cmocka_unit_test (test_differencing_crash_at_every_op),
    cmocka_unit_test (test_threads_crash_at_every_op),
    cmocka_unit_test (test_big_disk_crash_at_random_points),
    cmocka_unit_test (test_crash_at_random_points_of_long_runs),
  };

  crash_program_init (&prog, "test-crash", UINT64_C (0x5eed0f0c4a5b));
  /* The checks of rebuilt images run in this thread with the backend
   * that the environment gives; each workload runs in threads of its own
   * with the backend its run asks for.
   */
  printf ("test-crash: seed 0x%llx (VHDKIT_CRASH_SEED), checks use the %s"
          " backend, workloads the default one (ring) or pread as each run"
          " says%s\n", (unsigned long long) prog.base_seed, vhd_io_backend (),
          getenv ("VHDKIT_IO") && strcmp (getenv ("VHDKIT_IO"), "pread") == 0
          ? " (VHDKIT_IO=pread: all of them pread)" : "");
  return cmocka_run_group_tests (tests, setup, teardown);
}
