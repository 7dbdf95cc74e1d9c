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
 * points: each state is ~70 MiB), fixed (every op), and differencing
 * (AVHDX) over a dynamic parent, across two sector bitmap chunks, with
 * the log's usual entries and with one page per entry (every op; one
 * writer and four).  Each state
 * must check with no corruption (a log to replay is allowed: that is
 * "recoverable"), open read-only (the log replayed into an overlay) and
 * read, sector by sector, what the last completed flush left or what a
 * later request put there; then open read-write (the log replayed into
 * the file), check fully clean and read the same; for one state in
 * VHDKIT_CRASH_QEMU_EVERY (default 10) qemu-img check -f vhdx must find
 * the recovered image clean too (skipped when qemu-img is missing, and
 * for differencing disks, which qemu does not open).  A differencing
 * run's parent must never change.
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
  bool fixed, ring, differencing;
  unsigned threads;
  uint32_t block_size;
  uint64_t disk_size;
  uint64_t gap_at, gap_length;          /* crash_run's; 0: no gap */
  unsigned whole_block_percent;         /* crash_run's; 0: its default */
  unsigned entry_pages;                 /* VHDKIT_VHDX_LOG_ENTRY_PAGES;
                                         * 0: unset (the log's room) */
  unsigned sequence_pages;              /* VHDKIT_VHDX_LOG_SEQUENCE_PAGES;
                                         * 0: unset (the whole log) */
  const struct request *prologue;       /* crash_run's */
  size_t n_prologue;
};

