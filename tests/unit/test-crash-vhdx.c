/* Crash consistency of VHDX images under simulated power loss.
 *
 * The same simulator and checks as test-crash (crashsim.c records every
 * change to the image file; crashrun.c runs a seeded random workload of
 * writes, zeros, trims, flushes and reopens; crashcheck.c rebuilds the
 * file as a power loss at op k could have left it: what was durable at
 * the last sync before k, plus none, all, random subsets and sector-torn
 * subsets of the ops after it), on VHDX images: dynamic with 1 MiB
 * blocks (every op a crash point, with one writer and with four writer
 * threads), dynamic with 32 MiB blocks (a disk of two blocks, 10 random
 * points: each state is ~70 MiB), and fixed (every op).  Each state
 * must check with no corruption (a log to replay is allowed: that is
 * "recoverable"), open read-only (the log replayed into an overlay) and
 * read, sector by sector, what the last completed flush left or what a
 * later request put there; then open read-write (the log replayed into
 * the file), check fully clean and read the same; for one state in
 * VHDKIT_CRASH_QEMU_EVERY (default 10) qemu-img check -f vhdx must find
 * the recovered image clean too (skipped when qemu-img is missing).
 *
 * Environment: as test-crash (VHDKIT_CRASH_SEED, VHDKIT_CRASH_REQUESTS,
 * VHDKIT_CRASH_SUBSETS, VHDKIT_CRASH_POST_WRITES, VHDKIT_CRASH_ONLY,
 * VHDKIT_CRASH_SHOW, VHDKIT_CRASH_KEEP), and VHDKIT_CRASH_QEMU_EVERY.
 */

#include <config.h>

#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "vhdkit.h"
#include "crashsim.h"
#include "crashrun.h"
#include "scratch.h"

#define MiB (UINT64_C (1) << 20)

static uint64_t base_seed = 0x5eed0f0cdd1eULL;
static char *only_name;
static long long only_k = -1;
static char keep_dir[512];
static unsigned kept_images;
static unsigned show_failures = 10;
static unsigned random_subsets = 1;
static size_t short_requests = 60;
static unsigned post_write_percent = 33;
static unsigned qemu_every = 10;

static struct crash_stats totals;

static void
print_stats (const char *what, const struct crash_stats *s)
{
  printf ("%s: %zu workload requests, %zu file ops recorded (%zu through"
          " io_uring, %zu syncs); %zu crash points, %zu images rebuilt and"
          " checked (%zu none/%zu all/%zu random/%zu torn), %zu duplicate"
          " states skipped; raw images: %zu recoverable (a log to replay),"
          " %zu with leaks, %zu sectors holding a post-flush write; %zu"
          " recovered images clean by qemu-img check; %zu post-recovery"
          " write rounds; %u failures\n",
          what, s->requests, s->file_ops, s->ring_ops, s->syncs, s->points,
          s->subsets, s->by_kind[SUBSET_NONE], s->by_kind[SUBSET_ALL],
          s->by_kind[SUBSET_RANDOM], s->by_kind[SUBSET_TORN],
          s->duplicates, s->recoverable, s->leaky, s->new_sectors,
          s->qemu_checks, s->post_writes, s->failures);
  fflush (stdout);
}

struct run_shape {
  bool fixed, ring;
  unsigned threads;
  uint32_t block_size;
  uint64_t disk_size;
  unsigned whole_block_percent;         /* crash_run's; 0: its default */
};

/* Each run in a child process, so that an engine crash fails that run,
 * reported, and the others still run; the counts come back in a pipe.
 */
static void
one_run (const char *name, struct run_shape shape, size_t n_requests,
         uint64_t seed, size_t random_points)
{
  struct crash_run run = {
    .name = name, .vhdx = true, .fixed = shape.fixed,
    .block_size = shape.block_size, .ring = shape.ring,
    .threads = shape.threads, .seed = seed, .spec_every = 0,
    .qemu_check_every = qemu_every,
    .disk_size = shape.disk_size, .n_requests = n_requests,
    .whole_block_percent = shape.whole_block_percent,
    .random_subsets = random_subsets,
    .post_write_percent = post_write_percent, .keep_dir = keep_dir,
    .repro_seed = base_seed, .show_failures = show_failures,
    .kept_images = &kept_images,
  };
  struct crash_stats stats = { .failures = 0 };
  int fds[2], status;
  pid_t pid;
  ssize_t n;

  if (only_name && strcmp (only_name, name) != 0)
    return;
  snprintf (run.dir, sizeof run.dir, "%s/%s", dir, name);
  fflush (stdout);
  fflush (stderr);
  assert_int_equal (pipe (fds), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    static const int fatal[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS,
                                 SIGABRT };
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
      signal (fatal[i], SIG_DFL);
    close (fds[0]);
    crash_run_in_child (&run, random_points, only_k);
    run.stats.kept = kept_images;
    fflush (stdout);
    fflush (stderr);
    _exit (write (fds[1], &run.stats, sizeof run.stats) == sizeof run.stats
           ? 0 : 1);
  }
  close (fds[1]);
  n = read (fds[0], &stats, sizeof stats);
  close (fds[0]);
  assert_int_equal (waitpid (pid, &status, 0), pid);
  if (n != sizeof stats || !WIFEXITED (status) || WEXITSTATUS (status)) {
    fprintf (stderr, "\nCRASH FAILURE in %s: the test process died (%s)"
             " (VHDKIT_CRASH_SEED=0x%" PRIx64 " VHDKIT_CRASH_ONLY=%s"
             " unit/test-crash-vhdx)\n", name,
             WIFSIGNALED (status) ? strsignal (WTERMSIG (status))
                                  : "exited early", base_seed, name);
    memset (&stats, 0, sizeof stats);
    stats.failures = 1;
  }
  else
    kept_images = stats.kept;
  printf ("%s (seed 0x%" PRIx64 ", %.1f s) ", name, seed, stats.seconds);
  print_stats ("", &stats);
  crash_add_stats (&totals, &stats);
}

