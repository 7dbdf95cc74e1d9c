/* Unit tests of the VHDX parent locator codec (lib/formats/vhdx/locator.c):
 * the item of a real Hyper-V checkpoint (dissect-differencing.avhdx)
 * decodes to the values it holds, and the encoder writes those values
 * back byte for byte; encode then decode gives back every value; and
 * each rule that decode enforces refuses an item that breaks it, with
 * -EINVAL (-ENOTSUP for a foreign locator type) and a message that names
 * the file and the entry, key or field at fault.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "formats/vhdx/format.h"
#include "scratch.h"
#include "require.h"

#define KiB (UINT64_C (1) << 10)
#define MiB (UINT64_C (1) << 20)

#define F "child.avhdx"

/* Places in an item ([MS-VHDX] 2.6.2.6.1, 2.6.2.6.2). */
#define RESERVED       16
#define COUNT          18
#define ENTRY(i)       (20 + 12 * (i))
#define KEY_OFFSET     0
#define VALUE_OFFSET   4
#define KEY_LENGTH     8
#define VALUE_LENGTH   10

static void
assert_error (int r, int err, const char *needle)
{
  const char *msg = vhd_last_error ();

  if (r != -err || strstr (msg, needle) == NULL)
    fail_msg ("expected -%d with \"%s\", got %d: \"%s\"", err, needle, r,
              msg);
  /* Every message names the file. */
  if (strncmp (msg, F ": ", strlen (F ": ")) != 0)
    fail_msg ("message does not start with the file name: \"%s\"", msg);
}

/* The same for the encoder, which knows no file: the message must say
 * what it is about.
 */
static void
assert_encode_error (int r, int err, const char *needle)
{
  const char *msg = vhd_last_error ();

  if (r != -err || strstr (msg, needle) == NULL)
    fail_msg ("expected -%d with \"%s\", got %d: \"%s\"", err, needle, r,
              msg);
}

/* ---- The Hyper-V sample ---- */

/* The parent locator item of dissect-differencing.avhdx (a Hyper-V
 * checkpoint, Windows 10 1809): 1014 bytes at 64 KiB + 40 in its metadata
 * region.  Dumped with a short Python script that follows region table 1
 * to the metadata table and its parent locator entry, then prints the
 * bytes; test_sample_item_matches checks them against the file.
 */
