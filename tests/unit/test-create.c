/* Unit tests of vhd_create_virtual_disk(): every validation rule (its
 * exact error, a message that names the parameter, and no file left
 * behind), then the bytes of the images it writes, read back raw and
 * decoded: dynamic, fixed, differencing (and a child of a child), the
 * security descriptor, unique ids and the size limits.
 */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "driver.h"
#include "format.h"
#include "guid.h"
#include "vhdkit.h"
#include "scratch.h"

#define MiB (UINT64_C (1) << 20)
#define GiB (UINT64_C (1) << 30)

static int counter;

static int
setup (void **state)
{
  return make_scratch ("test-create");
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

static void
new_path (char *out, size_t n, const char *sub)
{
  snprintf (out, n, "%s%s%s/img%d.vhd", dir, sub ? "/" : "", sub ? sub : "",
            counter++);
}

/* One call's arguments, valid until a test spoils one of them. */
struct call {
  struct vhd_storage_type st;
  const struct vhd_storage_type *storage_type;
  char path_buf[PATH_MAX];
  const char *path;
  uint32_t access_mask;
  const struct vhd_security_descriptor *security;
  uint32_t flags;
  uint32_t provider_specific_flags;
  struct vhd_create_parameters p;
  const struct vhd_create_parameters *parameters;
  struct vhd_overlapped *overlapped;
  vhd_disk *disk;
  vhd_disk **handle;
};

/* The fields that both parameter versions have, by name. */
#define PARAM(c, field) \
  (*((c)->p.version == 1 ? &(c)->p.version1.field : &(c)->p.version2.field))

static void
init_call (struct call *c, uint32_t version, uint64_t size)
{
  memset (c, 0, sizeof *c);
  c->st = (struct vhd_storage_type) { VHD_STORAGE_DEVICE_VHD,
                                      VHD_VENDOR_MICROSOFT };
  c->storage_type = &c->st;
  new_path (c->path_buf, sizeof c->path_buf, NULL);
  c->path = c->path_buf;
  c->p.version = version;
  PARAM (c, maximum_size) = size;
  c->parameters = &c->p;
  c->handle = &c->disk;
}

static int
run (struct call *c)
{
  return vhd_create_virtual_disk (c->storage_type, c->path, c->access_mask,
                                  c->security, c->flags,
                                  c->provider_specific_flags, c->parameters,
                                  c->overlapped, c->handle);
}

/* No file under path, and no temporary file left in the folder. */
static void
assert_nothing_left (const char *path)
{
  struct stat st;
  struct dirent *e;
  DIR *d;

  if (path)
    assert_int_equal (lstat (path, &st), -1);
  d = opendir (dir);
  assert_non_null (d);
  while ((e = readdir (d)) != NULL)
    if (e->d_name[0] == '.' && strcmp (e->d_name, ".") != 0 &&
        strcmp (e->d_name, "..") != 0)
      fail_msg ("temporary file left behind: %s", e->d_name);
  closedir (d);
}

static void
expect_failure (struct call *c, int err, const char *mention)
{
  int r = run (c);

  if (r != -err)
    fail_msg ("expected %d (%s), got %d: %s", -err, strerror (err), r,
              vhd_last_error ());
  if (strstr (vhd_last_error (), mention) == NULL)
    fail_msg ("message does not mention \"%s\": %s", mention,
              vhd_last_error ());
  if (c->handle)
    assert_null (*c->handle);
  assert_nothing_left (c->path && *c->path ? c->path : NULL);
}

static void
expect_success (struct call *c)
{
  int r = run (c);

  if (r != 0)
    fail_msg ("create %s: %d: %s", c->path, r, vhd_last_error ());
  assert_non_null (c->disk);
}

static void
close_call (struct call *c)
{
  vhd_close (c->disk);
  c->disk = NULL;
}

/* ---- validation, one rule each, in the order the code checks them ---- */

static void
test_null_storage_type (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.storage_type = NULL;
  expect_failure (&c, EINVAL, "storage_type");
}

static void
test_null_parameters (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.parameters = NULL;
  expect_failure (&c, EINVAL, "parameters");
}

static void
test_null_path (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.path = NULL;
  expect_failure (&c, EINVAL, "path");
}

static void
test_empty_path (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.path = "";
  expect_failure (&c, EINVAL, "path");
}

static void
test_null_handle (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.handle = NULL;
  expect_failure (&c, EINVAL, "handle");
}

static void
test_bad_version (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.p.version = 0;
  expect_failure (&c, EINVAL, "version is 0");
  c.p.version = 3;
  expect_failure (&c, EINVAL, "version is 3");
}

static void
test_v2_access_mask (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.access_mask = VHD_ACCESS_ALL;
  expect_failure (&c, EINVAL, "access_mask is 0x3f0000");
}

static void
test_v1_access_outside_all (void **state)
{
  struct call c;
  init_call (&c, 1, 64 * MiB);
  c.access_mask = VHD_ACCESS_ALL | 0x400000;
  expect_failure (&c, EINVAL, "access_mask 0x7f0000");
}

static void
test_unknown_flags (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.flags = 0x800;
  expect_failure (&c, EINVAL, "flags 0x800");
}

static void
test_unsupported_flags (void **state)
{
  static const struct { uint32_t flag; const char *name; } flags[] = {
    { VHD_CREATE_FLAG_CREATE_BACKING_STORAGE, "CREATE_BACKING_STORAGE" },
    { VHD_CREATE_FLAG_USE_CHANGE_TRACKING_SOURCE_LIMIT,
      "USE_CHANGE_TRACKING_SOURCE_LIMIT" },
    { VHD_CREATE_FLAG_PRESERVE_PARENT_CHANGE_TRACKING_STATE,
      "PRESERVE_PARENT_CHANGE_TRACKING_STATE" },
    { VHD_CREATE_FLAG_VHD_SET_USE_ORIGINAL_BACKING_STORAGE,
      "VHD_SET_USE_ORIGINAL_BACKING_STORAGE" },
    { VHD_CREATE_FLAG_PMEM_COMPATIBLE, "PMEM_COMPATIBLE" },
  };
  struct call c;

  for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
    init_call (&c, 2, 64 * MiB);
    c.flags = flags[i].flag;
    expect_failure (&c, EINVAL, flags[i].name);
  }
}

