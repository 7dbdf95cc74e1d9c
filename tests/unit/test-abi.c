/* The public structs grow at their end, and every call says how large
 * the caller's struct is (vhdkit.h): a program built against a newer
 * header, with a larger struct, still works with this library when it
 * leaves the fields this library does not know at zero, and is refused
 * when it sets them; result structs are written only as far as the
 * caller's size, and a larger caller's unknown fields come back zero;
 * structs smaller than vhdkit 0.1's are refused; and 0.1's entry points
 * (vhd_open, vhd_check, vhd_get_image_info without a size) still work.
 * Linked against the shared library, so these are its exported symbols.
 */

#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "vhdkit.h"
#include "scratch.h"

#define DISK_SIZE (UINT64_C (8) << 20)

static char image[300];

static int
setup (void **state)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  vhd_disk *d = NULL;

  if (make_scratch ("test-abi") < 0)
    return -1;
  snprintf (image, sizeof image, "%s/disk.vhd", dir);
  p.version2.maximum_size = DISK_SIZE;
  if (vhd_create_virtual_disk (&st, image, VHD_ACCESS_NONE, NULL, 0, 0, &p,
                               NULL, &d) < 0) {
    fprintf (stderr, "create %s: %s\n", image, vhd_last_error ());
    return -1;
  }
  vhd_close (d);
  return 0;
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

/* A newer program's options: this library's struct and a field after. */
struct newer_options {
  struct vhd_open_options o;
  uint64_t future_field;
};

static void
test_newer_options_left_at_zero_are_accepted (void **state)
{
  struct newer_options n = { .o = { .readonly = true } };
  vhd_disk *d = NULL;

  assert_int_equal (vhd_open_sized (image, &n.o, sizeof n, &d), 0);
  assert_non_null (d);
  assert_int_equal (vhd_get_size (d), DISK_SIZE);
  vhd_close (d);
}

static void
test_newer_options_set_are_refused (void **state)
{
  struct newer_options n = { .o = { .readonly = true }, .future_field = 1 };
  vhd_disk *d = NULL;

  assert_int_equal (vhd_open_sized (image, &n.o, sizeof n, &d), -ENOTSUP);
  assert_null (d);
  assert_non_null (strstr (vhd_last_error (), "newer vhdkit"));
  /* The same through check. */
  struct vhd_check_result r;
  assert_int_equal (vhd_check_sized (image, &n.o, sizeof n, 0, NULL, NULL,
                                     &r, sizeof r), -ENOTSUP);
}

static void
test_options_smaller_than_0_1_are_refused (void **state)
{
  struct vhd_open_options o = { .readonly = true };
  vhd_disk *d = NULL;

  assert_int_equal (vhd_open_sized (image, &o,
                                    offsetof (struct vhd_open_options, flags),
                                    &d), -EINVAL);
  assert_null (d);
}

/* A newer program's results: this library's struct, then fields it does
 * not know, which must come back zero whatever the stack held.
 */
static void
test_newer_results_get_zeros_past_what_the_library_knows (void **state)
{
  struct {
    struct vhd_image_info info;
    unsigned char future[64];
  } ni;
  struct {
    struct vhd_check_result r;
    unsigned char future[64];
  } nr;
  vhd_disk *d = NULL;
  static const unsigned char zeros[64];

  memset (&ni, 0xa5, sizeof ni);
  memset (&nr, 0xa5, sizeof nr);
  assert_int_equal (vhd_open (image, &(struct vhd_open_options) {
                                .readonly = true }, &d), 0);
  assert_int_equal (vhd_get_image_info_sized (d, &ni.info, sizeof ni), 0);
  assert_int_equal (ni.info.current_size, DISK_SIZE);
  assert_int_equal (ni.info.disk_type, VHD_TYPE_DYNAMIC);
  assert_memory_equal (ni.future, zeros, sizeof zeros);
  vhd_close (d);

  assert_int_equal (vhd_check_sized (image, NULL, 0, 0, NULL, NULL,
                                     &nr.r, sizeof nr), 0);
  assert_int_equal (nr.r.disk_type, VHD_TYPE_DYNAMIC);
  assert_int_equal (nr.r.corruptions, 0);
  assert_memory_equal (nr.future, zeros, sizeof zeros);
}

/* A result smaller than 0.1's is refused, and nothing is written. */
static void
test_results_smaller_than_0_1_are_refused (void **state)
{
  struct vhd_image_info info;
  vhd_disk *d = NULL;

  memset (&info, 0xa5, sizeof info);
  assert_int_equal (vhd_open (image, NULL, &d), 0);
  assert_int_equal (vhd_get_image_info_sized (d, &info, 8), -EINVAL);
  assert_int_equal (((unsigned char *) &info)[0], 0xa5);
  vhd_close (d);
}

/* A program built against 0.1's header has a vhd_image_info that ends
 * with locators[8] (9448 bytes on x86-64): 0.2's fields (format, sector
 * sizes, the VHDX part) start there, and none of them is written past
 * its struct; the current size gets them filled.
 */
static void
test_0_1_sized_info_gets_nothing_of_0_2 (void **state)
{
  const size_t old_size = offsetof (struct vhd_image_info, format);
  struct vhd_image_info info;
  vhd_disk *d = NULL;

  assert_true (old_size == offsetof (struct vhd_image_info, locators)
                           + 8 * sizeof (struct vhd_locator_info));
  memset (&info, 0xa5, sizeof info);
  assert_int_equal (vhd_open (image, NULL, &d), 0);
  assert_int_equal (vhd_get_image_info_sized (d, &info, old_size), 0);
  assert_int_equal (info.current_size, DISK_SIZE);
  for (size_t i = old_size; i < sizeof info; i++)
    assert_int_equal (((unsigned char *) &info)[i], 0xa5);
  assert_int_equal (vhd_get_image_info (d, &info), 0);
  assert_int_equal (info.format, VHD_FORMAT_VHD);
  assert_int_equal (info.logical_sector_size, 512);
  assert_int_equal (info.physical_sector_size, 512);
  assert_int_equal (info.vhdx.header_sequence, 0);
  vhd_close (d);
}

/* vhdkit 0.1's programs call the functions by their plain names. */
static void
test_0_1_entry_points (void **state)
{
  struct vhd_open_options o = { .readonly = true };
  struct vhd_image_info info;
  struct vhd_check_result r;
  vhd_disk *d = NULL;

  assert_int_equal ((vhd_open) (image, &o, &d), 0);
  assert_int_equal ((vhd_get_image_info) (d, &info), 0);
  assert_int_equal (info.current_size, DISK_SIZE);
  vhd_close (d);
  assert_int_equal ((vhd_check) (image, &o, 0, NULL, NULL, &r), 0);
  assert_int_equal (r.disk_type, VHD_TYPE_DYNAMIC);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_newer_options_left_at_zero_are_accepted),
    cmocka_unit_test (test_newer_options_set_are_refused),
    cmocka_unit_test (test_options_smaller_than_0_1_are_refused),
    cmocka_unit_test (test_newer_results_get_zeros_past_what_the_library_knows),
    cmocka_unit_test (test_results_smaller_than_0_1_are_refused),
    cmocka_unit_test (test_0_1_sized_info_gets_nothing_of_0_2),
    cmocka_unit_test (test_0_1_entry_points),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