static const uint8_t hyperv_item[1014] = {
  0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a, 0xb7, 0x89, 0x25, 0xb8,
  0xe9, 0x44, 0x59, 0x13, 0x00, 0x00, 0x05, 0x00, 0x50, 0x00, 0x00, 0x00,
  0x6c, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x4c, 0x00, 0xb8, 0x00, 0x00, 0x00,
  0xde, 0x00, 0x00, 0x00, 0x26, 0x00, 0xd8, 0x00, 0xb6, 0x01, 0x00, 0x00,
  0xd0, 0x01, 0x00, 0x00, 0x1a, 0x00, 0x72, 0x00, 0x42, 0x02, 0x00, 0x00,
  0x58, 0x02, 0x00, 0x00, 0x16, 0x00, 0x34, 0x01, 0x8c, 0x03, 0x00, 0x00,
  0xaa, 0x03, 0x00, 0x00, 0x1e, 0x00, 0x4c, 0x00, 0x70, 0x00, 0x61, 0x00,
  0x72, 0x00, 0x65, 0x00, 0x6e, 0x00, 0x74, 0x00, 0x5f, 0x00, 0x6c, 0x00,
  0x69, 0x00, 0x6e, 0x00, 0x6b, 0x00, 0x61, 0x00, 0x67, 0x00, 0x65, 0x00,
  0x7b, 0x00, 0x66, 0x00, 0x66, 0x00, 0x33, 0x00, 0x34, 0x00, 0x30, 0x00,
  0x30, 0x00, 0x33, 0x00, 0x62, 0x00, 0x2d, 0x00, 0x31, 0x00, 0x31, 0x00,
  0x65, 0x00, 0x64, 0x00, 0x2d, 0x00, 0x34, 0x00, 0x63, 0x00, 0x66, 0x00,
  0x38, 0x00, 0x2d, 0x00, 0x61, 0x00, 0x31, 0x00, 0x36, 0x00, 0x36, 0x00,
  0x2d, 0x00, 0x62, 0x00, 0x32, 0x00, 0x62, 0x00, 0x65, 0x00, 0x30, 0x00,
  0x35, 0x00, 0x65, 0x00, 0x32, 0x00, 0x30, 0x00, 0x62, 0x00, 0x38, 0x00,
  0x30, 0x00, 0x7d, 0x00, 0x61, 0x00, 0x62, 0x00, 0x73, 0x00, 0x6f, 0x00,
  0x6c, 0x00, 0x75, 0x00, 0x74, 0x00, 0x65, 0x00, 0x5f, 0x00, 0x77, 0x00,
  0x69, 0x00, 0x6e, 0x00, 0x33, 0x00, 0x32, 0x00, 0x5f, 0x00, 0x70, 0x00,
  0x61, 0x00, 0x74, 0x00, 0x68, 0x00, 0x43, 0x00, 0x3a, 0x00, 0x5c, 0x00,
  0x55, 0x00, 0x73, 0x00, 0x65, 0x00, 0x72, 0x00, 0x73, 0x00, 0x5c, 0x00,
  0x50, 0x00, 0x75, 0x00, 0x62, 0x00, 0x6c, 0x00, 0x69, 0x00, 0x63, 0x00,
  0x5c, 0x00, 0x44, 0x00, 0x6f, 0x00, 0x63, 0x00, 0x75, 0x00, 0x6d, 0x00,
  0x65, 0x00, 0x6e, 0x00, 0x74, 0x00, 0x73, 0x00, 0x5c, 0x00, 0x48, 0x00,
  0x79, 0x00, 0x70, 0x00, 0x65, 0x00, 0x72, 0x00, 0x2d, 0x00, 0x56, 0x00,
  0x5c, 0x00, 0x56, 0x00, 0x69, 0x00, 0x72, 0x00, 0x74, 0x00, 0x75, 0x00,
  0x61, 0x00, 0x6c, 0x00, 0x20, 0x00, 0x68, 0x00, 0x61, 0x00, 0x72, 0x00,
  0x64, 0x00, 0x20, 0x00, 0x64, 0x00, 0x69, 0x00, 0x73, 0x00, 0x6b, 0x00,
  0x73, 0x00, 0x5c, 0x00, 0x47, 0x00, 0x65, 0x00, 0x6e, 0x00, 0x65, 0x00,
  0x72, 0x00, 0x61, 0x00, 0x74, 0x00, 0x69, 0x00, 0x6f, 0x00, 0x6e, 0x00,
  0x20, 0x00, 0x31, 0x00, 0x5f, 0x00, 0x34, 0x00, 0x39, 0x00, 0x43, 0x00,
  0x34, 0x00, 0x42, 0x00, 0x41, 0x00, 0x46, 0x00, 0x33, 0x00, 0x2d, 0x00,
  0x34, 0x00, 0x42, 0x00, 0x32, 0x00, 0x35, 0x00, 0x2d, 0x00, 0x34, 0x00,
  0x34, 0x00, 0x30, 0x00, 0x36, 0x00, 0x2d, 0x00, 0x38, 0x00, 0x43, 0x00,
  0x34, 0x00, 0x42, 0x00, 0x2d, 0x00, 0x44, 0x00, 0x33, 0x00, 0x39, 0x00,
  0x45, 0x00, 0x36, 0x00, 0x35, 0x00, 0x43, 0x00, 0x33, 0x00, 0x32, 0x00,
  0x33, 0x00, 0x38, 0x00, 0x35, 0x00, 0x2e, 0x00, 0x61, 0x00, 0x76, 0x00,
  0x68, 0x00, 0x64, 0x00, 0x78, 0x00, 0x72, 0x00, 0x65, 0x00, 0x6c, 0x00,
  0x61, 0x00, 0x74, 0x00, 0x69, 0x00, 0x76, 0x00, 0x65, 0x00, 0x5f, 0x00,
  0x70, 0x00, 0x61, 0x00, 0x74, 0x00, 0x68, 0x00, 0x2e, 0x00, 0x5c, 0x00,
  0x47, 0x00, 0x65, 0x00, 0x6e, 0x00, 0x65, 0x00, 0x72, 0x00, 0x61, 0x00,
  0x74, 0x00, 0x69, 0x00, 0x6f, 0x00, 0x6e, 0x00, 0x20, 0x00, 0x31, 0x00,
  0x5f, 0x00, 0x34, 0x00, 0x39, 0x00, 0x43, 0x00, 0x34, 0x00, 0x42, 0x00,
  0x41, 0x00, 0x46, 0x00, 0x33, 0x00, 0x2d, 0x00, 0x34, 0x00, 0x42, 0x00,
  0x32, 0x00, 0x35, 0x00, 0x2d, 0x00, 0x34, 0x00, 0x34, 0x00, 0x30, 0x00,
  0x36, 0x00, 0x2d, 0x00, 0x38, 0x00, 0x43, 0x00, 0x34, 0x00, 0x42, 0x00,
  0x2d, 0x00, 0x44, 0x00, 0x33, 0x00, 0x39, 0x00, 0x45, 0x00, 0x36, 0x00,
  0x35, 0x00, 0x43, 0x00, 0x33, 0x00, 0x32, 0x00, 0x33, 0x00, 0x38, 0x00,
  0x35, 0x00, 0x2e, 0x00, 0x61, 0x00, 0x76, 0x00, 0x68, 0x00, 0x64, 0x00,
  0x78, 0x00, 0x76, 0x00, 0x6f, 0x00, 0x6c, 0x00, 0x75, 0x00, 0x6d, 0x00,
  0x65, 0x00, 0x5f, 0x00, 0x70, 0x00, 0x61, 0x00, 0x74, 0x00, 0x68, 0x00,
  0x5c, 0x00, 0x5c, 0x00, 0x3f, 0x00, 0x5c, 0x00, 0x56, 0x00, 0x6f, 0x00,
  0x6c, 0x00, 0x75, 0x00, 0x6d, 0x00, 0x65, 0x00, 0x7b, 0x00, 0x30, 0x00,
  0x65, 0x00, 0x62, 0x00, 0x61, 0x00, 0x33, 0x00, 0x35, 0x00, 0x31, 0x00,
  0x65, 0x00, 0x2d, 0x00, 0x35, 0x00, 0x36, 0x00, 0x33, 0x00, 0x34, 0x00,
  0x2d, 0x00, 0x34, 0x00, 0x36, 0x00, 0x64, 0x00, 0x36, 0x00, 0x2d, 0x00,
  0x61, 0x00, 0x38, 0x00, 0x63, 0x00, 0x66, 0x00, 0x2d, 0x00, 0x34, 0x00,
  0x64, 0x00, 0x64, 0x00, 0x63, 0x00, 0x32, 0x00, 0x64, 0x00, 0x36, 0x00,
  0x61, 0x00, 0x63, 0x00, 0x30, 0x00, 0x62, 0x00, 0x39, 0x00, 0x7d, 0x00,
  0x5c, 0x00, 0x55, 0x00, 0x73, 0x00, 0x65, 0x00, 0x72, 0x00, 0x73, 0x00,
  0x5c, 0x00, 0x50, 0x00, 0x75, 0x00, 0x62, 0x00, 0x6c, 0x00, 0x69, 0x00,
  0x63, 0x00, 0x5c, 0x00, 0x44, 0x00, 0x6f, 0x00, 0x63, 0x00, 0x75, 0x00,
  0x6d, 0x00, 0x65, 0x00, 0x6e, 0x00, 0x74, 0x00, 0x73, 0x00, 0x5c, 0x00,
  0x48, 0x00, 0x79, 0x00, 0x70, 0x00, 0x65, 0x00, 0x72, 0x00, 0x2d, 0x00,
  0x56, 0x00, 0x5c, 0x00, 0x56, 0x00, 0x69, 0x00, 0x72, 0x00, 0x74, 0x00,
  0x75, 0x00, 0x61, 0x00, 0x6c, 0x00, 0x20, 0x00, 0x68, 0x00, 0x61, 0x00,
  0x72, 0x00, 0x64, 0x00, 0x20, 0x00, 0x64, 0x00, 0x69, 0x00, 0x73, 0x00,
  0x6b, 0x00, 0x73, 0x00, 0x5c, 0x00, 0x47, 0x00, 0x65, 0x00, 0x6e, 0x00,
  0x65, 0x00, 0x72, 0x00, 0x61, 0x00, 0x74, 0x00, 0x69, 0x00, 0x6f, 0x00,
  0x6e, 0x00, 0x20, 0x00, 0x31, 0x00, 0x5f, 0x00, 0x34, 0x00, 0x39, 0x00,
  0x43, 0x00, 0x34, 0x00, 0x42, 0x00, 0x41, 0x00, 0x46, 0x00, 0x33, 0x00,
  0x2d, 0x00, 0x34, 0x00, 0x42, 0x00, 0x32, 0x00, 0x35, 0x00, 0x2d, 0x00,
  0x34, 0x00, 0x34, 0x00, 0x30, 0x00, 0x36, 0x00, 0x2d, 0x00, 0x38, 0x00,
  0x43, 0x00, 0x34, 0x00, 0x42, 0x00, 0x2d, 0x00, 0x44, 0x00, 0x33, 0x00,
  0x39, 0x00, 0x45, 0x00, 0x36, 0x00, 0x35, 0x00, 0x43, 0x00, 0x33, 0x00,
  0x32, 0x00, 0x33, 0x00, 0x38, 0x00, 0x35, 0x00, 0x2e, 0x00, 0x61, 0x00,
  0x76, 0x00, 0x68, 0x00, 0x64, 0x00, 0x78, 0x00, 0x70, 0x00, 0x61, 0x00,
  0x72, 0x00, 0x65, 0x00, 0x6e, 0x00, 0x74, 0x00, 0x5f, 0x00, 0x6c, 0x00,
  0x69, 0x00, 0x6e, 0x00, 0x6b, 0x00, 0x61, 0x00, 0x67, 0x00, 0x65, 0x00,
  0x32, 0x00, 0x7b, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00,
  0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x2d, 0x00, 0x30, 0x00,
  0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x2d, 0x00, 0x30, 0x00, 0x30, 0x00,
  0x30, 0x00, 0x30, 0x00, 0x2d, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00,
  0x30, 0x00, 0x2d, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00,
  0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00, 0x30, 0x00,
  0x30, 0x00, 0x30, 0x00, 0x7d, 0x00,
};