static void
test_provider_specific_flags (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.provider_specific_flags = 1;
  expect_failure (&c, EINVAL, "provider_specific_flags is 0x1");
}

static void
test_bad_vendor (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.st.vendor_id.bytes[0] ^= 1;
  expect_failure (&c, EINVAL, "vendor_id ed984aec");
}

/* VHD_STORAGE_DEVICE_VHDX creates a VHDX, whatever the path's name. */
static void
test_vhdx_by_device_id (void **state)
{
  char path[PATH_MAX];
  struct call c;

  init_call (&c, 2, 64 * MiB);
  c.st.device_id = VHD_STORAGE_DEVICE_VHDX;
  expect_success (&c);
  snprintf (path, sizeof path, "%s", c.path);
  close_call (&c);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHDX);
}

static void
test_other_devices (void **state)
{
  static const uint32_t ids[] = {
    VHD_STORAGE_DEVICE_ISO, VHD_STORAGE_DEVICE_VHDSET, 99,
  };
  char want[64];
  struct call c;

  for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
    init_call (&c, 2, 64 * MiB);
    c.st.device_id = ids[i];
    snprintf (want, sizeof want, "device_id %u", ids[i]);
    expect_failure (&c, EINVAL, want);
  }
}

/* UNKNOWN picks VHD, with either vendor. */
static void
test_unknown_device_picks_vhd (void **state)
{
  struct vhd_image_info info;
  struct call c;

  init_call (&c, 2, 64 * MiB);
  c.st.device_id = VHD_STORAGE_DEVICE_UNKNOWN;
  memset (&c.st.vendor_id, 0, sizeof c.st.vendor_id);
  expect_success (&c);
  assert_int_equal (vhd_get_image_info (c.disk, &info), 0);
  assert_int_equal (info.disk_type, VHD_TYPE_DYNAMIC);
  close_call (&c);

  init_call (&c, 2, 64 * MiB);
  c.st.device_id = VHD_STORAGE_DEVICE_UNKNOWN;
  expect_success (&c);
  close_call (&c);
}

/* UNKNOWN picks the format by the path's extension, as Windows does:
 * ".vhdx" in any case is VHDX, anything else a VHD.  An explicit device id wins.
 */
static void
test_unknown_device_picks_by_extension (void **state)
{
  static const char *const vhd_names[] = { "x.vhd", "x.img", "x.vhdx.bak",
                                           "vhdx" };
  char path[PATH_MAX];
  struct call c;

  assert_int_equal (vhd_format_for_storage (VHD_STORAGE_DEVICE_UNKNOWN,
                                            "d/x.VHDX")->device_id,
                    VHD_STORAGE_DEVICE_VHDX);
  assert_int_equal (vhd_format_for_storage (VHD_STORAGE_DEVICE_UNKNOWN,
                                            "x.vhdx")->device_id,
                    VHD_STORAGE_DEVICE_VHDX);
  assert_int_equal (vhd_format_for_storage (VHD_STORAGE_DEVICE_VHD,
                                            "x.vhdx")->device_id,
                    VHD_STORAGE_DEVICE_VHD);
  assert_null (vhd_format_for_storage (VHD_STORAGE_DEVICE_ISO, "x.vhd"));

  init_call (&c, 2, 64 * MiB);
  c.st.device_id = VHD_STORAGE_DEVICE_UNKNOWN;
  snprintf (c.path_buf, sizeof c.path_buf, "%s/x%d.VHDX", dir, counter++);
  expect_success (&c);
  snprintf (path, sizeof path, "%s", c.path);
  close_call (&c);
  assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHDX);

  for (size_t i = 0; i < sizeof vhd_names / sizeof vhd_names[0]; i++) {
    assert_int_equal (vhd_format_for_storage (VHD_STORAGE_DEVICE_UNKNOWN,
                                              vhd_names[i])->device_id,
                      VHD_STORAGE_DEVICE_VHD);
    init_call (&c, 2, 64 * MiB);
    c.st.device_id = VHD_STORAGE_DEVICE_UNKNOWN;
    snprintf (c.path_buf, sizeof c.path_buf, "%s/%d-%s", dir, counter++,
              vhd_names[i]);
    expect_success (&c);
    snprintf (path, sizeof path, "%s", c.path);
    close_call (&c);
    assert_int_equal (vhd_probe_format (path, 0), VHD_FORMAT_VHD);
  }
}

static void
test_bad_block_size (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  PARAM (&c, block_size_in_bytes) = 1 << 20;
  expect_failure (&c, EINVAL, "block_size_in_bytes is 1048576");
}

static void
test_bad_sector_size (void **state)
{
  struct call c;
  init_call (&c, 1, 64 * MiB);
  PARAM (&c, sector_size_in_bytes) = 4096;
  expect_failure (&c, EINVAL, "sector_size_in_bytes is 4096");
}

static void
test_bad_physical_sector_size (void **state)
{
  struct call c;

  init_call (&c, 2, 64 * MiB);
  c.p.version2.physical_sector_size_in_bytes = 1024;
  expect_failure (&c, EINVAL, "physical_sector_size_in_bytes is 1024");

  init_call (&c, 2, 64 * MiB);
  c.p.version2.physical_sector_size_in_bytes = 4096;
  expect_success (&c);
  close_call (&c);
}

static void
test_parent_and_source (void **state)
{
  struct call c;
  init_call (&c, 1, 0);
  c.p.version1.parent_path = "/nonexistent/parent.vhd";
  c.p.version1.source_path = "/nonexistent/source.vhd";
  expect_failure (&c, EINVAL, "parent_path (/nonexistent/parent.vhd) and"
                  " source_path");
}

