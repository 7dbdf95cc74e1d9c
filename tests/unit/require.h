/* vhdkit unit tests: skips that CI turns into failures.  A cmocka test
 * that cannot run here calls
 *
 *   skip_or_fail ("no SEEK_DATA on %s\n", dir);
 *
 * which prints the reason, then skips the test (cmocka's skip (): the
 * program still exits 0, so automake counts it as passed), or, under
 * VHDKIT_REQUIRE=all (scripts/check exports it on CI, where everything
 * is installed and nothing may skip), fails it.  Include after cmocka.h.
 */

#ifndef VHDKIT_TESTS_REQUIRE_H
#define VHDKIT_TESTS_REQUIRE_H

#include <stdbool.h>
#include <stdlib.h>

/* The value of VHDKIT_REQUIRE, or NULL when it is unset or empty: any
 * value counts ("all" is the documented one), so that a misspelt value
 * fails rather than lets a skip through.
 */
static inline const char *
vhdkit_require (void)
{
  const char *r = getenv ("VHDKIT_REQUIRE");
  return r && *r ? r : NULL;
}

#define skip_or_fail(...)                                               \
  do {                                                                  \
    print_message (__VA_ARGS__);                                        \
    if (vhdkit_require ())                                              \
      fail_msg ("VHDKIT_REQUIRE=%s: this test may not skip (see the "   \
                "reason above)", vhdkit_require ());                    \
    skip ();                                                            \
  } while (0)

#endif /* VHDKIT_TESTS_REQUIRE_H */