/* What it says, as the same script printed it (UTF-16 decoded):
 *   0 parent_linkage       {ff34003b-11ed-4cf8-a166-b2be05e20b80}
 *   1 absolute_win32_path  C:\Users\...\Generation 1_49C4....avhdx
 *   2 relative_path        .\Generation 1_49C4....avhdx
 *   3 volume_path          \\?\Volume{0eba351e-...}\Users\...\Generation...
 *   4 parent_linkage2      {00000000-0000-0000-0000-000000000000}
 * Strings right after the 5 entries, each key then its value, no NUL,
 * no padding, reserved field 0.
 */
#define HV_NAME "Generation 1_49C4BAF3-4B25-4406-8C4B-D39E65C32385.avhdx"
#define HV_FOLDER "\\Users\\Public\\Documents\\Hyper-V\\Virtual hard disks\\"

static struct vhdx_parent_link
hyperv_link (void)
{
  struct vhdx_parent_link link = {
    .parent_linkage = { { 0xff, 0x34, 0x00, 0x3b, 0x11, 0xed, 0x4c, 0xf8,
                          0xa1, 0x66, 0xb2, 0xbe, 0x05, 0xe2, 0x0b, 0x80 } },
    .has_parent_linkage2 = true,
    .parent_linkage2 = { { 0 } },
    .relative_path = (char *) ".\\" HV_NAME,
    .volume_path = (char *) "\\\\?\\Volume{0eba351e-5634-46d6-a8cf-"
                            "4ddc2d6ac0b9}" HV_FOLDER HV_NAME,
    .absolute_win32_path = (char *) "C:" HV_FOLDER HV_NAME,
  };
  return link;
}

