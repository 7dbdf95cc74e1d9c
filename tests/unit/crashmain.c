/* vhdkit tests: what the crash test programs (test-crash, test-crash-vhdx)
 * share around crashrun.c: their options from the environment, each run
 * in a child process, and the totals.
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

#include "crashrun.h"

static unsigned
env_unsigned (const char *name, unsigned dflt)
{
  const char *e = getenv (name);

  return e && *e ? (unsigned) strtoul (e, NULL, 0) : dflt;
}

void
crash_program_init (struct crash_program *p, const char *name,
                    uint64_t default_seed)
{
  const char *e, *tmp = getenv ("TMPDIR");

  memset (p, 0, sizeof *p);
  p->name = name;
  p->base_seed = default_seed;
  if ((e = getenv ("VHDKIT_CRASH_SEED")) && *e)
    p->base_seed = strtoull (e, NULL, 0);
  p->only_k = -1;
  if ((e = getenv ("VHDKIT_CRASH_ONLY")) && *e) {
    char *colon;

    snprintf (p->only_name, sizeof p->only_name, "%s", e);
    colon = strchr (p->only_name, ':');
    if (colon) {
      *colon = '\0';
      p->only_k = strtoll (colon + 1, NULL, 0);
    }
  }
  p->short_requests = 60;
  if ((e = getenv ("VHDKIT_CRASH_REQUESTS")) && *e)
    p->short_requests = strtoull (e, NULL, 0);
  p->random_subsets = env_unsigned ("VHDKIT_CRASH_SUBSETS", 1);
  p->post_write_percent = env_unsigned ("VHDKIT_CRASH_POST_WRITES", 33);
  p->spec_every = env_unsigned ("VHDKIT_CRASH_SPEC_EVERY", 50);
  p->qemu_every = env_unsigned ("VHDKIT_CRASH_QEMU_EVERY", 10);
  p->show_failures = env_unsigned ("VHDKIT_CRASH_SHOW", 10);
  if ((e = getenv ("VHDKIT_CRASH_KEEP")) && *e)
    snprintf (p->keep_dir, sizeof p->keep_dir, "%s", e);
  else
    snprintf (p->keep_dir, sizeof p->keep_dir, "%s/vhdkit-%s-failures",
              tmp ? tmp : "/tmp", name);
}

void
crash_print_stats (const char *what, const struct crash_stats *s)
{
  printf ("%s: %zu workload requests, %zu file ops recorded (%zu through"
          " io_uring, %zu syncs); %zu crash points, %zu images rebuilt and"
          " checked (%.1f per point; %zu none/%zu all/%zu random/%zu torn),"
          " %zu duplicate states skipped; raw images: %zu with the footer"
          " from the copy, %zu recoverable, %zu with leaks, %zu sectors"
          " holding a post-flush write; %zu read by the spec reader; %zu"
          " recovered images clean by qemu-img check; %zu post-recovery"
          " write rounds; %u failures\n",
          what, s->requests, s->file_ops, s->ring_ops, s->syncs, s->points,
          s->subsets,
          s->points ? (double) s->subsets / (double) s->points : 0.0,
          s->by_kind[SUBSET_NONE], s->by_kind[SUBSET_ALL],
          s->by_kind[SUBSET_RANDOM], s->by_kind[SUBSET_TORN],
          s->duplicates, s->footer_from_copy, s->recoverable, s->leaky,
          s->new_sectors, s->spec_reads, s->qemu_checks, s->post_writes,
          s->failures);
  fflush (stdout);
}

/* The run in a child process, so that an engine that crashes (a segfault,
 * an abort) fails that run, reported, and the others still run.  The
 * child sends its counts back through a pipe.
 */
void
crash_program_run (struct crash_program *p, const char *scratch,
                   struct crash_run *run, size_t random_points)
{
  struct crash_stats stats = { .failures = 0 };
  const char *points = getenv ("VHDKIT_CRASH_POINTS");
  int fds[2], status;
  pid_t pid;
  ssize_t n;

  if (p->only_name[0] && strcmp (p->only_name, run->name) != 0)
    return;
  run->random_subsets = p->random_subsets;
  run->post_write_percent = p->post_write_percent;
  run->program = p->name;
  run->keep_dir = p->keep_dir;
  run->kept_images = &p->kept_images;
  run->show_failures = p->show_failures;
  run->repro_seed = p->base_seed;
  run->repro_points = points;
  snprintf (run->dir, sizeof run->dir, "%s/%s", scratch, run->name);
  fflush (stdout);
  fflush (stderr);
  assert_int_equal (pipe (fds), 0);
  pid = fork ();
  assert_true (pid >= 0);
  if (pid == 0) {
    /* cmocka catches these to fail a test and carry on; a child that
     * carried on would run the rest of the tests too.  Die instead.
     */
    static const int fatal[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGSYS,
                                 SIGABRT };
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
      signal (fatal[i], SIG_DFL);
    close (fds[0]);
    crash_run_in_child (run, random_points, p->only_k);
    run->stats.kept = p->kept_images;
    fflush (stdout);
    fflush (stderr);
    _exit (write (fds[1], &run->stats, sizeof run->stats)
           == sizeof run->stats ? 0 : 1);
  }
  close (fds[1]);
  n = read (fds[0], &stats, sizeof stats);
  close (fds[0]);
  assert_int_equal (waitpid (pid, &status, 0), pid);
  if (n != sizeof stats || !WIFEXITED (status) || WEXITSTATUS (status)) {
    fprintf (stderr, "\nCRASH FAILURE in %s: the test process died (%s); the"
             " engine crashed during the workload or a check (gdb with"
             " follow-fork-mode child: VHDKIT_CRASH_SEED=0x%" PRIx64 "%s%s"
             " VHDKIT_CRASH_ONLY=%s unit/%s)\n", run->name,
             WIFSIGNALED (status) ? strsignal (WTERMSIG (status))
                                  : "exited early", p->base_seed,
             points ? " VHDKIT_CRASH_POINTS=" : "", points ? points : "",
             run->name, p->name);
    memset (&stats, 0, sizeof stats);
    stats.failures = 1;
  }
  else
    p->kept_images = stats.kept;
  printf ("%s (seed 0x%" PRIx64 ", %.1f s) ", run->name, run->seed,
          stats.seconds);
  crash_print_stats ("", &stats);
  crash_add_stats (&p->totals, &stats);
  if (stats.failures)
    fprintf (stderr, "%s: %u checks failed (seed 0x%" PRIx64 "); reproduce"
             " one with the VHDKIT_CRASH_SEED and VHDKIT_CRASH_ONLY printed"
             " above\n", run->name, stats.failures, run->seed);
}

void
crash_program_assert_no_failures (const struct crash_program *p,
                                  unsigned before)
{
  if (p->totals.failures != before)
    fail_msg ("%u crash-consistency checks failed: see the CRASH FAILURE"
              " reports above", p->totals.failures - before);
}
