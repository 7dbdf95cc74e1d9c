/* vhdkit: __attribute__((cleanup)) helpers (internal), so that a
 * function with several resources needs no goto ladder.
 */

#ifndef VHDKIT_CLEANUP_H
#define VHDKIT_CLEANUP_H

#include <stdlib.h>
#include <unistd.h>

#include "vhdkit.h"

static inline void
vhd_cleanup_free (void *ptr)
{
  free (*(void **) ptr);
}

static inline void
vhd_cleanup_close (int *fd)
{
  if (*fd >= 0)
    close (*fd);
}

static inline void
vhd_cleanup_vhd_close (vhd_disk **disk)
{
  if (*disk)
    vhd_close (*disk);
}

#define CLEANUP_FREE __attribute__ ((cleanup (vhd_cleanup_free)))
#define CLEANUP_CLOSE __attribute__ ((cleanup (vhd_cleanup_close)))
#define CLEANUP_VHD_CLOSE __attribute__ ((cleanup (vhd_cleanup_vhd_close)))

#endif /* VHDKIT_CLEANUP_H */