static void
assert_link_equal (const struct vhdx_parent_link *a,
                   const struct vhdx_parent_link *b)
{
  assert_memory_equal (a->parent_linkage.bytes, b->parent_linkage.bytes, 16);
  assert_int_equal (a->has_parent_linkage2, b->has_parent_linkage2);
  if (a->has_parent_linkage2)
    assert_memory_equal (a->parent_linkage2.bytes, b->parent_linkage2.bytes,
                         16);
  if (a->relative_path == NULL || b->relative_path == NULL)
    assert_ptr_equal (a->relative_path, b->relative_path);
  else
    assert_string_equal (a->relative_path, b->relative_path);
  if (a->volume_path == NULL || b->volume_path == NULL)
    assert_ptr_equal (a->volume_path, b->volume_path);
  else
    assert_string_equal (a->volume_path, b->volume_path);
  if (a->absolute_win32_path == NULL || b->absolute_win32_path == NULL)
    assert_ptr_equal (a->absolute_win32_path, b->absolute_win32_path);
  else
    assert_string_equal (a->absolute_win32_path, b->absolute_win32_path);
}

static void
test_hyperv_item_decodes (void **state)
{
  struct vhdx_parent_link link, want = hyperv_link ();

  assert_int_equal (vhdx_parent_link_decode (hyperv_item, sizeof hyperv_item,
                                             F, &link), 0);
  assert_link_equal (&link, &want);
  vhdx_parent_link_free (&link);
  assert_null (link.relative_path);
}

static void
test_hyperv_item_encodes (void **state)
{
  struct vhdx_parent_link want = hyperv_link ();
  uint8_t buf[2048];
  size_t len;

  memset (buf, 0xee, sizeof buf);
  assert_int_equal (vhdx_parent_link_encode (&want, buf, sizeof buf, &len),
                    0);
  assert_int_equal (len, sizeof hyperv_item);
  assert_memory_equal (buf, hyperv_item, sizeof hyperv_item);
}

/* hyperv_item is what the sample file holds: find the item through the
 * region table and the metadata table of the decompressed file.
 */
static void
test_sample_item_matches (void **state)
{
  const char *s = getenv ("VHDKIT_SAMPLES");
  char xz[4096], path[400], cmd[9000];
  struct vhdx_regions regions;
  struct vhdx_metadata_table table;
  const uint8_t *item;
  uint8_t *img;
  size_t n;
  FILE *fp;

  snprintf (xz, sizeof xz, "%s/vhdx/dissect-differencing.avhdx.xz",
            s != NULL && *s != '\0' ? s : "/work/shared/samples");
  if (access (xz, R_OK) != 0)
    skip_or_fail ("%s: not found (set VHDKIT_SAMPLES)\n", xz);
  snprintf (path, sizeof path, "%s/dissect-differencing.avhdx", dir);
  /* The header section and the metadata region are in the first MiBs. */
  snprintf (cmd, sizeof cmd, "xz -dc '%s' 2>/dev/null | head -c %" PRIu64
            " > '%s'", xz, 8 * MiB, path);
  assert_int_equal (system (cmd), 0);
  img = malloc (8 * MiB);
  assert_non_null (img);
  fp = fopen (path, "rb");
  assert_non_null (fp);
  n = fread (img, 1, 8 * MiB, fp);
  fclose (fp);
  assert_int_equal (n, 8 * MiB);

  assert_int_equal (vhdx_region_table_decode (img + VHDX_REGION_TABLE1_OFFSET,
                                              F, 1, &regions), 0);
  assert_true (regions.metadata.offset + regions.metadata.length <= n);
  assert_int_equal (vhdx_metadata_table_decode (img
                                                + regions.metadata.offset,
                                                regions.metadata.length, F,
                                                &table), 0);
  assert_true (table.parent_locator.present);
  assert_int_equal (table.parent_locator.length, sizeof hyperv_item);
  item = img + regions.metadata.offset + table.parent_locator.offset;
  assert_memory_equal (item, hyperv_item, sizeof hyperv_item);
  free (img);
  remove (path);
}

