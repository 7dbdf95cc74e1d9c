/* vhdkit: the public structs that grow at their end (abi.h). */

#include <config.h>

#include <errno.h>
#include <string.h>

#include "abi.h"
#include "error.h"

int
vhd_import_open_options (struct vhd_open_options *dst,
                         const struct vhd_open_options *src,
                         size_t src_size, const char *fn)
{
  const unsigned char *tail;
  size_t i;

  memset (dst, 0, sizeof *dst);
  if (src == NULL)
    return 0;
  if (src_size < VHD_OPEN_OPTIONS_SIZE_0_1)
    return vhd_error (EINVAL, "%s: the options struct is %zu bytes, less"
                      " than the %zu of the first vhd_open_options",
                      fn, src_size, (size_t) VHD_OPEN_OPTIONS_SIZE_0_1);
  if (src_size > sizeof *dst) {
    /* A newer program: fields it left at zero mean their defaults, which
     * is what this library does anyway; anything else it cannot honour.
     */
    tail = (const unsigned char *) src + sizeof *dst;
    for (i = 0; i < src_size - sizeof *dst; ++i)
      if (tail[i] != 0)
        return vhd_error (ENOTSUP, "%s: the options struct is %zu bytes and"
                          " sets a field past the %zu bytes that vhdkit %s"
                          " knows (a newer vhdkit is needed)",
                          fn, src_size, sizeof *dst, vhd_get_version ());
    src_size = sizeof *dst;
  }
  memcpy (dst, src, src_size);
  return 0;
}

void
vhd_export_result (void *dst, size_t dst_size,
                   const void *src, size_t src_size)
{
  memcpy (dst, src, dst_size < src_size ? dst_size : src_size);
  /* A newer program's fields that this library does not know: "not
   * filled", never what its stack held.
   */
  if (dst_size > src_size)
    memset ((unsigned char *) dst + src_size, 0, dst_size - src_size);
}