static void
test_size_zero_without_parent (void **state)
{
  struct call c;
  init_call (&c, 2, 0);
  expect_failure (&c, EINVAL, "maximum_size is 0");
}

static void
test_size_under_minimum (void **state)
{
  struct call c;
  init_call (&c, 2, 3 * MiB - 512);
  expect_failure (&c, EINVAL, "maximum_size 3145216");
}

static void
test_size_not_sector_multiple (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB + 1);
  expect_failure (&c, EINVAL, "maximum_size 67108865");
}

static void
test_size_over_maximum (void **state)
{
  struct call c;
  init_call (&c, 2, VHD_MAX_DISK_SIZE + 512);
  expect_failure (&c, EINVAL, "maximum_size 2190433321472");
}

static void
test_size_with_parent (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.p.version2.parent_path = "/nonexistent/parent.vhd";
  expect_failure (&c, EINVAL, "maximum_size is 67108864 with parent_path");
}

static void
test_fixed_with_parent (void **state)
{
  struct call c;
  init_call (&c, 2, 0);
  c.p.version2.parent_path = "/nonexistent/parent.vhd";
  c.flags = VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
  expect_failure (&c, EINVAL, "FULL_PHYSICAL_ALLOCATION");
}

static void
test_parent_storage_type (void **state)
{
  struct call c;

  /* A format with a driver is a storage type the call may name. */
  init_call (&c, 2, 64 * MiB);
  c.p.version2.parent_virtual_storage_type.device_id = VHD_STORAGE_DEVICE_VHDX;
  expect_success (&c);
  close_call (&c);

  init_call (&c, 2, 64 * MiB);
  c.p.version2.parent_virtual_storage_type.device_id = 7;
  expect_failure (&c, EINVAL, "parent_virtual_storage_type.device_id is 7");
}

static void
test_source_storage_type (void **state)
{
  struct call c;

  init_call (&c, 2, 64 * MiB);
  c.p.version2.source_virtual_storage_type.device_id = VHD_STORAGE_DEVICE_VHDX;
  expect_success (&c);
  close_call (&c);

  init_call (&c, 2, 64 * MiB);
  c.p.version2.source_virtual_storage_type.device_id = VHD_STORAGE_DEVICE_ISO;
  expect_failure (&c, EINVAL, "source_virtual_storage_type.device_id is 1");
}

static void
test_unknown_open_flags (void **state)
{
  struct call c;
  init_call (&c, 2, 64 * MiB);
  c.p.version2.open_flags = 0x100;
  expect_failure (&c, EINVAL, "open_flags 0x100");
}

static void
test_source_missing (void **state)
{
  struct call c;
  init_call (&c, 2, 0);
  c.p.version2.source_path = "/nonexistent/source.vhd";
  expect_failure (&c, ENOENT, "source_path /nonexistent/source.vhd");
}

/* The overlapped argument is checked before anything starts (the
 * asynchronous create itself: unit/test-async.c).
 */
static void
test_overlapped_bad (void **state)
{
  struct vhd_overlapped ov = { .event_fd = -2 };
  struct call c;
  int fd;

  init_call (&c, 2, 64 * MiB);
  c.overlapped = &ov;
  expect_failure (&c, EBADF, "event_fd -2");

  fd = dup (2);
  assert_true (fd >= 0);
  close (fd);
  ov.event_fd = fd;
  init_call (&c, 2, 64 * MiB);
  c.overlapped = &ov;
  expect_failure (&c, EBADF, "not an open file descriptor");

  ov.event_fd = -1;
  ov.internal = (struct vhd_operation *) &ov;
  init_call (&c, 2, 64 * MiB);
  c.overlapped = &ov;
  expect_failure (&c, EBUSY, "has not been released");
}

static void
test_exists (void **state)
{
  char buf[16] = "";
  struct call c;
  FILE *f;

  init_call (&c, 2, 64 * MiB);
  f = fopen (c.path, "w");
  assert_non_null (f);
  fputs ("precious", f);
  fclose (f);
  assert_int_equal (run (&c), -EEXIST);
  assert_non_null (strstr (vhd_last_error (), c.path));
  assert_null (c.disk);
  f = fopen (c.path, "r");
  assert_non_null (f);
  assert_non_null (fgets (buf, sizeof buf, f));
  fclose (f);
  assert_string_equal (buf, "precious");
  unlink (c.path);
  assert_nothing_left (NULL);
}

/* A dangling symlink is an existing path too: nothing is created at the
 * place it points to.
 */
static void
test_exists_dangling_symlink (void **state)
{
  char target[PATH_MAX];
  struct stat st;
  struct call c;

  init_call (&c, 2, 64 * MiB);
  snprintf (target, sizeof target, "%s/symlink-target.vhd", dir);
  assert_int_equal (symlink (target, c.path), 0);
  assert_int_equal (run (&c), -EEXIST);
  assert_int_equal (lstat (target, &st), -1);
  unlink (c.path);
}

static void
test_parent_missing (void **state)
{
  struct call c;
  init_call (&c, 2, 0);
  c.p.version2.parent_path = "/nonexistent/missing-parent.vhd";
  expect_failure (&c, ENOENT, "/nonexistent/missing-parent.vhd");
}

static void
test_folder_missing (void **state)
{
  char path[PATH_MAX];
  struct call c;

  init_call (&c, 2, 64 * MiB);
  snprintf (path, sizeof path, "%s/no-such-folder/x.vhd", dir);
  c.path = path;
  expect_failure (&c, ENOENT, "no-such-folder");
}

static void
test_path_without_file_name (void **state)
{
  char path[PATH_MAX];
  struct call c;

  init_call (&c, 2, 64 * MiB);
  snprintf (path, sizeof path, "%s/missing-folder/", dir);
  c.path = path;
  expect_failure (&c, EINVAL, "does not end in a file name");
}