/* ---- Round trips ---- */

static void
round_trip (const struct vhdx_parent_link *link)
{
  static uint8_t buf[VHDX_METADATA_ITEM_MAX];
  struct vhdx_parent_link back;
  size_t len;

  assert_int_equal (vhdx_parent_link_encode (link, buf, sizeof buf, &len), 0);
  assert_int_equal (vhdx_parent_link_decode (buf, len, F, &back), 0);
  assert_link_equal (&back, link);
  vhdx_parent_link_free (&back);
}

static struct vhd_guid
guid_n (uint8_t n)
{
  struct vhd_guid g;

  for (int i = 0; i < 16; i++)
    g.bytes[i] = (uint8_t) (n + i * 17);
  return g;
}

static void
test_round_trip (void **state)
{
  /* é (2 UTF-8 bytes, 1 unit), € (3, 1), U+1F600 (4, a surrogate pair). */
  static char wide[] = "..\\d\xc3\xa9j\xc3\xa0 vu \xe2\x82\xac\\"
                       "\xf0\x9f\x98\x80.vhdx";
  static char volume[] = "\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}"
                         "\\p\\parent.vhdx";
  static char absolute[] = "\\\\?\\d:\\p\\parent.vhdx";
  static char relative[] = "parent.vhdx";
  static char longest[32767 + 1];
  struct vhdx_parent_link link = {
    .parent_linkage = guid_n (1),
    .has_parent_linkage2 = true,
    .parent_linkage2 = guid_n (2),
    .relative_path = wide,
    .volume_path = volume,
    .absolute_win32_path = absolute,
  };

  round_trip (&link);
  /* Each path alone, with and without parent_linkage2. */
  link.has_parent_linkage2 = false;
  link.volume_path = link.absolute_win32_path = NULL;
  link.relative_path = relative;
  round_trip (&link);
  link.relative_path = NULL;
  link.volume_path = volume;
  round_trip (&link);
  link.has_parent_linkage2 = true;
  link.volume_path = NULL;
  link.absolute_win32_path = absolute;
  round_trip (&link);
  /* All-ones and all-zero GUIDs (hex digits a-f and 0 everywhere). */
  memset (link.parent_linkage.bytes, 0xff, 16);
  memset (link.parent_linkage2.bytes, 0, 16);
  round_trip (&link);
  /* The longest path Windows makes: 32767 UTF-16 units, 65534 bytes. */
  memset (longest, 'a', sizeof longest - 1);
  link.relative_path = longest;
  round_trip (&link);
}

/* ---- Items built by hand ---- */

struct kv {
  const char *key;
  const char *value;
};

#define LINKAGE   "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}"
#define RELATIVE  "..\\parent.vhdx"

static uint8_t item[4096];

/* An item of type vhdx_locator_type_vhdx with these pairs, in this order,
 * as the pair layer writes it (then broken by the test); returns its
 * length.
 */
static size_t
make_item (const struct kv *kvs, uint16_t n)
{
  struct vhdx_locator_pair pairs[8];
  struct vhdx_parent_locator loc = {
    .type = vhdx_locator_type_vhdx, .count = n, .pairs = pairs,
  };
  size_t len;

  assert_true (n <= 8);
  for (uint16_t i = 0; i < n; i++)
    pairs[i] = (struct vhdx_locator_pair) { (char *) kvs[i].key,
                                            (char *) kvs[i].value };
  memset (item, 0, sizeof item);
  assert_int_equal (vhdx_parent_locator_encode (&loc, item, sizeof item,
                                                &len), 0);
  return len;
}

/* The usual three: parent_linkage, relative_path, absolute_win32_path. */
static size_t
make_valid_item (void)
{
  static const struct kv kvs[] = {
    { "parent_linkage", LINKAGE },
    { "relative_path", RELATIVE },
    { "absolute_win32_path", "\\\\?\\d:\\p\\parent.vhdx" },
  };
  return make_item (kvs, 3);
}

static int
decode (size_t len)
{
  struct vhdx_parent_link link;
  int r = vhdx_parent_link_decode (item, len, F, &link);

  if (r == 0)
    vhdx_parent_link_free (&link);
  return r;
}

static void
test_valid_item_decodes (void **state)
{
  struct vhdx_parent_link link;
  size_t len = make_valid_item ();

  /* The checks below break one thing in an item that decodes. */
  assert_int_equal (vhdx_parent_link_decode (item, len, F, &link), 0);
  assert_int_equal (link.parent_linkage.bytes[0], 0x83);
  assert_int_equal (link.parent_linkage.bytes[15], 0xfb);
  assert_false (link.has_parent_linkage2);
  assert_string_equal (link.relative_path, RELATIVE);
  assert_null (link.volume_path);
  vhdx_parent_link_free (&link);
}

/* There is no order to the entries, keys unknown here are skipped, the
 * GUID may be in upper case, the reserved field is not looked at.
 */
