/* The version macros of vhdkit-version.h (reached through vhdkit.h alone,
 * as a caller includes it), the library's vhd_get_version() and
 * configure's PACKAGE_VERSION all say the same.  Linked against the
 * shared library, so that vhd_get_version must also be exported.
 */

#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "vhdkit.h"

static void
test_version_string_is_configures_version (void **state)
{
  assert_string_equal (VHDKIT_VERSION_STRING, PACKAGE_VERSION);
}

static void
test_version_macros_spell_the_string (void **state)
{
  char spelled[64];

  snprintf (spelled, sizeof spelled, "%d.%d.%d", VHDKIT_VERSION_MAJOR,
            VHDKIT_VERSION_MINOR, VHDKIT_VERSION_MICRO);
  assert_string_equal (spelled, VHDKIT_VERSION_STRING);
}

static void
test_get_version_is_the_headers_version (void **state)
{
  const char *v = vhd_get_version ();

  assert_non_null (v);
  assert_string_equal (v, VHDKIT_VERSION_STRING);
  /* A static string: the same pointer every time. */
  assert_ptr_equal (v, vhd_get_version ());
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_version_string_is_configures_version),
    cmocka_unit_test (test_version_macros_spell_the_string),
    cmocka_unit_test (test_get_version_is_the_headers_version),
  };

  return cmocka_run_group_tests (tests, NULL, NULL);
}
