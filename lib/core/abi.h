/* vhdkit: the public structs that grow at their end (vhdkit.h says how),
 * taken in and handed out at the size the caller's header knew.
 */

#ifndef VHDKIT_ABI_H
#define VHDKIT_ABI_H

#include <stddef.h>
#include <stdint.h>

#include "vhdkit.h"

/* The sizes of vhdkit 0.1's structs (the first of each): what its
 * programs pass without saying so, and the least a caller may pass.
 */
#define VHD_OPEN_OPTIONS_SIZE_0_1 \
  (offsetof (struct vhd_open_options, max_metadata_bytes) + sizeof (uint64_t))
#define VHD_CHECK_RESULT_SIZE_0_1 \
  (offsetof (struct vhd_check_result, allocated_blocks) + sizeof (uint32_t))
/* 0.1's vhd_image_info ended with locators[8], padded to the struct's
 * alignment (which the fields added since have not changed).
 */
#define VHD_IMAGE_INFO_SIZE_0_1 \
  ((offsetof (struct vhd_image_info, locators) \
    + 8 * sizeof (struct vhd_locator_info) \
    + _Alignof (struct vhd_image_info) - 1) \
   & ~(_Alignof (struct vhd_image_info) - 1))

/* Copy the caller's options (src_size bytes, as its header knew the
 * struct) into *dst, this library's whole struct: fields past src_size
 * take their defaults (zero).  NULL src gives all defaults.  A struct
 * smaller than 0.1's, or larger with a tail that is not all zeros (fields
 * this library does not know, set by a newer program), is refused with
 * -EINVAL or -ENOTSUP and a message naming fn.
 */
int vhd_import_open_options (struct vhd_open_options *dst,
                             const struct vhd_open_options *src,
                             size_t src_size, const char *fn);

/* Copy the first dst_size bytes of a result this library filled (whole,
 * src_size bytes) to the caller's struct: a caller built against an older
 * header has a smaller one, and nothing past it may be written; a newer
 * one's larger struct gets zeros in the fields this library does not
 * know.
 */
void vhd_export_result (void *dst, size_t dst_size,
                        const void *src, size_t src_size);

#endif /* VHDKIT_ABI_H */