static void
test_lenient_where_the_format_is (void **state)
{
  static const struct kv kvs[] = {
    { "volume_path", "\\\\?\\Volume{1}\\p.vhdx" },
    { "x_vendor_hint", "anything" },
    { "Parent_Linkage", "not a GUID, and not the key parent_linkage" },
    { "parent_linkage", "{83ED0EC3-24C8-49A6-A959-5E4BF1288BFB}" },
  };
  struct vhdx_parent_link link;
  size_t len = make_item (kvs, 4);

  vhdx_put_le16 (item + RESERVED, 0xffff);
  assert_int_equal (vhdx_parent_link_decode (item, len, F, &link), 0);
  assert_int_equal (link.parent_linkage.bytes[0], 0x83);
  assert_int_equal (link.parent_linkage.bytes[15], 0xfb);
  assert_string_equal (link.volume_path, "\\\\?\\Volume{1}\\p.vhdx");
  assert_null (link.relative_path);
  assert_null (link.absolute_win32_path);
  vhdx_parent_link_free (&link);
}

/* ---- Rejections: the header ---- */

static void
test_rejects_item_shorter_than_header (void **state)
{
  make_valid_item ();
  assert_error (decode (19), EINVAL, "19 bytes, less than its 20-byte"
                " header");
}

static void
test_rejects_item_over_1mib (void **state)
{
  static uint8_t big[VHDX_METADATA_ITEM_MAX + 2];
  struct vhdx_parent_link link;

  memcpy (big, item, make_valid_item ());
  assert_error (vhdx_parent_link_decode (big, sizeof big, F, &link), EINVAL,
                "1048578 bytes, more than a metadata item's 1 MiB");
}

static void
test_rejects_bad_locator_type (void **state)
{
  size_t len = make_valid_item ();

  item[0] ^= 1;
  assert_error (decode (len), ENOTSUP, "locator type b04aefb6-d19e-4a81-"
                "b789-25b8e9445913 is not the VHDX locator type");
  item[0] ^= 1;
  item[15] ^= 0x80;
  assert_error (decode (len), ENOTSUP, "locator type b04aefb7-d19e-4a81-"
                "b789-25b8e9445993 is not the VHDX locator type");
  memset (item, 0, 16);
  assert_error (decode (len), ENOTSUP, "locator type 00000000-0000-0000-"
                "0000-000000000000 is not");
}

static void
test_rejects_count_that_cannot_fit (void **state)
{
  size_t len = make_valid_item ();

  /* 3 entries fit in 20 + 36 bytes, not in 20 + 35. */
  assert_error (decode (20 + 35), EINVAL, "key/value count 3: 3 entries do"
                " not fit in the item (55 bytes)");
  vhdx_put_le16 (item + COUNT, 0xffff);
  assert_error (decode (len), EINVAL, "key/value count 65535: 65535"
                " entries do not fit");
  vhdx_put_le16 (item + COUNT, 0);
  assert_error (decode (len), EINVAL, "key/value count is 0");
}

/* ---- Rejections: where the strings are ---- */

static void
test_rejects_offset_past_the_end (void **state)
{
  size_t len = make_valid_item ();

  vhdx_put_le32 (item + ENTRY (1) + KEY_OFFSET, (uint32_t) len);
  assert_error (decode (len), EINVAL, "entry 1: key at");
  assert_error (decode (len), EINVAL, "leaves the item");
  /* The last value, one unit short: the item cut by 2 bytes. */
  len = make_valid_item ();
  assert_error (decode (len - 2), EINVAL, "entry 2: value of key"
                " \"absolute_win32_path\" at");
}

/* offset + length past 2^32 (and a size_t that would wrap on 32 bits). */
static void
test_rejects_offset_length_overflow (void **state)
{
  size_t len = make_valid_item ();
  char want[100];

  vhdx_put_le32 (item + ENTRY (0) + VALUE_OFFSET, UINT32_MAX - 1);
  vhdx_put_le16 (item + ENTRY (0) + VALUE_LENGTH, 0xfffe);
  assert_error (decode (len), EINVAL, "entry 0: value of key"
                " \"parent_linkage\" at 4294967294, 65534 bytes, leaves the"
                " item");
  /* Inside the item, but not its end. */
  vhdx_put_le32 (item + ENTRY (0) + VALUE_OFFSET, (uint32_t) len - 2);
  snprintf (want, sizeof want, "at %zu, 65534 bytes, leaves the item (%zu"
            " bytes)", len - 2, len);
  assert_error (decode (len), EINVAL, want);
  /* A sum that wraps to 2 in 32 bits, which a 32-bit check would take. */
  vhdx_put_le32 (item + ENTRY (0) + VALUE_OFFSET, UINT32_MAX - 1);
  vhdx_put_le16 (item + ENTRY (0) + VALUE_LENGTH, 4);
  assert_error (decode (len), EINVAL, "entry 0: value of key"
                " \"parent_linkage\" at 4294967294, 4 bytes, leaves the"
                " item");
}

