/* Unit tests of fuzz/fuzz-repair.c, the fuzz harness's checksum repair:
 * a repaired VHD footer or dynamic header decodes again with the
 * library's own decoders; nothing without its signature, or outside the
 * input, is touched; a real VHD and a real VHDX come out of a repair of
 * their smashed checksums byte for byte as their writers left them (so
 * the sums are the ones real writers compute); about 1 input in 8 is
 * left unrepaired.  And the VHDX template patches of
 * fuzz/fuzz-vhdx-template.c: the seed gives back the template, a patch
 * changes the bytes it names and no others, and the selector byte picks
 * one of several templates, each with its own layout.
 */

#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "format.h"
#include "formats/vhdx/crc32c.h"
#include "fuzz-repair.h"
#include "fuzz-vhdx-template.h"
#include "scratch.h"

#define KiB (UINT64_C (1) << 10)

/* A dynamic VHD in miniature: footer copy at 0, dynamic header at 512, a
 * one-sector BAT at 1536, trailing footer at 2048 (or 511 bytes of it).
 */
#define IMAGE_SIZE (2048 + VHD_FOOTER_SIZE)

static size_t
make_dynamic (uint8_t *buf, bool short_footer)
{
  struct vhd_footer f = {
    .features = VHD_FEATURES_RESERVED,
    .format_version = VHD_FORMAT_VERSION,
    .data_offset = 512,
    .creator_app = { 'w', 'i', 'n', ' ' },
    .current_size = 2 << 20,
    .disk_type = VHD_TYPE_DYNAMIC,
  };
  struct vhd_dyn_header h = {
    .data_offset = VHD_FIXED_DATA_OFFSET,
    .table_offset = 1536,
    .header_version = VHD_HEADER_VERSION,
    .max_table_entries = 1,
    .block_size = 2 << 20,
  };

  memset (buf, 0, IMAGE_SIZE);
  vhd_footer_encode (&f, buf);
  vhd_dyn_header_encode (&h, buf + 512);
  memset (buf + 1536, 0xff, 4);
  memcpy (buf + 2048, buf, VHD_FOOTER_SIZE);
  return short_footer ? IMAGE_SIZE - 1 : IMAGE_SIZE;
}

static int
decode_all (const uint8_t *buf, size_t size)
{
  struct vhd_footer f;
  struct vhd_dyn_header h;
  uint8_t trailing[VHD_FOOTER_SIZE] = { 0 };

  memcpy (trailing, buf + 2048, size - 2048);
  if (vhd_footer_decode (buf, &f, "copy", 0) < 0 ||
      vhd_footer_decode (trailing, &f, "trailing", 2048) < 0 ||
      vhd_dyn_header_decode (buf + 512, &h, "header", 512) < 0)
    return -1;
  return 0;
}

/* Change a field that no check but the checksum looks at in each of the
 * three structures: all three fail, and pass again after the repair.
 */
static void
test_vhd_repair_makes_mutants_decode (void **state)
{
  static uint8_t buf[IMAGE_SIZE];

  (void) state;
  for (int short_footer = 0; short_footer <= 1; short_footer++) {
    size_t size = make_dynamic (buf, short_footer);

    assert_int_equal (decode_all (buf, size), 0);
    buf[28] ^= 0x20;                    /* creator app of the copy */
    buf[2048 + 28] ^= 0x20;             /* ... of the trailing footer */
    buf[512 + 56] ^= 1;                 /* parent timestamp */
    assert_int_equal (vhd_footer_decode (buf, &(struct vhd_footer) { 0 },
                                         "copy", 0), -EINVAL);
    assert_int_equal (fuzz_format_of (buf, size), FUZZ_FORMAT_VHD);
    assert_int_equal (fuzz_repair (buf, size), 4);
    assert_int_equal (decode_all (buf, size), 0);
  }
}

/* A data offset past the end, a header without its cookie, an input
 * without any footer cookie: nothing is written there.
 */
