/* vhdkit: what the nbdkit plugin and the nbdkit filter share.
 *
 * The two differ only in where the image's bytes come from (a local file
 * for the plugin, the plugin below for the filter).  Everything else, the
 * configuration keys that become vhd_open_options and the data callbacks
 * that become one engine call each, is here, so that both serve a disk
 * the same way and say the same things about it.
 *
 * Errors follow the filter convention: -1 with *err set to an errno, and
 * the engine's message (which names the image and the field) already
 * passed to nbdkit_error.  The plugin turns *err into nbdkit_set_error.
 */

#ifndef VHDKIT_SERVE_H
#define VHDKIT_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "vhdkit.h"

struct nbdkit_extents;

/* The keys both the plugin and the filter take, parsed. */
struct vhd_serve_config {
  bool readonly;
  bool force_share;
  bool ignore_parent_id_mismatch;
  unsigned max_chain_depth;     /* 0: the engine's default */
  int64_t max_metadata;         /* 0: the engine's default */
  char **parent_dirs;           /* NULL-terminated once non-empty */
  size_t nr_parent_dirs;
};

/* Parse one key.  Returns 1 when the key was one of ours (and valid),
 * 0 when it is not ours (the caller decides: the plugin refuses it, the
 * filter passes it on to the plugin below), -1 on a bad value (after
 * nbdkit_error).  The filter does not take readonly= or force-share=
 * (nbdkit -r is how a filter stack is made read-only): it passes
 * accept_readonly = false.
 */
extern int vhd_serve_config_key (struct vhd_serve_config *config,
                                 const char *key, const char *value,
                                 bool accept_readonly);
extern void vhd_serve_config_free (struct vhd_serve_config *config);

/* The open options that the configuration asks for. */
extern struct vhd_open_options
vhd_serve_open_options (const struct vhd_serve_config *config);

/* The public limits, spelled into the help text. */
#define VHD_SERVE_STR_(x) #x
#define VHD_SERVE_STR(x) VHD_SERVE_STR_(x)

/* The config_help lines for the chain keys parsed above. */
#define VHD_SERVE_CHAIN_HELP \
  "parent-dir=<DIR>       Also look for parent images in DIR (repeatable,\n" \
  "                       up to " VHD_SERVE_STR (VHD_MAX_PARENT_DIRS) " times).\n" \
  "max-chain-depth=<N>    Refuse differencing chains deeper than N (default\n" \
  "                       " VHD_SERVE_STR (VHD_DEFAULT_MAX_CHAIN_DEPTH) \
  ", at most " VHD_SERVE_STR (VHD_MAX_CHAIN_DEPTH) ").\n" \
  "ignore-parent-id-mismatch=true\n" \
  "                       Open a parent whose unique ID does not match.\n" \
  "max-metadata=<SIZE>    Memory an image's block table may take (default 1G)."

/* Log the engine's last message and return -1 with *err = -r. */
extern int vhd_serve_engine_error (int r, int *err);

/* The block size limits that both advertise (see serve-io.c for why). */
extern void vhd_serve_block_size (uint32_t *minimum, uint32_t *preferred,
                                  uint32_t *maximum);

/* The data path: one engine call each, nbdkit flags translated. */
extern int vhd_serve_pread (vhd_disk *disk, void *buf, uint32_t count,
                            uint64_t offset, int *err);
extern int vhd_serve_pwrite (vhd_disk *disk, const void *buf, uint32_t count,
                             uint64_t offset, uint32_t flags, int *err);
extern int vhd_serve_flush (vhd_disk *disk, int *err);
extern int vhd_serve_trim (vhd_disk *disk, uint32_t count, uint64_t offset,
                           uint32_t flags, int *err);
extern int vhd_serve_zero (vhd_disk *disk, uint32_t count, uint64_t offset,
                           uint32_t flags, int *err);
extern int vhd_serve_extents (vhd_disk *disk, uint32_t count, uint64_t offset,
                              struct nbdkit_extents *extents, int *err);

#endif /* VHDKIT_SERVE_H */