/* A parent that is not a VHD: the error names it, nothing is created. */
static void
test_parent_not_vhd (void **state)
{
  char parent[PATH_MAX];
  struct call c;
  FILE *f;

  snprintf (parent, sizeof parent, "%s/not-a-vhd.txt", dir);
  f = fopen (parent, "w");
  assert_non_null (f);
  for (int i = 0; i < 1000; i++)
    fputs ("not a disk image\n", f);
  fclose (f);
  init_call (&c, 2, 0);
  c.p.version2.parent_path = parent;
  expect_failure (&c, EINVAL, "parent_path");
  assert_non_null (strstr (vhd_last_error (), parent));
  unlink (parent);
}

/* ---- the images' bytes ---- */

static uint8_t *
read_file (const char *path, uint64_t offset, size_t len)
{
  uint8_t *buf = malloc (len);
  int fd = open (path, O_RDONLY);

  assert_non_null (buf);
  assert_true (fd >= 0);
  assert_int_equal (pread (fd, buf, len, (off_t) offset), (ssize_t) len);
  close (fd);
  return buf;
}

static uint64_t
file_size (const char *path)
{
  struct stat st;
  assert_int_equal (stat (path, &st), 0);
  return (uint64_t) st.st_size;
}

/* Decode and cross-check the footers and the header of a dynamic or
 * differencing image; the BAT must be all 0xFFFFFFFF.
 */
static void
check_dynamic_layout (const char *path, uint32_t disk_type, uint64_t size,
                      uint32_t block_size, struct vhd_footer *f,
                      struct vhd_dyn_header *h)
{
  uint64_t fsize = file_size (path);
  uint8_t *head = read_file (path, 0, VHD_FOOTER_SIZE + VHD_DYN_HEADER_SIZE);
  uint8_t *tail = read_file (path, fsize - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE);
  struct vhd_footer copy;
  uint16_t c;
  uint8_t heads, spt;
  uint8_t *bat;
  size_t bat_bytes;

  assert_memory_equal (head, tail, VHD_FOOTER_SIZE);
  assert_int_equal (vhd_footer_decode (tail, f, path, fsize - 512), 0);
  assert_int_equal (vhd_footer_decode (head, &copy, path, 0), 0);
  assert_int_equal (f->disk_type, disk_type);
  assert_int_equal (f->current_size, size);
  assert_int_equal (f->original_size, size);
  assert_int_equal (f->data_offset, 512);
  assert_memory_equal (f->creator_app, "win ", 4);
  assert_int_equal (f->creator_version, VHD_CREATOR_VERSION);
  assert_int_equal (f->creator_host_os, VHD_CREATOR_HOST_OS);
  assert_int_equal (f->features, VHD_FEATURES_RESERVED);
  assert_int_equal (f->saved_state, 0);
  assert_false (vhd_guid_is_zero (&f->unique_id));
  if (disk_type == VHD_TYPE_DYNAMIC) {
    vhd_chs_geometry (size, &c, &heads, &spt);
    assert_int_equal (f->cylinders, c);
    assert_int_equal (f->heads, heads);
    assert_int_equal (f->sectors_per_track, spt);
  }

  assert_int_equal (vhd_dyn_header_decode (head + 512, h, path, 512), 0);
  assert_int_equal (h->data_offset, UINT64_C (0xFFFFFFFFFFFFFFFF));
  assert_int_equal (h->block_size, block_size);
  assert_int_equal (h->max_table_entries,
                    (size + block_size - 1) / block_size);
  assert_int_equal (h->table_offset % 4096, 0);
  bat_bytes = (size_t) h->max_table_entries * 4;
  /* The BAT, padded to 4 KiB with 0xFF, then the footer. */
  assert_int_equal (fsize, h->table_offset + (bat_bytes + 4095) / 4096 * 4096
                    + VHD_FOOTER_SIZE);
  bat = read_file (path, h->table_offset, fsize - 512 - h->table_offset);
  for (size_t i = 0; i < fsize - 512 - h->table_offset; i++)
    if (bat[i] != 0xff)
      fail_msg ("BAT byte %zu is 0x%02x", i, bat[i]);
  free (bat);
  free (head);
  free (tail);
}

static void
test_dynamic_layout (void **state)
{
  struct vhd_dyn_header h;
  struct vhd_footer f;
  struct call c;

  init_call (&c, 2, 64 * MiB);
  expect_success (&c);
  assert_int_equal (vhd_get_size (c.disk), 64 * MiB);
  close_call (&c);
  check_dynamic_layout (c.path, VHD_TYPE_DYNAMIC, 64 * MiB, 2 * MiB, &f, &h);
  assert_int_equal (h.table_offset, 4096);
  assert_true (vhd_guid_is_zero (&h.parent_unique_id));
  assert_int_equal (h.parent_timestamp, 0);
  for (unsigned i = 0; i < VHD_LOCATOR_COUNT; i++)
    assert_int_equal (h.locators[i].platform_code, 0);
  assert_int_equal (file_size (c.path), 4096 + 4096 + 512);
}

static void
test_dynamic_v1_small_blocks (void **state)
{
  struct vhd_dyn_header h;
  struct vhd_footer f;
  struct call c;

  init_call (&c, 1, 100 * MiB);
  c.p.version1.block_size_in_bytes = VHD_BLOCK_SIZE_SMALL;
  c.p.version1.sector_size_in_bytes = 512;
  c.access_mask = VHD_ACCESS_ALL;
  expect_success (&c);
  close_call (&c);
  check_dynamic_layout (c.path, VHD_TYPE_DYNAMIC, 100 * MiB, 512 * 1024,
                        &f, &h);
  assert_int_equal (h.max_table_entries, 200);
  /* The spec's example sizes: 100 MiB is 1003/12/17. */
  assert_int_equal (f.cylinders, 1003);
  assert_int_equal (f.heads, 12);
  assert_int_equal (f.sectors_per_track, 17);
}