static void
test_vhd_repair_leaves_what_it_cannot_see (void **state)
{
  static uint8_t buf[IMAGE_SIZE], before[IMAGE_SIZE];
  size_t size;

  (void) state;
  /* A header, cookie and all, that would cross the end of the input. */
  size = make_dynamic (buf, false);
  memcpy (buf + 1960, "cxsparse", 8);
  vhd_put_be64 (buf + 16, 1960);
  vhd_put_be64 (buf + 2048 + 16, UINT64_MAX - 100);
  memcpy (before, buf, size);
  assert_int_equal (fuzz_repair_vhd (buf, size), 2);  /* the footers */
  assert_memory_equal (buf + 512, before + 512, 2048 - 512);

  size = make_dynamic (buf, false);
  buf[512] = 'X';                               /* header cookie */
  buf[512 + 56] ^= 1;
  memcpy (before, buf, size);
  assert_int_equal (fuzz_repair_vhd (buf, size), 2);
  assert_memory_equal (buf + 512, before + 512, 1024);

  size = make_dynamic (buf, false);
  buf[0] = buf[2048] = 'X';                     /* both footer cookies */
  memcpy (before, buf, size);
  assert_int_equal (fuzz_format_of (buf, size), FUZZ_FORMAT_UNKNOWN);
  assert_int_equal (fuzz_repair (buf, size), 0);
  assert_memory_equal (buf, before, size);

  /* Inputs shorter than any structure. */
  assert_int_equal (fuzz_repair (buf, 0), 0);
  memcpy (buf, "conectix", 8);
  assert_int_equal (fuzz_repair (buf, 8), 0);
  memcpy (buf, "vhdxfile", 8);
  assert_int_equal (fuzz_repair (buf, 8), 0);
  assert_int_equal (fuzz_repair (buf, IMAGE_SIZE), 0);  /* < 64 KiB */
}

/* Read up to size bytes of a sample, decompressed with xz. */
static size_t
read_sample (const char *name, uint8_t *buf, size_t size)
{
  const char *samples = getenv ("VHDKIT_SAMPLES");
  char cmd[4096];
  FILE *p;
  size_t n;

  if (samples == NULL)
    fail_msg ("VHDKIT_SAMPLES is not set");
  snprintf (cmd, sizeof cmd, "xz -dc '%s/%s'", samples, name);
  p = popen (cmd, "r");
  assert_non_null (p);
  n = fread (buf, 1, size, p);
  /* Stop reading early: xz then dies of SIGPIPE, which is expected. */
  pclose (p);
  assert_true (n > 0);
  return n;
}

static uint32_t
get_le32 (const uint8_t *p)
{
  return p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
         | (uint32_t) p[3] << 24;
}

/* Smash every checksum the repair knows in a real image: the repair must
 * give back exactly what the writer wrote.
 */
static void
test_real_images_come_back_unchanged (void **state)
{
  static uint8_t orig[320 * KiB], buf[320 * KiB];
  static const size_t vhdx_sums[] = {
    64 * KiB + 4, 128 * KiB + 4, 192 * KiB + 4, 256 * KiB + 4,
  };
  size_t n;

  (void) state;
  /* win8.vhd: an 8 KiB dynamic disk written by Windows. */
  n = read_sample ("images/win8.vhd.xz", orig, sizeof orig);
  assert_int_equal (n, 8192);
  memcpy (buf, orig, n);
  buf[64] ^= 0xff;
  buf[n - VHD_FOOTER_SIZE + 64] ^= 0xff;
  buf[vhd_get_be64 (orig + 16) + 36] ^= 0xff;
  assert_int_equal (fuzz_repair (buf, n), 4);
  assert_memory_equal (buf, orig, n);

  /* dissect-dynamic.vhdx: its headers and region tables. */
  n = read_sample ("vhdx/dissect-dynamic.vhdx.xz", orig, sizeof orig);
  assert_int_equal (n, sizeof orig);
  memcpy (buf, orig, n);
  for (size_t i = 0; i < 4; i++)
    buf[vhdx_sums[i]] ^= 0xff;
  assert_int_equal (fuzz_format_of (buf, n), FUZZ_FORMAT_VHDX);
  assert_int_equal (fuzz_repair (buf, n), 4);
  assert_memory_equal (buf, orig, n);

  /* Cut short inside the second region table: only three repaired, and
   * the stored sum of a header is its CRC-32C with the field zeroed.
   */
  memcpy (buf, orig, n);
  for (size_t i = 0; i < 4; i++)
    buf[vhdx_sums[i]] ^= 0xff;
  assert_int_equal (fuzz_repair_vhdx (buf, 300 * KiB), 3);
  assert_memory_equal (buf, orig, 256 * KiB);
  assert_int_not_equal (buf[vhdx_sums[3]], orig[vhdx_sums[3]]);
  memset (buf + 64 * KiB + 4, 0, 4);
  assert_int_equal (vhdx_crc32c (buf + 64 * KiB, 4096),
                    get_le32 (orig + 64 * KiB + 4));
}

