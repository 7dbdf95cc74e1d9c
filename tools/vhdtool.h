/* vhdtool: what the verbs share (vhdtool.c, convert.c). */

#ifndef VHDTOOL_H
#define VHDTOOL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vhdkit.h"

#define EXIT_USAGE 2
#define EXIT_INTERRUPTED 130    /* 128 + SIGINT, as shells report it */

extern const char *program;

void usage (FILE *fp);
int usage_error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
bool parse_size (const char *s, uint64_t *out);

/* vhd_create_virtual_disk with a source, run asynchronously: a progress
 * bar on the terminal when progress is set and stdout and stderr are
 * terminals, and SIGINT, SIGTERM or SIGHUP cancel it (no file is left;
 * exit status EXIT_INTERRUPTED).  verb names the command in messages.
 * Returns the exit status.
 */
int create_from_source (const char *verb, const char *path,
                        uint32_t device_id, uint32_t flags,
                        const struct vhd_create_parameters *params,
                        bool progress);

/* The options that create and convert share: --format, --block-size,
 * --sector-size and --physical-sector-size.  OPT_* are their getopt
 * codes (long options only); parse_layout_option takes one of them and
 * its argument into *device_id and params (version 2), or returns
 * EXIT_USAGE after a message.
 */
enum {
  OPT_FORMAT = 1000, OPT_BLOCK_SIZE, OPT_SECTOR_SIZE,
  OPT_PHYSICAL_SECTOR_SIZE,
};
#define LAYOUT_LONG_OPTIONS \
  { "format", required_argument, NULL, OPT_FORMAT }, \
  { "block-size", required_argument, NULL, OPT_BLOCK_SIZE }, \
  { "sector-size", required_argument, NULL, OPT_SECTOR_SIZE }, \
  { "physical-sector-size", required_argument, NULL, \
    OPT_PHYSICAL_SECTOR_SIZE }
int parse_layout_option (int opt, const char *arg, uint32_t *device_id,
                         struct vhd_create_parameters *params);

/* --parent-dir DIR (info, check, create --parent, convert): dirs holds
 * up to VHD_MAX_PARENT_DIRS folders and a NULL after them.  Returns false
 * after a usage message when there are too many.
 */
bool add_parent_dir (const char **dirs, size_t *n, const char *dir);

/* create and convert: with --parent-dir, the parameters become vhdkit's
 * version (version 2's fields and parent_dirs); without, they stay
 * version 2, as on Windows.
 */
void use_parent_dirs (struct vhd_create_parameters *params,
                      const char *const *dirs);

int cmd_convert (int argc, char **argv);

#endif /* VHDTOOL_H */