static void
test_dynamic_writable (void **state)
{
  uint8_t out[4096], in[4096];
  struct call c;

  init_call (&c, 2, 8 * MiB);
  expect_success (&c);
  memset (out, 0x5a, sizeof out);
  assert_int_equal (vhd_pwrite (c.disk, out, sizeof out, 3 * MiB, 0), 0);
  assert_int_equal (vhd_flush (c.disk), 0);
  close_call (&c);
  assert_int_equal (vhd_open (c.path, NULL, &c.disk), 0);
  assert_int_equal (vhd_pread (c.disk, in, sizeof in, 3 * MiB), 0);
  assert_memory_equal (in, out, sizeof in);
  close_call (&c);
}

static void
test_fixed_layout (void **state)
{
  uint64_t size = 64 * MiB;
  struct vhd_footer f;
  struct stat st;
  struct call c;
  uint16_t cyl;
  uint8_t heads, spt, *tail;

  init_call (&c, 2, size);
  c.flags = VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
  expect_success (&c);
  close_call (&c);
  assert_int_equal (stat (c.path, &st), 0);
  assert_int_equal (st.st_size, size + 512);
  /* No holes: the data is allocated. */
  assert_true ((uint64_t) st.st_blocks * 512 >= size);
  tail = read_file (c.path, size, 512);
  assert_int_equal (vhd_footer_decode (tail, &f, c.path, size), 0);
  assert_int_equal (f.disk_type, VHD_TYPE_FIXED);
  assert_int_equal (f.current_size, size);
  assert_int_equal (f.data_offset, UINT64_C (0xFFFFFFFFFFFFFFFF));
  assert_memory_equal (f.creator_app, "win ", 4);
  vhd_chs_geometry (size, &cyl, &heads, &spt);
  assert_int_equal (f.cylinders, cyl);
  assert_int_equal (f.heads, heads);
  assert_int_equal (f.sectors_per_track, spt);
  free (tail);
}

static void
test_fixed_sparse (void **state)
{
  uint64_t size = 64 * MiB;
  uint8_t *tail;
  struct vhd_footer f;
  struct stat st;
  struct call c;

  init_call (&c, 2, size);
  c.flags = VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
            | VHD_CREATE_FLAG_SPARSE_FILE;
  expect_success (&c);
  close_call (&c);
  assert_int_equal (stat (c.path, &st), 0);
  assert_int_equal (st.st_size, size + 512);
  assert_true ((uint64_t) st.st_blocks * 512 < size);
  tail = read_file (c.path, size, 512);
  assert_int_equal (vhd_footer_decode (tail, &f, c.path, size), 0);
  assert_int_equal (f.disk_type, VHD_TYPE_FIXED);
  free (tail);
}

/* Decode locator i's data (UTF-16LE) from the file. */
static void
locator_text (const char *path, const struct vhd_parent_locator *loc,
              char *out, size_t out_size)
{
  uint8_t *data = read_file (path, loc->platform_data_offset,
                             loc->platform_data_length);
  assert_true (vhd_utf16_to_utf8 (data, loc->platform_data_length, false,
                                  out, out_size) >= 0);
  free (data);
}

/* Check a differencing image's header against its parent. */
static void
check_child (const char *child, const char *parent,
             const char *want_relative)
{
  char real[PATH_MAX], text[PATH_MAX * 2];
  struct vhd_dyn_header h;
  struct vhd_footer f, pf;
  struct stat st;
  uint64_t psize;
  uint8_t *pfooter;

  assert_non_null (realpath (parent, real));
  psize = file_size (parent);
  pfooter = read_file (parent, psize - 512, 512);
  assert_int_equal (vhd_footer_decode (pfooter, &pf, parent, psize - 512), 0);
  free (pfooter);

  check_dynamic_layout (child, VHD_TYPE_DIFFERENCING, pf.current_size,
                        2 * MiB, &f, &h);
  assert_memory_equal (&h.parent_unique_id, &pf.unique_id, 16);
  assert_memory_not_equal (&f.unique_id, &pf.unique_id, 16);
  assert_int_equal (f.cylinders, pf.cylinders);
  assert_int_equal (f.heads, pf.heads);
  assert_int_equal (f.sectors_per_track, pf.sectors_per_track);
  assert_int_equal (stat (parent, &st), 0);
  assert_int_equal (h.parent_timestamp, vhd_timestamp_from_unix (st.st_mtime));
  assert_true (vhd_utf16_to_utf8 (h.parent_unicode_name,
                                  sizeof h.parent_unicode_name, true,
                                  text, sizeof text) > 0);
  assert_string_equal (text, real);

  assert_int_equal (h.locators[0].platform_code, VHD_PLATFORM_W2KU);
  assert_int_equal (h.locators[1].platform_code, VHD_PLATFORM_W2RU);
  for (unsigned i = 0; i < 2; i++) {
    const struct vhd_parent_locator *l = &h.locators[i];
    assert_int_equal (l->platform_data_offset % 512, 0);
    assert_int_equal (l->platform_data_space % 512, 0);
    assert_true (l->platform_data_space >= l->platform_data_length);
    assert_true (l->platform_data_offset + l->platform_data_space
                 <= h.table_offset);
  }
  locator_text (child, &h.locators[0], text, sizeof text);
  assert_string_equal (text, real);
  locator_text (child, &h.locators[1], text, sizeof text);
  assert_string_equal (text, want_relative);
  for (unsigned i = 2; i < VHD_LOCATOR_COUNT; i++)
    assert_int_equal (h.locators[i].platform_code, 0);
}

static void
create_child (struct call *c, const char *parent, const char *sub)
{
  init_call (c, 2, 0);
  if (sub)
    new_path (c->path_buf, sizeof c->path_buf, sub);
  c->p.version2.parent_path = parent;
  expect_success (c);
}

