/* vhdkit unit tests: the scratch folder of one test program, made by its
 * cmocka group setup and removed by its teardown:
 *
 *   static int setup (void **state) { return make_scratch ("test-io"); }
 *   static int teardown (void **state) { return remove_scratch (); }
 *
 * The folder is $TMPDIR/vhdkit-NAME-XXXXXX (or under /tmp), in dir.
 */

#ifndef VHDKIT_TESTS_SCRATCH_H
#define VHDKIT_TESTS_SCRATCH_H

#include <stdio.h>
#include <stdlib.h>

static char dir[256];

static inline int
make_scratch (const char *name)
{
  const char *tmp = getenv ("TMPDIR");

  snprintf (dir, sizeof dir, "%s/vhdkit-%s-XXXXXX", tmp ? tmp : "/tmp",
            name);
  return mkdtemp (dir) ? 0 : -1;
}

static inline int
remove_scratch (void)
{
  char cmd[300];

  snprintf (cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system (cmd);
}

#endif /* VHDKIT_TESTS_SCRATCH_H */
