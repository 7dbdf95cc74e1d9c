/* vhdkit: opening the files an image lives in (internal). */

#ifndef VHDKIT_FILE_H
#define VHDKIT_FILE_H

#include <stddef.h>

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

#endif /* VHDKIT_FILE_H */
