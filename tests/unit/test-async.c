/* Unit tests of the asynchronous create (the OVERLAPPED analogue):
 * progress that rises monotonically to its completion, an eventfd that
 * fires exactly once, the result and its release, cancellation (at once,
 * midway, too late) that leaves no file, errors returned at once, and the
 * source locked against writers while the copy runs.
 */

#include <config.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "convert-helpers.h"
#include "require.h"
#include "vhdkit.h"

/* Large enough that a copy takes a while (tens of milliseconds at the
 * least), so that a cancel right after the start finds it running.
 */
#define BIG_SIZE (256 * MiB)

static char big_raw[PATH_MAX];

static int
setup (void **state)
{
  if (make_scratch ("test-async") < 0)
    return -1;
  scratch_path (big_raw, sizeof big_raw, "raw");
  write_raw (big_raw, BIG_SIZE, 1, false);
  return 0;
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

static int
new_eventfd (void)
{
  int fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);

  assert_true (fd >= 0);
  return fd;
}

static bool
event_ready (int fd, int timeout_ms)
{
  struct pollfd pfd = { .fd = fd, .events = POLLIN };

  return poll (&pfd, 1, timeout_ms) == 1 && (pfd.revents & POLLIN);
}

/* The event fired exactly once: it holds 1, and nothing comes after. */
static void
assert_fired_once (int fd)
{
  uint64_t value = 0;

  assert_true (event_ready (fd, 30000));
  assert_int_equal (read (fd, &value, sizeof value), sizeof value);
  assert_int_equal (value, 1);
  assert_false (event_ready (fd, 200));
}

static void
start (const char *source, const char *path, struct from_source *o,
       struct vhd_overlapped *ov, vhd_disk **disk)
{
  int r;

  o->overlapped = ov;
  r = create_from (source, path, o, disk);
  if (r != -EINPROGRESS)
    fail_msg ("expected -EINPROGRESS, got %d: %s", r, vhd_last_error ());
  assert_non_null (ov->internal);
}

static void
sleep_ms (long ms)
{
  struct timespec ts = { .tv_sec = ms / 1000,
                         .tv_nsec = (ms % 1000) * 1000000 };
  nanosleep (&ts, NULL);
}

static void
test_progress_and_event (void **state)
{
  char raw[PATH_MAX], path[PATH_MAX];
  struct vhd_overlapped ov = { .event_fd = new_eventfd () };
  struct vhd_operation_progress p = { 0 };
  struct from_source o = { 0 };
  uint64_t last = 0;
  unsigned samples = 0;
  vhd_disk *disk = NULL;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, 64 * MiB, 2, false);
  scratch_path (path, sizeof path, "vhd");
  start (raw, path, &o, &ov, &disk);
  for (;;) {
    assert_int_equal (vhd_get_operation_progress (&ov, &p), 0);
    assert_int_equal (p.completion, 64 * MiB);
    assert_true (p.current >= last);
    assert_true (p.current <= p.completion);
    last = p.current;
    samples++;
    if (p.status != -EINPROGRESS)
      break;
    sleep_ms (1);
  }
  print_message ("%u progress samples\n", samples);
  assert_int_equal (p.status, 0);
  assert_int_equal (p.current, p.completion);
  assert_fired_once (ov.event_fd);

  assert_int_equal (vhd_get_overlapped_result (&ov, true), 0);
  assert_null (ov.internal);
  assert_non_null (disk);
  assert_disk_holds_pattern (disk, 64 * MiB, 2);
  assert_int_equal (allocated_blocks (disk), 16);
  vhd_close (disk);

  /* Released: nothing more to ask. */
  assert_int_equal (vhd_get_operation_progress (&ov, &p), -EINVAL);
  assert_int_equal (vhd_cancel_operation (&ov), -EINVAL);
  assert_int_equal (vhd_get_overlapped_result (&ov, true), -EINVAL);
  close (ov.event_fd);
}

/* No event: the caller waits on the result; any create may be
 * asynchronous, with or without a source.
 */
