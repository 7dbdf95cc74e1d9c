/* vhdkit: making what an image holds safe to print (internal; the
 * public vhd_escape_text is in vhdkit.h).
 */

#ifndef VHDKIT_TEXT_H
#define VHDKIT_TEXT_H

#include <stddef.h>
#include <stdint.h>

/* Render n bytes read from disk for an error message: printable ASCII as
 * is, anything else as \xNN, so that a hostile signature cannot put
 * control characters into a message.  Returns out.
 */
const char *vhd_printable_bytes (const uint8_t *p, size_t n, char *out,
                                 size_t out_size);

#endif /* VHDKIT_TEXT_H */