static void
test_rejects_zero_offset (void **state)
{
  size_t len = make_valid_item ();

  vhdx_put_le32 (item + ENTRY (1) + VALUE_OFFSET, 0);
  assert_error (decode (len), EINVAL, "entry 1: value of key"
                " \"relative_path\" offset is 0");
}

/* ---- Rejections: the strings ---- */

static void
test_rejects_odd_length (void **state)
{
  size_t len = make_valid_item ();

  vhdx_put_le16 (item + ENTRY (2) + KEY_LENGTH, 37);
  assert_error (decode (len), EINVAL, "entry 2: key length 37 is odd");
  len = make_valid_item ();
  vhdx_put_le16 (item + ENTRY (1) + VALUE_LENGTH,
                 (uint16_t) (vhdx_get_le16 (item + ENTRY (1) + VALUE_LENGTH)
                             - 1));
  assert_error (decode (len), EINVAL, "entry 1: value of key"
                " \"relative_path\" length 27 is odd");
}

static void
test_rejects_zero_length_key (void **state)
{
  size_t len = make_valid_item ();

  vhdx_put_le16 (item + ENTRY (0) + KEY_LENGTH, 0);
  assert_error (decode (len), EINVAL, "entry 0: key length is 0");
}

static void
test_rejects_empty_value (void **state)
{
  size_t len = make_valid_item ();

  vhdx_put_le16 (item + ENTRY (2) + VALUE_LENGTH, 0);
  assert_error (decode (len), EINVAL, "entry 2: value of key"
                " \"absolute_win32_path\" length is 0");
}

static void
test_rejects_nul_inside (void **state)
{
  size_t len = make_valid_item ();

  /* "..\\parent.vhdx": NUL for the 'p', the unit at byte 6. */
  vhdx_put_le16 (item + vhdx_get_le32 (item + ENTRY (1) + VALUE_OFFSET) + 6,
                 0);
  assert_error (decode (len), EINVAL, "entry 1: value of key"
                " \"relative_path\" holds a NUL character at byte 6");
}

static void
test_rejects_unpaired_surrogates (void **state)
{
  size_t len = make_valid_item ();
  uint32_t key1 = vhdx_get_le32 (item + ENTRY (1) + KEY_OFFSET);
  uint32_t value2 = vhdx_get_le32 (item + ENTRY (2) + VALUE_OFFSET);
  uint16_t klen1 = vhdx_get_le16 (item + ENTRY (1) + KEY_LENGTH);

  /* A high surrogate as the key's last unit: nothing follows it. */
  vhdx_put_le16 (item + key1 + klen1 - 2, 0xd83d);
  assert_error (decode (len), EINVAL, "entry 1: key is not valid UTF-16");
  /* A low surrogate alone. */
  len = make_valid_item ();
  vhdx_put_le16 (item + value2, 0xde00);
  assert_error (decode (len), EINVAL, "entry 2: value of key"
                " \"absolute_win32_path\" is not valid UTF-16");
  /* A high surrogate followed by something else than a low one. */
  len = make_valid_item ();
  vhdx_put_le16 (item + value2, 0xd83d);
  assert_error (decode (len), EINVAL, "entry 2: value of key"
                " \"absolute_win32_path\" is not valid UTF-16");
}

static void
test_rejects_duplicate_key (void **state)
{
  static const struct kv kvs[] = {
    { "parent_linkage", LINKAGE },
    { "relative_path", RELATIVE },
    { "relative_path", "..\\elsewhere\\parent.vhdx" },
  };
  static const struct kv linkage_twice[] = {
    { "parent_linkage", LINKAGE },
    { "relative_path", RELATIVE },
    { "parent_linkage", "{00000000-0000-0000-0000-000000000000}" },
  };

  assert_error (decode (make_item (kvs, 3)), EINVAL, "entries 1 and 2 have"
                " the same key \"relative_path\"");
  assert_error (decode (make_item (linkage_twice, 3)), EINVAL, "entries 0"
                " and 2 have the same key \"parent_linkage\"");
}

/* ---- Rejections: what the pairs say ---- */

static void
test_rejects_missing_parent_linkage (void **state)
{
  static const struct kv kvs[] = {
    { "parent_linkage2", LINKAGE },
    { "relative_path", RELATIVE },
  };

  assert_error (decode (make_item (kvs, 2)), EINVAL, "no parent_linkage"
                " key");
}

static void
test_rejects_no_path (void **state)
{
  static const struct kv kvs[] = {
    { "parent_linkage", LINKAGE },
    { "relative_path_", RELATIVE },
  };

  assert_error (decode (make_item (kvs, 2)), EINVAL, "no path to the"
                " parent");
}

