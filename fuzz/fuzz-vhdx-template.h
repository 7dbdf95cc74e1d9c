/* libFuzzer harness: VHDX inputs built from templates.  VHDX places its
 * structures on MiB boundaries, so a raw image is megabytes of mostly
 * zeros that libFuzzer mutates badly.  Instead an input that starts with
 * FUZZ_VHDX_TEMPLATE_MAGIC is a compact patch of one of a few real VHDX
 * images (the templates):
 *
 *   "VHDXTMPL"  the magic
 *   1 byte      which template, modulo the number loaded (absent: the
 *               first)
 *   the rest    bytes that overwrite, in order, small windows of that
 *               template at the places that hold its structures
 *
 * and the rest of the template stays as it is.  Each template keeps its
 * own layout (log, BAT and metadata where its writer put them), so a
 * sample's patch seed gives back that sample, quirks included.  The
 * templates are read once from the files that the environment variable
 * VHDKIT_FUZZ_VHDX_TEMPLATE names, separated by colons
 * (tests/test-fuzz-short.sh uses the VHDX samples); without it such
 * inputs are written as they are, like any other.
 */

#ifndef VHDKIT_FUZZ_VHDX_TEMPLATE_H
#define VHDKIT_FUZZ_VHDX_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FUZZ_VHDX_TEMPLATE_MAGIC "VHDXTMPL"
#define FUZZ_VHDX_TEMPLATE_MAGIC_LEN 8
/* Where the window bytes start: after the magic and the selector. */
#define FUZZ_VHDX_TEMPLATE_PATCH_AT (FUZZ_VHDX_TEMPLATE_MAGIC_LEN + 1)

/* Templates at most; more are refused. */
#define FUZZ_VHDX_MAX_TEMPLATES 32

/* Read the template at path, find its windows and add it to the loaded
 * ones (as number fuzz_vhdx_template_count () - 1).  Only the first
 * bytes up to the end of its regions (at most 16 MiB) are read; the
 * rest may be a hole.  Returns 0, or -1 with a message on stderr (the
 * templates loaded before stay).
 */
int fuzz_vhdx_template_load (const char *path);

/* How many templates are loaded. */
size_t fuzz_vhdx_template_count (void);

/* Forget every template (for tests). */
void fuzz_vhdx_template_unload_all (void);

/* Whether an input is a patch of a loaded template. */
bool fuzz_vhdx_template_applies (const uint8_t *data, size_t size);

/* Write the template that the input selects, patched by it, into fd,
 * with its checksums repaired (fuzz_repair_vhdx) when repair is true.
 * Returns 0 or -1.
 */
int fuzz_vhdx_template_write (int fd, const uint8_t *data, size_t size,
                              bool repair);

/* Write the patch that gives back template number index unchanged (the
 * magic, the selector and every window's bytes) to path, as a seed for
 * the corpus.  Returns 0 or -1.
 */
int fuzz_vhdx_template_write_seed (size_t index, const char *path);

/* The file name template number index was loaded from. */
const char *fuzz_vhdx_template_path (size_t index);

#endif /* VHDKIT_FUZZ_VHDX_TEMPLATE_H */