static void
test_differencing (void **state)
{
  uint8_t out[4096], in[4096];
  char want[64];
  struct call p, c;
  const char *slash;

  init_call (&p, 2, 40 * MiB);
  expect_success (&p);
  memset (out, 0xa5, sizeof out);
  assert_int_equal (vhd_pwrite (p.disk, out, sizeof out, 5 * MiB, 0), 0);
  close_call (&p);

  create_child (&c, p.path, NULL);
  assert_int_equal (vhd_get_size (c.disk), 40 * MiB);
  assert_non_null (vhd_get_parent (c.disk));
  /* The child reads through to what the parent holds. */
  assert_int_equal (vhd_pread (c.disk, in, sizeof in, 5 * MiB), 0);
  assert_memory_equal (in, out, sizeof in);
  close_call (&c);

  slash = strrchr (p.path, '/');
  snprintf (want, sizeof want, ".\\%s", slash + 1);
  check_child (c.path, p.path, want);
}

static void
test_differencing_fixed_parent_other_folder (void **state)
{
  char sub_a[PATH_MAX], sub_b[PATH_MAX], want[64];
  struct call p, c;

  snprintf (sub_a, sizeof sub_a, "%s/a", dir);
  snprintf (sub_b, sizeof sub_b, "%s/b", dir);
  assert_int_equal (mkdir (sub_a, 0755), 0);
  assert_int_equal (mkdir (sub_b, 0755), 0);

  init_call (&p, 2, 3 * MiB);
  new_path (p.path_buf, sizeof p.path_buf, "a");
  p.flags = VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
  expect_success (&p);
  close_call (&p);

  create_child (&c, p.path, "b");
  assert_non_null (vhd_get_parent (c.disk));
  close_call (&c);
  snprintf (want, sizeof want, "..\\a\\%s", strrchr (p.path, '/') + 1);
  check_child (c.path, p.path, want);
}

static void
test_child_of_child (void **state)
{
  struct call p, c1, c2;
  char want[64];
  const vhd_disk *up;

  init_call (&p, 2, 16 * MiB);
  expect_success (&p);
  close_call (&p);
  create_child (&c1, p.path, NULL);
  close_call (&c1);
  create_child (&c2, c1.path, NULL);
  up = vhd_get_parent (c2.disk);
  assert_non_null (up);
  assert_non_null (vhd_get_parent (up));
  close_call (&c2);

  snprintf (want, sizeof want, ".\\%s", strrchr (c1.path, '/') + 1);
  check_child (c2.path, c1.path, want);
}

/* Version 2 open_flags apply to the handle that create returns. */
static void
test_differencing_no_parents_handle (void **state)
{
  struct call p, c;

  init_call (&p, 2, 8 * MiB);
  expect_success (&p);
  close_call (&p);
  init_call (&c, 2, 0);
  c.p.version2.parent_path = p.path;
  c.p.version2.open_flags = VHD_OPEN_FLAG_NO_PARENTS;
  expect_success (&c);
  assert_null (vhd_get_parent (c.disk));
  close_call (&c);
}

static void
test_security_owner (void **state)
{
  struct vhd_security_descriptor sec = {
    .set_owner = true, .uid = getuid (), .gid = getgid (),
  };
  struct stat st;
  struct call c;

  init_call (&c, 1, 8 * MiB);
  c.security = &sec;
  expect_success (&c);
  close_call (&c);
  assert_int_equal (stat (c.path, &st), 0);
  assert_int_equal (st.st_uid, getuid ());
  assert_int_equal (st.st_gid, getgid ());
}

static void
test_security_mode (void **state)
{
  struct vhd_security_descriptor sec = { .set_mode = true, .mode = 0600 };
  mode_t old = umask (022);
  struct stat st;
  struct call c;

  init_call (&c, 2, 8 * MiB);
  c.security = &sec;
  expect_success (&c);
  close_call (&c);
  assert_int_equal (stat (c.path, &st), 0);
  assert_int_equal (st.st_mode & 07777, 0600);

  /* NULL: 0666 less the umask. */
  init_call (&c, 2, 8 * MiB);
  expect_success (&c);
  close_call (&c);
  assert_int_equal (stat (c.path, &st), 0);
  assert_int_equal (st.st_mode & 07777, 0644);
  umask (old);
}

static void
test_unique_id (void **state)
{
  struct vhd_guid id = { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                           15, 16 } };
  struct vhd_image_info info1, info2;
  struct call c1, c2;

  init_call (&c1, 2, 8 * MiB);
  c1.p.version2.unique_id = id;
  expect_success (&c1);
  assert_int_equal (vhd_get_image_info (c1.disk, &info1), 0);
  assert_memory_equal (&info1.unique_id, &id, sizeof id);
  close_call (&c1);

  /* Zero: a new random one each time. */
  init_call (&c1, 1, 8 * MiB);
  expect_success (&c1);
  init_call (&c2, 1, 8 * MiB);
  expect_success (&c2);
  assert_int_equal (vhd_get_image_info (c1.disk, &info1), 0);
  assert_int_equal (vhd_get_image_info (c2.disk, &info2), 0);
  assert_false (vhd_guid_is_zero (&info1.unique_id));
  assert_memory_not_equal (&info1.unique_id, &info2.unique_id, 16);
  close_call (&c1);
  close_call (&c2);
}

static void
test_largest_dynamic (void **state)
{
  struct vhd_dyn_header h;
  struct vhd_footer f;
  struct call c;

  init_call (&c, 2, VHD_MAX_DISK_SIZE);
  expect_success (&c);
  close_call (&c);
  assert_true (file_size (c.path) < 10 * MiB);
  check_dynamic_layout (c.path, VHD_TYPE_DYNAMIC, VHD_MAX_DISK_SIZE, 2 * MiB,
                        &f, &h);
  assert_int_equal (h.max_table_entries, 1044480);
  assert_int_equal (f.cylinders, 65535);
  assert_int_equal (f.heads, 16);
  assert_int_equal (f.sectors_per_track, 255);
  unlink (c.path);
}