static void
test_wait_without_event (void **state)
{
  struct vhd_storage_type st = { VHD_STORAGE_DEVICE_VHD,
                                 VHD_VENDOR_MICROSOFT };
  struct vhd_create_parameters p = { .version = 2 };
  struct vhd_overlapped ov = { .event_fd = -1 };
  char path[PATH_MAX];
  vhd_disk *disk = NULL;

  scratch_path (path, sizeof path, "vhd");
  p.version2.maximum_size = 64 * MiB;
  assert_int_equal (vhd_create_virtual_disk (&st, path, VHD_ACCESS_NONE,
                                             NULL,
                                   VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION,
                                             0, &p, &ov, &disk),
                    -EINPROGRESS);
  assert_int_equal (vhd_get_overlapped_result (&ov, true), 0);
  assert_non_null (disk);
  assert_int_equal (vhd_get_size (disk), 64 * MiB);
  vhd_close (disk);
}

static void
test_result_without_wait (void **state)
{
  char path[PATH_MAX];
  struct vhd_overlapped ov = { .event_fd = new_eventfd () };
  struct from_source o = { 0 };
  vhd_disk *disk = NULL;
  int r;

  scratch_path (path, sizeof path, "vhd");
  start (big_raw, path, &o, &ov, &disk);
  r = vhd_get_overlapped_result (&ov, false);
  if (r == -EINPROGRESS)
    assert_non_null (ov.internal);      /* nothing was released */
  else
    assert_int_equal (r, 0);
  if (ov.internal)
    assert_int_equal (vhd_get_overlapped_result (&ov, true), 0);
  assert_non_null (disk);
  vhd_close (disk);
  assert_fired_once (ov.event_fd);
  close (ov.event_fd);
}

static void
expect_cancelled (struct vhd_overlapped *ov, const char *path,
                  vhd_disk *disk)
{
  struct vhd_operation_progress p;

  assert_int_equal (vhd_get_overlapped_result (ov, true), -ECANCELED);
  assert_non_null (strstr (vhd_last_error (), "cancelled"));
  assert_null (disk);
  assert_nothing_left (path);
  assert_int_equal (vhd_get_operation_progress (ov, &p), -EINVAL);
}

static void
test_cancel_at_once (void **state)
{
  char path[PATH_MAX];
  struct vhd_overlapped ov = { .event_fd = new_eventfd () };
  struct vhd_operation_progress p;
  struct from_source o = { 0 };
  vhd_disk *disk = NULL;

  scratch_path (path, sizeof path, "vhd");
  start (big_raw, path, &o, &ov, &disk);
  assert_int_equal (vhd_cancel_operation (&ov), 0);
  assert_fired_once (ov.event_fd);
  assert_int_equal (vhd_get_operation_progress (&ov, &p), 0);
  assert_int_equal (p.status, -ECANCELED);
  expect_cancelled (&ov, path, disk);
  close (ov.event_fd);
}

static void
test_cancel_midway (void **state)
{
  char path[PATH_MAX];
  struct vhd_overlapped ov = { .event_fd = new_eventfd () };
  struct vhd_operation_progress p;
  struct from_source o = { 0 };
  vhd_disk *disk = NULL;
  int r;

  scratch_path (path, sizeof path, "vhd");
  start (big_raw, path, &o, &ov, &disk);
  do {
    sleep_ms (1);
    assert_int_equal (vhd_get_operation_progress (&ov, &p), 0);
  } while (p.current == 0 && p.status == -EINPROGRESS);
  r = vhd_cancel_operation (&ov);
  print_message ("cancelled at %llu of %llu bytes: %d\n",
                 (unsigned long long) p.current,
                 (unsigned long long) p.completion, r);
  if (r == -ENOENT) {
    /* This machine copied the whole source before the cancel came. */
    assert_int_equal (vhd_get_overlapped_result (&ov, true), 0);
    vhd_close (disk);
    close (ov.event_fd);
    skip_or_fail ("the whole source was copied before the cancel came\n");
  }
  assert_int_equal (r, 0);
  assert_int_equal (vhd_cancel_operation (&ov), 0);   /* again: harmless */
  assert_fired_once (ov.event_fd);
  expect_cancelled (&ov, path, disk);
  close (ov.event_fd);
}