static void
one_run (const char *name, struct run_shape shape, size_t n_requests,
         uint64_t seed, size_t random_points)
{
  struct crash_run run = {
    .name = name, .vhdx = true, .fixed = shape.fixed,
    .differencing = shape.differencing,
    .block_size = shape.block_size, .ring = shape.ring,
    .threads = shape.threads, .seed = seed,
    /* qemu opens no differencing VHDX ("Operation not supported"). */
    .qemu_check_every = shape.differencing ? 0 : prog.qemu_every,
    .disk_size = shape.disk_size, .n_requests = n_requests,
    .gap_at = shape.gap_at, .gap_length = shape.gap_length,
    .prologue = shape.prologue, .n_prologue = shape.n_prologue,
    /* A flush of several log entries fails in that state first. */
    .newest_alone = shape.differencing,
    .whole_block_percent = shape.whole_block_percent,
    /* The far side of the gap reaches into a second chunk. */
    .min_bitmap_blocks = shape.differencing && shape.gap_length ? 2 : 0,
  };
  char pages[16], seq_pages[16];

  /* The engine reads it at each open, in the run's process (a fork of
   * this one) and in its checks.
   */
  if (shape.entry_pages) {
    snprintf (pages, sizeof pages, "%u", shape.entry_pages);
    setenv ("VHDKIT_VHDX_LOG_ENTRY_PAGES", pages, 1);
  }
  if (shape.sequence_pages) {
    snprintf (seq_pages, sizeof seq_pages, "%u", shape.sequence_pages);
    setenv ("VHDKIT_VHDX_LOG_SEQUENCE_PAGES", seq_pages, 1);
  }
  crash_program_run (&prog, dir, &run, random_points);
  unsetenv ("VHDKIT_VHDX_LOG_ENTRY_PAGES");
  unsetenv ("VHDKIT_VHDX_LOG_SEQUENCE_PAGES");
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
  /* Checkpoints: a sequence of at most 3 sectors (one entry of one BAT
   * page and the checkpoint's empty one) makes every flush after the
   * first begin with one.
   */
  s.sequence_pages = 3;
  one_run ("vhdx-release-checkpoints-every-op-ring", s, prog.short_requests,
           prog.base_seed + 14, 0);
  s.sequence_pages = 0;
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

/* A differencing VHDX (AVHDX) over a dynamic VHDX parent that holds a
 * pattern (every block but each fourth written, parts of some trimmed,
 * flushed, closed; crashsim fails any change to it).  1 MiB blocks of
 * 512-byte sectors: a chunk is 4096 blocks (4 GiB) and has one 1 MiB
 * sector bitmap block.  The disk is 4 GiB + 2 MiB, of which the run
 * models and reads 8 MiB: [0, 4 MiB) and [4 GiB - 2 MiB, 4 GiB + 2 MiB)
 * (crash_run's gap), so that its writes allocate PARTIALLY_PRESENT
 * blocks in two chunks, each chunk's bitmap block with the first of
 * them, and cross from one chunk into the next; the payload entries and
 * the chunks' bitmap entries sit in BAT pages 0, 7, 8 and 16.  Trims and
 * zeros write zeros into the child.  Every op a crash point; each state
 * must check clean, open read-write (the log replayed), read what the
 * flushes promised and leave the parent's bytes alone.
 *
 * The other runs put each page in a log entry of its own, so that a
 * flush is several entries, each replayed alone after a crash: their
 * order (bitmap pages, then the BAT pages from the last to the first)
 * and a sync between them are what keep every prefix valid.  Each
 * differencing request makes about twice the file ops of a dynamic
 * disk's (the log), so these runs take two thirds of the requests.
 */
#define CHUNK_512 (UINT64_C (4096) * MiB)
#define DIFF_MODEL_CHUNK_END (6 * MiB)  /* the model's offset of 4 GiB */

/* Every differencing run (its one-thread runs) begins with one flush
 * that gives both chunks their bitmap blocks: a partial sector in block
 * 0 (chunk 0's bitmap block: its entry 4096 is in BAT page 8), then a
 * write across 4 GiB, from block 4095 into block 4096 (chunk 1's bitmap
 * block, entry 8193 in page 16; block 4096's own entry 4097 is in page
 * 8).  In entries of one page, page 8 replayed without page 16 is a
 * PARTIALLY_PRESENT block 4096 with no bitmap block.
 */
static const struct request diff_prologue[] = {
  { .kind = REQ_WRITE, .offset = 4096 + 100, .length = 300,
    .data_seed = 0x5eed0001 },
  { .kind = REQ_WRITE, .offset = DIFF_MODEL_CHUNK_END - 5000,
    .length = 12000, .data_seed = 0x5eed0003 },
  { .kind = REQ_FLUSH },
};

/* The same sectors written again after the flush that set their bits,
 * with no bit to change, and flushed: a log entry that carried data
 * pages (an earlier design's, to save a sync) would be replayed over the
 * newer, flushed data; the data must survive every crash after it.
 */
static const struct request diff_rewrite_prologue[] = {
  { .kind = REQ_WRITE, .offset = 4096 + 100, .length = 300,
    .data_seed = 0x5eed0001 },
  { .kind = REQ_WRITE, .offset = DIFF_MODEL_CHUNK_END - 5000,
    .length = 12000, .data_seed = 0x5eed0003 },
  { .kind = REQ_FLUSH },
  { .kind = REQ_WRITE, .offset = 4096 + 100, .length = 300,
    .data_seed = 0x5eed0005 },
  { .kind = REQ_WRITE, .offset = DIFF_MODEL_CHUNK_END - 4096,
    .length = 4096, .data_seed = 0x5eed0007 },
  { .kind = REQ_FLUSH },
};

static void
test_differencing_crash_at_every_op (void **state)
{
  unsigned before = prog.totals.failures;
  size_t n = prog.short_requests * 2 / 3;
  struct run_shape s = {
    .differencing = true, .ring = true, .block_size = MiB,
    .disk_size = 8 * MiB, .gap_at = 4 * MiB,
    .gap_length = CHUNK_512 - 6 * MiB, .prologue = diff_prologue,
    .n_prologue = sizeof diff_prologue / sizeof diff_prologue[0],
  };

  one_run ("vhdx-differencing-1m-every-op-ring", s, n,
           prog.base_seed + 6, 0);
  s.prologue = diff_rewrite_prologue;
  s.n_prologue = sizeof diff_rewrite_prologue
                 / sizeof diff_rewrite_prologue[0];
  one_run ("vhdx-differencing-rewrite-after-flush", s,
           s.n_prologue + 6, prog.base_seed + 9, 0);
  s.prologue = diff_prologue;
  s.n_prologue = sizeof diff_prologue / sizeof diff_prologue[0];
  s.entry_pages = 1;
  one_run ("vhdx-differencing-entry-per-page-every-op", s, n,
           prog.base_seed + 7, 0);
  /* A sequence of at most 5 sectors (two entries of one page and the
   * checkpoint's empty one): checkpoints between flushes and inside
   * them, with the log wrapping round, at every op.
   */
  s.sequence_pages = 5;
  one_run ("vhdx-differencing-checkpoints-every-op", s, n,
           prog.base_seed + 13, 0);
  s.sequence_pages = 0;
  /* Four writers, flushes racing with allocations in both chunks. */
  s.threads = 4;
  s.prologue = NULL;
  s.n_prologue = 0;
  one_run ("vhdx-threads-differencing-entry-per-page-every-op", s, n,
           prog.base_seed + 8, 0);
  /* The same workload (its seed reaches both chunks even in the short
   * runs under valgrind), with checkpoints.
   */
  s.sequence_pages = 5;
  one_run ("vhdx-threads-differencing-checkpoints-every-op", s, n,
           prog.base_seed + 8, 0);
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
    cmocka_unit_test (test_differencing_crash_at_every_op),
  };

  crash_program_init (&prog, "test-crash-vhdx", UINT64_C (0x5eed0f0cdd1e));
  printf ("test-crash-vhdx: seed 0x%llx (VHDKIT_CRASH_SEED), checks on the"
          " %s backend\n", (unsigned long long) prog.base_seed,
          vhd_io_backend ());
  return cmocka_run_group_tests (tests, setup, teardown);
}