static void
test_odd_sizes (void **state)
{
  static const uint64_t sizes[] = { 3 * MiB, 1000000512 };
  struct vhd_dyn_header h;
  struct vhd_footer f;
  struct call c;

  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    init_call (&c, 2, sizes[i]);
    expect_success (&c);
    assert_int_equal (vhd_get_size (c.disk), sizes[i]);
    close_call (&c);
    check_dynamic_layout (c.path, VHD_TYPE_DYNAMIC, sizes[i], 2 * MiB,
                          &f, &h);

    init_call (&c, 2, sizes[i]);
    c.flags = VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION
              | VHD_CREATE_FLAG_SPARSE_FILE;
    expect_success (&c);
    assert_int_equal (vhd_get_size (c.disk), sizes[i]);
    close_call (&c);
    assert_int_equal (file_size (c.path), sizes[i] + 512);
  }
  assert_int_equal (h.max_table_entries, 477);
}


/* ---- VHDX: each rule of formats/vhdx/create-check.c ---- */

static void
init_vhdx_call (struct call *c, uint32_t version, uint64_t size)
{
  init_call (c, version, size);
  c->st.device_id = VHD_STORAGE_DEVICE_VHDX;
  snprintf (c->path_buf, sizeof c->path_buf, "%s/img%d.vhdx", dir,
            counter++);
}

static void
test_vhdx_v1_block_size (void **state)
{
  struct call c;

  init_vhdx_call (&c, 1, 64 * MiB);
  PARAM (&c, block_size_in_bytes) = 1 << 20;
  expect_failure (&c, EINVAL, "version 1 parameters create a VHDX with 0");
  assert_non_null (strstr (vhd_last_error (), "block_size_in_bytes is"
                           " 1048576"));

  init_vhdx_call (&c, 1, 64 * MiB);
  PARAM (&c, block_size_in_bytes) = 2 << 20;
  expect_success (&c);
  close_call (&c);
}

static void
test_vhdx_v1_sector_size (void **state)
{
  struct call c;

  init_vhdx_call (&c, 1, 64 * MiB);
  PARAM (&c, sector_size_in_bytes) = 4096;
  expect_failure (&c, EINVAL, "4096-byte sectors need version 2");
}

static void
test_vhdx_block_size_not_power_of_two (void **state)
{
  static const uint32_t bad[] = {
    3 << 20, 512 << 10, 512 << 20, (1 << 20) + 512,
  };
  char want[64];
  struct call c;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    init_vhdx_call (&c, 2, 64 * MiB);
    PARAM (&c, block_size_in_bytes) = bad[i];
    snprintf (want, sizeof want, "block_size_in_bytes is %u", bad[i]);
    expect_failure (&c, EINVAL, want);
    assert_non_null (strstr (vhd_last_error (), "a VHDX block is a power of"
                             " two from 1 MiB to 256 MiB"));
  }
}

static void
test_vhdx_bad_sector_size (void **state)
{
  struct call c;

  init_vhdx_call (&c, 2, 64 * MiB);
  PARAM (&c, sector_size_in_bytes) = 1024;
  expect_failure (&c, EINVAL, "a VHDX has 512- or 4096-byte logical"
                  " sectors");
}

static void
test_vhdx_bad_physical_sector_size (void **state)
{
  struct call c;

  init_vhdx_call (&c, 2, 64 * MiB);
  c.p.version2.physical_sector_size_in_bytes = 2048;
  expect_failure (&c, EINVAL, "physical_sector_size_in_bytes is 2048");
}

static void
test_vhdx_size_under_minimum (void **state)
{
  struct call c;

  init_vhdx_call (&c, 2, 3 * MiB - 512);
  expect_failure (&c, EINVAL, "under the minimum of 3 MiB");
}

static void
test_vhdx_size_not_sector_multiple (void **state)
{
  struct call c;

  init_vhdx_call (&c, 2, 64 * MiB + 512);
  PARAM (&c, sector_size_in_bytes) = 4096;
  expect_failure (&c, EINVAL, "not a multiple of the 4096-byte logical"
                  " sector size");

  init_vhdx_call (&c, 2, 64 * MiB + 100);
  expect_failure (&c, EINVAL, "not a multiple of the 512-byte logical"
                  " sector size");
}

static void
test_vhdx_size_over_maximum (void **state)
{
  struct call c;

  init_vhdx_call (&c, 2, (UINT64_C (64) << 40) + 4096);
  expect_failure (&c, EINVAL, "over the VHDX limit of 64 TiB");

  init_vhdx_call (&c, 2, UINT64_C (64) << 40);
  expect_success (&c);
  close_call (&c);
}

/* A source of a size that no VHDX can take. */
static void
test_vhdx_source_size (void **state)
{
  char raw[PATH_MAX];
  struct call c;
  int fd;

  snprintf (raw, sizeof raw, "%s/odd%d.raw", dir, counter++);
  fd = open (raw, O_WRONLY | O_CREAT | O_EXCL, 0644);
  assert_true (fd >= 0);
  assert_int_equal (ftruncate (fd, 64 * MiB + 512), 0);
  close (fd);
  init_vhdx_call (&c, 2, 0);
  PARAM (&c, sector_size_in_bytes) = 4096;
  c.p.version2.source_path = raw;
  expect_failure (&c, EINVAL, "not a whole number of 4096-byte sectors");

  fd = open (raw, O_WRONLY | O_TRUNC);
  assert_true (fd >= 0);
  assert_int_equal (ftruncate (fd, 2 * MiB), 0);
  close (fd);
  init_vhdx_call (&c, 2, 0);
  c.p.version2.source_path = raw;
  expect_failure (&c, EINVAL, "under the minimum VHDX size of 3 MiB");
  unlink (raw);
}

/* Version 2 creates 4096-byte sectors, and the image says so. */
static void
test_vhdx_v2_4096_sectors (void **state)
{
  struct vhd_image_info info;
  struct call c;

  init_vhdx_call (&c, 2, 64 * MiB);
  PARAM (&c, sector_size_in_bytes) = 4096;
  expect_success (&c);
  assert_int_equal (vhd_get_image_info (c.disk, &info), 0);
  assert_int_equal (info.format, VHD_FORMAT_VHDX);
  assert_int_equal (info.logical_sector_size, 4096);
  assert_int_equal (info.physical_sector_size, 4096);
  assert_int_equal (info.block_size, 32 * MiB);
  assert_int_equal (info.vhdx.block_states[6 /* FULLY_PRESENT */], 0);
  assert_int_equal (info.vhdx.block_states[0 /* NOT_PRESENT */], 2);
  close_call (&c);
}