static void
assert_no_failures (unsigned before)
{
  if (totals.failures != before)
    fail_msg ("%u crash-consistency checks failed: see the CRASH FAILURE"
              " reports above", totals.failures - before);
}

/* 1 MiB blocks, 8 MiB: eight allocations at most, one BAT page; every
 * op a crash point.  Half the trims and zeros of the one-thread run
 * cover whole blocks, which releases them (UNMAPPED, ZERO) and punches
 * their space, and later writes allocate them again.  The threads' runs
 * own stripes of 8 KiB, never a whole block: a release there would take
 * the other threads' stripes with it.
 */
static void
test_dynamic_1m_crash_at_every_op (void **state)
{
  unsigned before = totals.failures;
  struct run_shape s = { .ring = true, .block_size = MiB,
                         .disk_size = 8 * MiB, .whole_block_percent = 50 };

  one_run ("vhdx-dynamic-1m-every-op-ring", s, short_requests,
           base_seed + 1, 0);
  /* Four blocks, most trims and zeros whole: blocks are released while
   * written, written again after their release, released again.  The
   * seed's workload releases the last block of the file and allocates
   * another before the next flush: a driver that put the new block in
   * the released space (which the BAT in the file still gives the
   * released block) fails here.
   */
  s.disk_size = 4 * MiB;
  s.whole_block_percent = 75;
  one_run ("vhdx-release-1m-every-op-ring", s, short_requests,
           base_seed + 12, 0);
  s.disk_size = 8 * MiB;
  s.whole_block_percent = 0;
  /* The pread backend is the fixed and 32 MiB runs'; a pread run here
   * too would double the test's time for little (the ring takes only the
   * multi-segment writes).
   */
  s.threads = 4;
  one_run ("vhdx-threads-dynamic-1m-every-op", s, short_requests,
           base_seed + 3, 0);
  assert_no_failures (before);
}

/* 32 MiB blocks (the default) over a 40 MiB disk: two blocks, the second
 * past the disk's end in part.  Each state is ~70 MiB of file: random
 * points.  On pread: with one block boundary few writes have two
 * segments, and a run may give the ring none.
 */
static void
test_dynamic_32m_crash_at_random_points (void **state)
{
  unsigned before = totals.failures;
  struct run_shape s = { .ring = false, .block_size = 32 * MiB,
                         .disk_size = 40 * MiB };

  one_run ("vhdx-dynamic-32m-random", s, short_requests, base_seed + 4,
           short_requests < 10 ? short_requests : 10);
  assert_no_failures (before);
}

/* A fixed VHDX: no allocation, no BAT change, the log never used; data
 * writes in place must still obey the flushes.  On pread: its blocks are
 * contiguous, so a write across two is one segment and the ring (which
 * takes multi-segment writes) is never used.
 */
static void
test_fixed_crash_at_every_op (void **state)
{
  unsigned before = totals.failures;
  struct run_shape s = { .fixed = true, .ring = false, .block_size = MiB,
                         .disk_size = 8 * MiB };

  one_run ("vhdx-fixed-every-op", s, short_requests, base_seed + 5, 0);
  assert_no_failures (before);
}

static void
parse_environment (void)
{
  const char *e;

  if ((e = getenv ("VHDKIT_CRASH_SEED")) && *e)
    base_seed = strtoull (e, NULL, 0);
  if ((e = getenv ("VHDKIT_CRASH_ONLY")) && *e) {
    char *colon;
    only_name = strdup (e);
    assert_non_null (only_name);
    colon = strchr (only_name, ':');
    if (colon) {
      *colon = '\0';
      only_k = strtoll (colon + 1, NULL, 0);
    }
  }
  if ((e = getenv ("VHDKIT_CRASH_REQUESTS")) && *e)
    short_requests = strtoull (e, NULL, 0);
  if ((e = getenv ("VHDKIT_CRASH_SUBSETS")) && *e)
    random_subsets = (unsigned) strtoul (e, NULL, 0);
  if ((e = getenv ("VHDKIT_CRASH_POST_WRITES")) && *e)
    post_write_percent = (unsigned) strtoul (e, NULL, 0);
  if ((e = getenv ("VHDKIT_CRASH_QEMU_EVERY")) && *e)
    qemu_every = (unsigned) strtoul (e, NULL, 0);
  if ((e = getenv ("VHDKIT_CRASH_SHOW")) && *e)
    show_failures = (unsigned) strtoul (e, NULL, 0);
  if ((e = getenv ("VHDKIT_CRASH_KEEP")) && *e)
    snprintf (keep_dir, sizeof keep_dir, "%s", e);
  else
    snprintf (keep_dir, sizeof keep_dir, "%s/vhdkit-crash-vhdx-failures",
              getenv ("TMPDIR") ? getenv ("TMPDIR") : "/tmp");
}

static int
setup (void **state)
{
  return make_scratch ("test-crash-vhdx");
}

static int
teardown (void **state)
{
  print_stats ("test-crash-vhdx total", &totals);
  return remove_scratch ();
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_dynamic_1m_crash_at_every_op),
    cmocka_unit_test (test_fixed_crash_at_every_op),
    cmocka_unit_test (test_dynamic_32m_crash_at_random_points),
  };

  parse_environment ();
  printf ("test-crash-vhdx: seed 0x%llx (VHDKIT_CRASH_SEED), checks on the"
          " %s backend\n", (unsigned long long) base_seed,
          vhd_io_backend ());
  return cmocka_run_group_tests (tests, setup, teardown);
}
