/* vhdkit: copying a source disk into a new disk (internal; see copy.c). */

#ifndef VHDKIT_COPY_H
#define VHDKIT_COPY_H

#include "async.h"
#include "source.h"
#include "vhdkit.h"

/* Copy the source's src->size bytes to the start of target, a new fixed
 * or dynamic disk that reads as zeros: the source's holes are not read,
 * and zeros are not written (a dynamic target leaves their blocks
 * unallocated), so that the blocks that are allocated follow each other
 * in the source's order.  Reports progress to op (which may be NULL) and
 * stops with -ECANCELED when op is cancelled.  The caller flushes.
 */
int vhd_copy_source (struct vhd_source *src, vhd_disk *target,
                     struct vhd_operation *op);

#endif /* VHDKIT_COPY_H */