/* A 4096-byte-sector VHDX copied into a VHD (512-byte sectors only), or
 * into a VHDX asked for 512-byte sectors, would move every LBA of its
 * partition table: refused, nothing left.  Into a VHDX with sector size
 * 0 it keeps its 4096-byte sectors.
 */
static void
test_source_4096_sectors (void **state)
{
  struct vhd_image_info info;
  char src[PATH_MAX];
  struct call c;

  init_vhdx_call (&c, 2, 64 * MiB);
  PARAM (&c, sector_size_in_bytes) = 4096;
  expect_success (&c);
  snprintf (src, sizeof src, "%s", c.path);
  close_call (&c);

  init_call (&c, 2, 0);
  c.p.version2.source_path = src;
  expect_failure (&c, EINVAL, "has 4096-byte logical sectors, which a VHD"
                  " cannot have");
  assert_non_null (strstr (vhd_last_error (), "would change meaning"));
  assert_non_null (strstr (vhd_last_error (), src));

  init_vhdx_call (&c, 2, 0);
  PARAM (&c, sector_size_in_bytes) = 512;
  c.p.version2.source_path = src;
  expect_failure (&c, EINVAL, "sector_size_in_bytes is 512 but source_path");

  init_vhdx_call (&c, 2, 0);
  c.p.version2.source_path = src;
  expect_success (&c);
  assert_int_equal (vhd_get_image_info (c.disk, &info), 0);
  assert_int_equal (info.logical_sector_size, 4096);
  assert_int_equal (info.current_size, 64 * MiB);
  close_call (&c);

  /* A 512-byte-sector VHDX goes into a VHD. */
  init_vhdx_call (&c, 2, 64 * MiB);
  expect_success (&c);
  snprintf (src, sizeof src, "%s", c.path);
  close_call (&c);
  init_call (&c, 2, 0);
  c.p.version2.source_path = src;
  expect_success (&c);
  assert_int_equal (vhd_get_image_info (c.disk, &info), 0);
  assert_int_equal (info.format, VHD_FORMAT_VHD);
  assert_int_equal (info.logical_sector_size, 512);
  close_call (&c);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_null_storage_type),
    cmocka_unit_test (test_null_parameters),
    cmocka_unit_test (test_null_path),
    cmocka_unit_test (test_empty_path),
    cmocka_unit_test (test_null_handle),
    cmocka_unit_test (test_bad_version),
    cmocka_unit_test (test_v2_access_mask),
    cmocka_unit_test (test_v1_access_outside_all),
    cmocka_unit_test (test_unknown_flags),
    cmocka_unit_test (test_unsupported_flags),
    cmocka_unit_test (test_provider_specific_flags),
    cmocka_unit_test (test_bad_vendor),
    cmocka_unit_test (test_vhdx_by_device_id),
    cmocka_unit_test (test_other_devices),
    cmocka_unit_test (test_unknown_device_picks_vhd),
    cmocka_unit_test (test_unknown_device_picks_by_extension),
    cmocka_unit_test (test_bad_block_size),
    cmocka_unit_test (test_bad_sector_size),
    cmocka_unit_test (test_bad_physical_sector_size),
    cmocka_unit_test (test_parent_and_source),
    cmocka_unit_test (test_size_zero_without_parent),
    cmocka_unit_test (test_size_under_minimum),
    cmocka_unit_test (test_size_not_sector_multiple),
    cmocka_unit_test (test_size_over_maximum),
    cmocka_unit_test (test_size_with_parent),
    cmocka_unit_test (test_fixed_with_parent),
    cmocka_unit_test (test_parent_storage_type),
    cmocka_unit_test (test_source_storage_type),
    cmocka_unit_test (test_unknown_open_flags),
    cmocka_unit_test (test_source_missing),
    cmocka_unit_test (test_overlapped_bad),
    cmocka_unit_test (test_exists),
    cmocka_unit_test (test_exists_dangling_symlink),
    cmocka_unit_test (test_parent_missing),
    cmocka_unit_test (test_folder_missing),
    cmocka_unit_test (test_path_without_file_name),
    cmocka_unit_test (test_parent_not_vhd),
    cmocka_unit_test (test_dynamic_layout),
    cmocka_unit_test (test_dynamic_v1_small_blocks),
    cmocka_unit_test (test_dynamic_writable),
    cmocka_unit_test (test_fixed_layout),
    cmocka_unit_test (test_fixed_sparse),
    cmocka_unit_test (test_differencing),
    cmocka_unit_test (test_differencing_fixed_parent_other_folder),
    cmocka_unit_test (test_child_of_child),
    cmocka_unit_test (test_differencing_no_parents_handle),
    cmocka_unit_test (test_security_owner),
    cmocka_unit_test (test_security_mode),
    cmocka_unit_test (test_unique_id),
    cmocka_unit_test (test_largest_dynamic),
    cmocka_unit_test (test_odd_sizes),
    cmocka_unit_test (test_vhdx_v1_block_size),
    cmocka_unit_test (test_vhdx_v1_sector_size),
    cmocka_unit_test (test_vhdx_block_size_not_power_of_two),
    cmocka_unit_test (test_vhdx_bad_sector_size),
    cmocka_unit_test (test_vhdx_bad_physical_sector_size),
    cmocka_unit_test (test_vhdx_size_under_minimum),
    cmocka_unit_test (test_vhdx_size_not_sector_multiple),
    cmocka_unit_test (test_vhdx_size_over_maximum),
    cmocka_unit_test (test_vhdx_source_size),
    cmocka_unit_test (test_vhdx_v2_4096_sectors),
    cmocka_unit_test (test_source_4096_sectors),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
