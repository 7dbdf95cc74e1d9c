/* vhdkit: resolving a differencing disk's parent chain (internal). */

#ifndef VHDKIT_CHAIN_H
#define VHDKIT_CHAIN_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "image.h"

/* One image on the way down a chain, for loop detection. */
struct vhd_chain_link {
  dev_t dev;
  ino_t ino;
  const char *path;
  const struct vhd_chain_link *next;    /* the image above, or NULL */
};

/* What an open at some depth of a chain knows. */
struct vhd_chain_context {
  const struct vhd_open_options *options;
  unsigned depth;                       /* 0 for the image asked for */
  const struct vhd_chain_link *children;/* images above this one */
  const char *top_dir;                  /* realpath of the top image's
                                         * folder; NULL at depth 0 */
};

/* Open an image from a backend it owns (closed on failure too). */
int vhd_open_backend (struct vhd_backend *be, bool readonly, uint32_t flags,
                      const struct vhd_chain_context *chain,
                      struct vhd_disk **out);
/* Open an image from an fd it owns (closed on failure too), through a
 * file backend.
 */
int vhd_open_fd (int fd, const char *path, bool readonly, uint32_t flags,
                 const struct vhd_chain_context *chain,
                 struct vhd_disk **out);

/* Find, confine, open and check the parent of a differencing disk. */
int vhd_chain_open_parent (struct vhd_disk *child,
                           const struct vhd_chain_context *chain);

#endif /* VHDKIT_CHAIN_H */