static void
test_rejects_malformed_guid_text (void **state)
{
  static const char *const bad[] = {
    "83ed0ec3-24c8-49a6-a959-5e4bf1288bfb",       /* no braces */
    "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb",      /* no closing brace */
    "(83ed0ec3-24c8-49a6-a959-5e4bf1288bfb)",     /* other brackets */
    "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb]",     /* another closing one */
    "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfg}",     /* not hex */
    "{83ed0ec3-24c8-49a6-a959-5e4bf1288bf}",      /* a digit short */
    "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfbb}",    /* a digit more */
    "{83ed0ec324-c8-49a6-a959-5e4bf1288bfb}",     /* a dash moved */
    "{83ed0ec3-24c8-49a6-a959+5e4bf1288bfb}",     /* not a dash */
    "{83ed0ec3-24c8-49a6-a9595e4bf1288bfb0}",     /* a dash missing */
    "{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb} ",    /* something after */
    " {83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}",    /* something before */
    "{ 83ed0ec3-24c8-49a6-a959-5e4bf1288bf}",     /* a space inside */
    "{0x3ed0ec3-24c8-49a6-a959-5e4bf1288bfb}",    /* a C prefix */
    "{}",
  };

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct kv kvs[] = {
      { "parent_linkage", bad[i] },
      { "relative_path", RELATIVE },
    };
    char want[200];

    snprintf (want, sizeof want, "parent_linkage: \"%s\" is not a GUID in"
              " braces", bad[i]);
    assert_error (decode (make_item (kvs, 2)), EINVAL, want);
  }
  {
    struct kv kvs[] = {
      { "parent_linkage", LINKAGE },
      { "parent_linkage2", "{83ed0ec3-24c8-49a6-a959-5e4bf1288bf-}" },
      { "relative_path", RELATIVE },
    };

    assert_error (decode (make_item (kvs, 3)), EINVAL, "parent_linkage2:"
                  " \"{83ed0ec3-24c8-49a6-a959-5e4bf1288bf-}\" is not a"
                  " GUID in braces");
  }
}

/* ---- The encoder's refusals ---- */

static void
test_encode_rejections (void **state)
{
  static uint8_t buf[VHDX_METADATA_ITEM_MAX + 4096];
  static char too_long[32768 + 1];
  static char bad_utf8[] = "..\\p\xff.vhdx";
  static char empty[] = "";
  static char relative[] = RELATIVE;
  struct vhdx_parent_link link = {
    .parent_linkage = guid_n (1),
    .relative_path = relative,
  };
  size_t len;

  assert_int_equal (vhdx_parent_link_encode (&link, buf, sizeof buf, &len),
                    0);
  /* No room: the header and entries, then the strings. */
  assert_encode_error (vhdx_parent_link_encode (&link, buf, 30, &len),
                       ENOSPC, "30 bytes are not enough for 2 entries");
  assert_encode_error (vhdx_parent_link_encode (&link, buf, 60, &len),
                       ENOSPC, "60 bytes are not enough");
  link.relative_path = NULL;
  assert_encode_error (vhdx_parent_link_encode (&link, buf, sizeof buf,
                                                &len),
                       EINVAL, "no path to the parent");
  link.volume_path = empty;
  assert_encode_error (vhdx_parent_link_encode (&link, buf, sizeof buf,
                                                &len),
                       EINVAL, "volume_path is empty");
  link.volume_path = bad_utf8;
  assert_encode_error (vhdx_parent_link_encode (&link, buf, sizeof buf,
                                                &len),
                       EINVAL, "entry 1: value of key \"volume_path\" is"
                       " not valid UTF-8");
  /* 32768 units: 65536 bytes, more than a 16-bit length holds. */
  memset (too_long, 'a', sizeof too_long - 1);
  link.volume_path = too_long;
  assert_encode_error (vhdx_parent_link_encode (&link, buf, sizeof buf,
                                                &len),
                       EINVAL, "longer than 65535 bytes");
}

static int
setup (void **state)
{
  return make_scratch ("test-vhdx-locator");
}

static int
teardown (void **state)
{
  return remove_scratch ();
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_hyperv_item_decodes),
    cmocka_unit_test (test_hyperv_item_encodes),
    cmocka_unit_test (test_sample_item_matches),
    cmocka_unit_test (test_round_trip),
    cmocka_unit_test (test_valid_item_decodes),
    cmocka_unit_test (test_lenient_where_the_format_is),
    cmocka_unit_test (test_rejects_item_shorter_than_header),
    cmocka_unit_test (test_rejects_item_over_1mib),
    cmocka_unit_test (test_rejects_bad_locator_type),
    cmocka_unit_test (test_rejects_count_that_cannot_fit),
    cmocka_unit_test (test_rejects_offset_past_the_end),
    cmocka_unit_test (test_rejects_offset_length_overflow),
    cmocka_unit_test (test_rejects_zero_offset),
    cmocka_unit_test (test_rejects_odd_length),
    cmocka_unit_test (test_rejects_zero_length_key),
    cmocka_unit_test (test_rejects_empty_value),
    cmocka_unit_test (test_rejects_nul_inside),
    cmocka_unit_test (test_rejects_unpaired_surrogates),
    cmocka_unit_test (test_rejects_duplicate_key),
    cmocka_unit_test (test_rejects_missing_parent_linkage),
    cmocka_unit_test (test_rejects_no_path),
    cmocka_unit_test (test_rejects_malformed_guid_text),
    cmocka_unit_test (test_encode_rejections),
  };

  return cmocka_run_group_tests (tests, setup, teardown);
}
