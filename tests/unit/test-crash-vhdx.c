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

static struct crash_program prog;

struct run_shape {
  bool fixed, ring;
  unsigned threads;
  uint32_t block_size;
  uint64_t disk_size;
  unsigned whole_block_percent;         /* crash_run's; 0: its default */
};

static void
one_run (const char *name, struct run_shape shape, size_t n_requests,
         uint64_t seed, size_t random_points)
{
  struct crash_run run = {
    .name = name, .vhdx = true, .fixed = shape.fixed,
    .block_size = shape.block_size, .ring = shape.ring,
    .threads = shape.threads, .seed = seed,
    .qemu_check_every = prog.qemu_every,
    .disk_size = shape.disk_size, .n_requests = n_requests,
    .whole_block_percent = shape.whole_block_percent,
  };

  crash_program_run (&prog, dir, &run, random_points);
}

#define assert_no_failures(before) \
  crash_program_assert_no_failures (&prog, (before))

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
  unsigned before = prog.totals.failures;
  struct run_shape s = { .ring = true, .block_size = MiB,
                         .disk_size = 8 * MiB, .whole_block_percent = 50 };

  one_run ("vhdx-dynamic-1m-every-op-ring", s, prog.short_requests,
           prog.base_seed + 1, 0);
  /* Four blocks, most trims and zeros whole: blocks are released while
   * written, written again after their release, released again.  The
   * seed's workload releases the last block of the file and allocates
   * another before the next flush: a driver that put the new block in
   * the released space (which the BAT in the file still gives the
   * released block) fails here.
   */
  s.disk_size = 4 * MiB;
  s.whole_block_percent = 75;
  one_run ("vhdx-release-1m-every-op-ring", s, prog.short_requests,
           prog.base_seed + 12, 0);
  s.disk_size = 8 * MiB;
  s.whole_block_percent = 0;
  /* The pread backend is the fixed and 32 MiB runs'; a pread run here
   * too would double the test's time for little (the ring takes only the
   * multi-segment writes).
   */
  s.threads = 4;
  one_run ("vhdx-threads-dynamic-1m-every-op", s, prog.short_requests,
           prog.base_seed + 3, 0);
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
  unsigned before = prog.totals.failures;
  struct run_shape s = { .ring = false, .block_size = 32 * MiB,
                         .disk_size = 40 * MiB };

  one_run ("vhdx-dynamic-32m-random", s, prog.short_requests,
           prog.base_seed + 4,
           prog.short_requests < 10 ? prog.short_requests : 10);
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
  unsigned before = prog.totals.failures;
  struct run_shape s = { .fixed = true, .ring = false, .block_size = MiB,
                         .disk_size = 8 * MiB };

  one_run ("vhdx-fixed-every-op", s, prog.short_requests,
           prog.base_seed + 5, 0);
  assert_no_failures (before);
}

static int
setup (void **state)
{
  return make_scratch ("test-crash-vhdx");
}

static int
teardown (void **state)
{
  crash_print_stats ("test-crash-vhdx total", &prog.totals);
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

  crash_program_init (&prog, "test-crash-vhdx", UINT64_C (0x5eed0f0cdd1e));
  printf ("test-crash-vhdx: seed 0x%llx (VHDKIT_CRASH_SEED), checks on the"
          " %s backend\n", (unsigned long long) prog.base_seed,
          vhd_io_backend ());
  return cmocka_run_group_tests (tests, setup, teardown);
}