/* About 7 inputs in 8 are repaired, and the choice is a function of the
 * input alone.
 */
static void
test_should_repair_share (void **state)
{
  uint8_t input[64];
  uint64_t x = 88172645463325252ull;
  unsigned repaired = 0, total = 8000;

  (void) state;
  for (unsigned i = 0; i < total; i++) {
    for (size_t j = 0; j < sizeof input; j++) {
      x ^= x << 13; x ^= x >> 7; x ^= x << 17;
      input[j] = (uint8_t) x;
    }
    bool r = fuzz_should_repair (input, sizeof input);
    assert_int_equal (r, fuzz_should_repair (input, sizeof input));
    repaired += r;
  }
  assert_in_range (repaired, total * 6 / 8 + total / 32,
                   total * 7 / 8 + total / 32);
}

static size_t
read_file (const char *path, uint8_t *buf, size_t size)
{
  FILE *fp = fopen (path, "rb");
  size_t n;

  assert_non_null (fp);
  n = fread (buf, 1, size, fp);
  fclose (fp);
  return n;
}

/* The seed that the harness writes gives back the template's first
 * 4 MiB byte for byte (and its size, the rest a hole); a patched header
 * byte is the only change without the repair, and comes with its
 * header's CRC-32C with it.
 */
static void
test_vhdx_template_patches (void **state)
{
  static uint8_t orig[4 << 20], out[4 << 20], seed[8192];
  char tmpl[300], seed_path[300], img[300], cmd[1024];
  const char *samples = getenv ("VHDKIT_SAMPLES");
  size_t seed_len;
  int fd;

  (void) state;
  assert_non_null (samples);
  snprintf (tmpl, sizeof tmpl, "%s/template.vhdx", dir);
  snprintf (seed_path, sizeof seed_path, "%s/seed", dir);
  snprintf (img, sizeof img, "%s/image.vhdx", dir);
  snprintf (cmd, sizeof cmd, "xz -dc '%s/vhdx/dissect-dynamic.vhdx.xz' > '%s'",
            samples, tmpl);
  assert_int_equal (system (cmd), 0);
  assert_int_equal (read_file (tmpl, orig, sizeof orig), sizeof orig);

  fuzz_vhdx_template_unload_all ();
  assert_int_equal (fuzz_vhdx_template_load (tmpl), 0);
  assert_int_equal (fuzz_vhdx_template_write_seed (0, seed_path), 0);
  seed_len = read_file (seed_path, seed, sizeof seed);
  assert_true (seed_len > FUZZ_VHDX_TEMPLATE_PATCH_AT + 512 + 4 * 256);
  assert_true (fuzz_vhdx_template_applies (seed, seed_len));
  assert_false (fuzz_vhdx_template_applies (orig, 4096));

  for (int patched = 0; patched <= 2; patched++) {
    struct stat st;
    if (patched)
      /* header 1's sequence number */
      seed[FUZZ_VHDX_TEMPLATE_PATCH_AT + 512 + 8] ^= 1;
    fd = open (img, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true (fd >= 0);
    assert_int_equal (fuzz_vhdx_template_write (fd, seed, seed_len,
                                                patched == 2), 0);
    assert_int_equal (fstat (fd, &st), 0);
    close (fd);
    assert_int_equal (st.st_size, 37748736);
    assert_int_equal (read_file (img, out, sizeof out), sizeof out);
    if (!patched)
      assert_memory_equal (out, orig, sizeof out);
    else {
      out[64 * KiB + 8] ^= 1;
      if (patched == 2) {
        assert_memory_not_equal (out + 64 * KiB + 4, orig + 64 * KiB + 4, 4);
        memcpy (out + 64 * KiB + 4, orig + 64 * KiB + 4, 4);
      }
      assert_memory_equal (out, orig, sizeof out);
      seed[FUZZ_VHDX_TEMPLATE_PATCH_AT + 512 + 8] ^= 1;
    }
  }
}

/* Write the image that a patch input gives into path and read its first
 * len bytes into out; return the file's size.
 */
static uint64_t
write_patched (const char *path, const uint8_t *input, size_t input_len,
               uint8_t *out, size_t len)
{
  struct stat st;
  int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

  assert_true (fd >= 0);
  assert_int_equal (fuzz_vhdx_template_write (fd, input, input_len, false),
                    0);
  assert_int_equal (fstat (fd, &st), 0);
  close (fd);
  assert_int_equal (read_file (path, out, len), len);
  return (uint64_t) st.st_size;
}

/* Two templates with their own layouts: each one's seed gives back that
 * template's first 4 MiB and size, the selector counts modulo the number
 * of templates, and the bare magic means the first.
 */
static void
test_vhdx_template_selects (void **state)
{
  static const char *names[2] = {
    "dissect-dynamic.vhdx", "standin-parent-of-dissect-differencing.vhdx",
  };
  static const uint64_t sizes[2] = { 37748736, 8388608 };
  static uint8_t orig[2][4 << 20], out[4 << 20], seed[8192];
  char tmpl[2][300], seed_path[300], img[300], cmd[1024];
  const char *samples = getenv ("VHDKIT_SAMPLES");
  size_t seed_len;

  (void) state;
  assert_non_null (samples);
  fuzz_vhdx_template_unload_all ();
  snprintf (seed_path, sizeof seed_path, "%s/seed", dir);
  snprintf (img, sizeof img, "%s/image.vhdx", dir);
  for (int i = 0; i < 2; i++) {
    snprintf (tmpl[i], sizeof tmpl[i], "%s/%s", dir, names[i]);
    snprintf (cmd, sizeof cmd, "xz -dc '%s/vhdx/%s.xz' > '%s'", samples,
              names[i], tmpl[i]);
    assert_int_equal (system (cmd), 0);
    assert_int_equal (read_file (tmpl[i], orig[i], sizeof orig[i]),
                      sizeof orig[i]);
    assert_int_equal (fuzz_vhdx_template_load (tmpl[i]), 0);
  }
  assert_int_equal (fuzz_vhdx_template_count (), 2);
  assert_string_equal (fuzz_vhdx_template_path (1), tmpl[1]);
  /* The layouts differ where the windows are, or this proves nothing. */
  assert_memory_not_equal (orig[0], orig[1], sizeof orig[0]);

  for (int i = 0; i < 2; i++) {
    assert_int_equal (fuzz_vhdx_template_write_seed (i, seed_path), 0);
    seed_len = read_file (seed_path, seed, sizeof seed);
    assert_int_equal (seed[FUZZ_VHDX_TEMPLATE_MAGIC_LEN], i);
    assert_int_equal (write_patched (img, seed, seed_len, out, sizeof out),
                      sizes[i]);
    assert_memory_equal (out, orig[i], sizeof out);
    /* Selector i + 2 is template i again. */
    seed[FUZZ_VHDX_TEMPLATE_MAGIC_LEN] = (uint8_t) (i + 2);
    assert_int_equal (write_patched (img, seed, seed_len, out, sizeof out),
                      sizes[i]);
    assert_memory_equal (out, orig[i], sizeof out);
  }
  /* No selector, no patch: the first template as it is. */
  assert_int_equal (write_patched (img, (const uint8_t *) "VHDXTMPL",
                                   FUZZ_VHDX_TEMPLATE_MAGIC_LEN, out,
                                   sizeof out), sizes[0]);
  assert_memory_equal (out, orig[0], sizeof out);
  assert_int_equal (fuzz_vhdx_template_write_seed (2, seed_path), -1);
  fuzz_vhdx_template_unload_all ();
}

static int
setup (void **state)
{
  (void) state;
  return make_scratch ("fuzz-repair");
}

static int
teardown (void **state)
{
  (void) state;
  return remove_scratch ();
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_vhd_repair_makes_mutants_decode),
    cmocka_unit_test (test_vhd_repair_leaves_what_it_cannot_see),
    cmocka_unit_test (test_real_images_come_back_unchanged),
    cmocka_unit_test (test_should_repair_share),
    cmocka_unit_test (test_vhdx_template_patches),
    cmocka_unit_test (test_vhdx_template_selects),
  };
  return cmocka_run_group_tests (tests, setup, teardown);
}