static void
test_cancel_too_late (void **state)
{
  char raw[PATH_MAX], path[PATH_MAX];
  struct vhd_overlapped ov = { .event_fd = new_eventfd () };
  struct from_source o = { 0 };
  vhd_disk *disk = NULL;

  scratch_path (raw, sizeof raw, "raw");
  write_raw (raw, 8 * MiB, 3, false);
  scratch_path (path, sizeof path, "vhd");
  start (raw, path, &o, &ov, &disk);
  assert_fired_once (ov.event_fd);
  assert_int_equal (vhd_cancel_operation (&ov), -ENOENT);
  assert_non_null (strstr (vhd_last_error (), "too late"));
  assert_int_equal (vhd_get_overlapped_result (&ov, false), 0);
  assert_non_null (disk);
  assert_int_equal (access (path, F_OK), 0);
  assert_disk_holds_pattern (disk, 8 * MiB, 3);
  vhd_close (disk);
  close (ov.event_fd);
}

/* Errors that the arguments or the source give come back at once: no
 * operation starts, no event fires.
 */
static void
expect_error_at_once (const char *source, struct from_source *o, int err,
                      const char *mention)
{
  char path[PATH_MAX];
  struct vhd_overlapped ov = { .event_fd = new_eventfd () };
  vhd_disk *disk = NULL;
  int r;

  scratch_path (path, sizeof path, "vhd");
  o->overlapped = &ov;
  r = create_from (source, path, o, &disk);
  if (r != -err)
    fail_msg ("expected %d, got %d: %s", -err, r, vhd_last_error ());
  if (strstr (vhd_last_error (), mention) == NULL)
    fail_msg ("message does not mention \"%s\": %s", mention,
              vhd_last_error ());
  assert_null (ov.internal);
  assert_null (disk);
  assert_false (event_ready (ov.event_fd, 0));
  assert_nothing_left (path);
  close (ov.event_fd);
}

static void
test_errors_at_once (void **state)
{
  char parent[PATH_MAX];
  struct from_source o = { 0 };

  scratch_path (parent, sizeof parent, "vhd");
  o.parent = parent;
  expect_error_at_once (big_raw, &o, EINVAL, "are both set");
  o = (struct from_source) { .size = BIG_SIZE / 2 };
  expect_error_at_once (big_raw, &o, EINVAL, "is smaller than source_path");
  o = (struct from_source) { 0 };
  expect_error_at_once ("/nonexistent.raw", &o, ENOENT, "/nonexistent.raw");
  o = (struct from_source) { .size = 3 * MiB + 1 };
  expect_error_at_once (big_raw, &o, EINVAL, "maximum_size 3145729");
}

/* PREVENT_WRITES_TO_SOURCE_DISK holds its lock while the copy runs. */
static void
test_writers_locked_out (void **state)
{
  char vhd[PATH_MAX], path[PATH_MAX];
  struct vhd_overlapped ov = { .event_fd = new_eventfd () };
  struct from_source o = { 0 };
  struct vhd_operation_progress p;
  vhd_disk *disk = NULL, *writer = NULL;
  int r;

  scratch_path (vhd, sizeof vhd, "vhd");
  assert_int_equal (create_from (big_raw, vhd, &o, &disk), 0);
  vhd_close (disk);
  disk = NULL;

  o.flags = VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK;
  scratch_path (path, sizeof path, "vhd");
  start (vhd, path, &o, &ov, &disk);
  r = vhd_open (vhd, NULL, &writer);
  assert_int_equal (vhd_get_operation_progress (&ov, &p), 0);
  if (r == 0) {
    /* Only possible if the copy had already ended and let go. */
    assert_int_not_equal (p.status, -EINPROGRESS);
    vhd_close (writer);
  }
  else
    assert_int_equal (r, -EBUSY);
  vhd_cancel_operation (&ov);
  r = vhd_get_overlapped_result (&ov, true);
  assert_true (r == 0 || r == -ECANCELED);
  if (disk)
    vhd_close (disk);
  close (ov.event_fd);

  /* The operation has ended: its lock has gone with it. */
  assert_int_equal (vhd_open (vhd, NULL, &writer), 0);
  vhd_close (writer);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_progress_and_event),
    cmocka_unit_test (test_wait_without_event),
    cmocka_unit_test (test_result_without_wait),
    cmocka_unit_test (test_cancel_at_once),
    cmocka_unit_test (test_cancel_midway),
    cmocka_unit_test (test_cancel_too_late),
    cmocka_unit_test (test_errors_at_once),
    cmocka_unit_test (test_writers_locked_out),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
