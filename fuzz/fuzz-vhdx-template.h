/* libFuzzer harness: VHDX inputs built from a template.  VHDX places its
 * structures on MiB boundaries, so a raw image is megabytes of mostly
 * zeros that libFuzzer mutates badly.  Instead an input that starts with
 * FUZZ_VHDX_TEMPLATE_MAGIC is a compact patch: its bytes overwrite, in
 * order, small windows of a real dynamic VHDX (the template) at the
 * places that hold its structures, and the rest of the template stays as
 * it is.  The template is read once from the file that the environment
 * variable VHDKIT_FUZZ_VHDX_TEMPLATE names (tests/test-fuzz-short.sh uses
 * the sample dissect-dynamic.vhdx); without it such inputs are written
 * as they are, like any other.
 */

#ifndef VHDKIT_FUZZ_VHDX_TEMPLATE_H
#define VHDKIT_FUZZ_VHDX_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FUZZ_VHDX_TEMPLATE_MAGIC "VHDXTMPL"
#define FUZZ_VHDX_TEMPLATE_MAGIC_LEN 8

/* Read the template at path and find its windows.  Returns 0, or -1 with
 * a message on stderr.
 */
int fuzz_vhdx_template_load (const char *path);

/* Whether an input is a patch of the loaded template. */
bool fuzz_vhdx_template_applies (const uint8_t *data, size_t size);

/* Write the template patched by the input (magic included) into fd,
 * with its checksums repaired (fuzz_repair_vhdx) when repair is true.
 * Returns 0 or -1.
 */
int fuzz_vhdx_template_write (int fd, const uint8_t *data, size_t size,
                              bool repair);

/* Write the patch that gives back the template unchanged (the magic and
 * every window's bytes) to path, as a seed for the corpus.  Returns 0 or
 * -1.
 */
int fuzz_vhdx_template_write_seed (const char *path);

#endif /* VHDKIT_FUZZ_VHDX_TEMPLATE_H */
