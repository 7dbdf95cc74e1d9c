/* vhdkit: opening the files an image lives in (internal). */

#ifndef VHDKIT_FILE_H
#define VHDKIT_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Open path (O_RDONLY or O_RDWR in flags) so that a FIFO or a device
 * cannot block the open, and accept only a regular file or a block
 * device.  Returns the fd (blocking again, close-on-exec), or -errno with
 * a message that names the file and what it is.
 */
int vhd_file_open (const char *path, int flags);

/* The second half of vhd_file_open, for an fd that the caller opened with
 * O_NONBLOCK (openat2 beneath a folder): check what it is and clear
 * O_NONBLOCK.  Returns 0 or -errno with a message; fd stays the caller's.
 */
int vhd_file_settle (int fd, const char *path);

/* Drop from the page cache what it holds of [offset, offset + length) of
 * fd (length 0: to the end).  Only clean pages go, so a writer calls it
 * after its sync.  A hint: failures are ignored.
 */
void vhd_file_drop_cache (int fd, uint64_t offset, uint64_t length);

/* Whether the page cache holds any page of [offset, offset + length) of
 * fd (length 0: to the end).  True when it cannot tell (a kernel before
 * Linux 6.5), so that a caller deciding what to drop leaves alone what
 * it cannot see.
 */
bool vhd_file_cached (int fd, uint64_t offset, uint64_t length);

#endif /* VHDKIT_FILE_H */
