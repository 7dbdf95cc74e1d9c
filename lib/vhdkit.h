/* vhdkit: Microsoft VHD images on Linux.
 *
 * The one public header of libvhdkit.  Every function returns 0 (or a
 * non-negative count) on success and a negative errno on failure; after a
 * failure vhd_last_error() returns a message, local to the calling thread,
 * that names the file and the field or rule that failed.
 *
 * vhd_create_virtual_disk() mirrors Win32 CreateVirtualDisk: the same
 * parameters (in C types that fit Linux), the same validation rules and the
 * same choice of disk type.  Names follow the Windows ones so that a reader
 * of the Windows documentation finds their way:
 *   VIRTUAL_STORAGE_TYPE           -> struct vhd_storage_type
 *   VIRTUAL_DISK_ACCESS_MASK       -> VHD_ACCESS_*
 *   CREATE_VIRTUAL_DISK_FLAG       -> VHD_CREATE_FLAG_*
 *   CREATE_VIRTUAL_DISK_PARAMETERS -> struct vhd_create_parameters
 */

#ifndef VHDKIT_H
#define VHDKIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vhdkit-version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A GUID in the byte order in which VHD stores it (RFC 4122 order, as
 * printed: bytes[0] is the first two hex digits).
 */
struct vhd_guid {
  uint8_t bytes[16];
};

/* VIRTUAL_STORAGE_TYPE_VENDOR_MICROSOFT, EC984AEC-A0F9-47E9-901F-71415A66345B. */
#define VHD_VENDOR_MICROSOFT                                          \
  { { 0xec, 0x98, 0x4a, 0xec, 0xa0, 0xf9, 0x47, 0xe9,                 \
      0x90, 0x1f, 0x71, 0x41, 0x5a, 0x66, 0x34, 0x5b } }

/* VIRTUAL_STORAGE_TYPE_DEVICE_* */
enum {
  VHD_STORAGE_DEVICE_UNKNOWN = 0,
  VHD_STORAGE_DEVICE_ISO = 1,
  VHD_STORAGE_DEVICE_VHD = 2,
  VHD_STORAGE_DEVICE_VHDX = 3,
  VHD_STORAGE_DEVICE_VHDSET = 4,
};

struct vhd_storage_type {
  uint32_t device_id;           /* VHD_STORAGE_DEVICE_* */
  struct vhd_guid vendor_id;    /* VHD_VENDOR_MICROSOFT, or all zero */
};

/* VIRTUAL_DISK_ACCESS_MASK */
enum {
  VHD_ACCESS_NONE = 0,
  VHD_ACCESS_ATTACH_RO = 0x00010000,
  VHD_ACCESS_ATTACH_RW = 0x00020000,
  VHD_ACCESS_DETACH = 0x00040000,
  VHD_ACCESS_GET_INFO = 0x00080000,
  VHD_ACCESS_CREATE = 0x00100000,
  VHD_ACCESS_METAOPS = 0x00200000,
  VHD_ACCESS_READ = 0x000d0000,
  VHD_ACCESS_ALL = 0x003f0000,
  VHD_ACCESS_WRITABLE = 0x00320000,
};

/* CREATE_VIRTUAL_DISK_FLAG */
enum {
  VHD_CREATE_FLAG_NONE = 0x0,
  VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION = 0x1,
  VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK = 0x2,
  VHD_CREATE_FLAG_DO_NOT_COPY_METADATA_FROM_PARENT = 0x4,
  VHD_CREATE_FLAG_CREATE_BACKING_STORAGE = 0x8,
  VHD_CREATE_FLAG_USE_CHANGE_TRACKING_SOURCE_LIMIT = 0x10,
  VHD_CREATE_FLAG_PRESERVE_PARENT_CHANGE_TRACKING_STATE = 0x20,
  VHD_CREATE_FLAG_VHD_SET_USE_ORIGINAL_BACKING_STORAGE = 0x40,
  VHD_CREATE_FLAG_SPARSE_FILE = 0x80,
  VHD_CREATE_FLAG_PMEM_COMPATIBLE = 0x100,
  VHD_CREATE_FLAG_SUPPORT_COMPRESSED_VOLUMES = 0x200,
  VHD_CREATE_FLAG_SUPPORT_SPARSE_FILES_ANY_FS = 0x400,
};

/* CREATE_VIRTUAL_DISK_VERSION */
enum {
  VHD_CREATE_VERSION_UNSPECIFIED = 0,
  VHD_CREATE_VERSION_1 = 1,
  VHD_CREATE_VERSION_2 = 2,
  /* vhdkit's own, numbered apart from Windows' (whose 3 and 4 mean
   * something else): version 2 and the folders where the parent_path's
   * or source_path's parents may be opened.  Windows needs none (its
   * locators name its own paths); a chain copied to Linux often does.
   */
  VHD_CREATE_VERSION_VHDKIT_1 = 0x10001,
};

/* Block sizes that a VHD may be created with; 0 picks the default. */
#define VHD_BLOCK_SIZE_DEFAULT   0x200000u      /* 2 MiB */
#define VHD_BLOCK_SIZE_SMALL     0x80000u       /* 512 KiB */
#define VHD_MIN_DISK_SIZE        (UINT64_C(3) << 20)     /* 3 MiB */
#define VHD_MAX_DISK_SIZE        (UINT64_C(2040) << 30)  /* 2040 GiB */

/* CREATE_VIRTUAL_DISK_PARAMETERS.  Paths are Linux paths. */
struct vhd_create_parameters {
  uint32_t version;             /* VHD_CREATE_VERSION_1, _2 or _VHDKIT_1 */
  union {
    struct {
      struct vhd_guid unique_id;        /* all zero: a new random one */
      uint64_t maximum_size;            /* bytes; 0 only with a parent/source */
      uint32_t block_size_in_bytes;     /* 0, 512 KiB or 2 MiB */
      uint32_t sector_size_in_bytes;    /* 0 or 512 */
      const char *parent_path;          /* differencing disk when set */
      const char *source_path;          /* copy this disk in */
    } version1;
    struct {
      struct vhd_guid unique_id;
      uint64_t maximum_size;
      uint32_t block_size_in_bytes;
      uint32_t sector_size_in_bytes;
      uint32_t physical_sector_size_in_bytes; /* 0, 512 or 4096 */
      const char *parent_path;
      const char *source_path;
      uint32_t open_flags;              /* VHD_OPEN_* for the handle */
      struct vhd_storage_type parent_virtual_storage_type;
      struct vhd_storage_type source_virtual_storage_type;
      struct vhd_guid resiliency_guid;
    } version2;
    /* Version 2's fields, in version 2's order (so that version2 reads
     * them too: a common initial sequence), then vhdkit's.
     */
    struct {
      struct vhd_guid unique_id;
      uint64_t maximum_size;
      uint32_t block_size_in_bytes;
      uint32_t sector_size_in_bytes;
      uint32_t physical_sector_size_in_bytes;
      const char *parent_path;
      const char *source_path;
      uint32_t open_flags;
      struct vhd_storage_type parent_virtual_storage_type;
      struct vhd_storage_type source_virtual_storage_type;
      struct vhd_guid resiliency_guid;
      /* Folders (besides each image's own) where the parents of
       * parent_path, or of source_path, may be opened, as
       * vhd_open_options' parent_dirs: NULL-terminated, at most
       * VHD_MAX_PARENT_DIRS; NULL for none.
       */
      const char *const *parent_dirs;
    } vhdkit1;
  };
};

/* The optional security descriptor: who owns the new file and its mode.
 * NULL gives what the directory and the umask give (mode 0666 & ~umask).
 */
struct vhd_security_descriptor {
  bool set_mode;
  mode_t mode;
  bool set_owner;
  uid_t uid;
  gid_t gid;
};

/* The optional OVERLAPPED analogue: an asynchronous create.
 *
 * Initialise it as { .event_fd = efd } (internal must be NULL: zero the
 * rest, as Windows asks for OVERLAPPED) and pass it to
 * vhd_create_virtual_disk.  The call checks every argument and opens the
 * parent or source disk as it would without it, returning any error at
 * once; otherwise it returns -EINPROGRESS (ERROR_IO_PENDING) and the work
 * goes on in a background thread of the library.  Then:
 *
 *  - event_fd: an eventfd(2) (or any descriptor that takes an 8-byte
 *    write) that the caller made and owns; when the operation has ended,
 *    successfully or not, the library writes the value 1 to it, once.
 *    -1: no event (poll vhd_get_operation_progress, or wait).
 *  - vhd_get_operation_progress (GetVirtualDiskOperationProgress) says
 *    how far it has come, at any time until the operation is released.
 *  - vhd_cancel_operation (CancelIoEx) stops it: it then ends with
 *    -ECANCELED and leaves nothing under the path.
 *  - vhd_get_overlapped_result (GetOverlappedResult) returns the
 *    operation's result and releases what it holds; it must be called
 *    once for every call that returned -EINPROGRESS, cancelled or not,
 *    after which the overlapped struct may be reused or freed.
 *
 * Progress and cancel may be called from any thread, at any time until
 * the release; the call that releases must not run at the same time as
 * any other call on the same overlapped.
 *
 * Lifetime: the overlapped struct and the handle pointer given to
 * vhd_create_virtual_disk must stay valid until vhd_get_overlapped_result
 * has returned something other than -EINPROGRESS (the path, the
 * parameters and their strings need not: they are copied or used up
 * before the call returns).  On success the library stores the new
 * disk's handle into *handle before it signals event_fd; do not read
 * *handle before then (it stays NULL on failure).  The caller must not
 * close event_fd before the operation has ended.
 *
 *   struct vhd_overlapped ov = { .event_fd = eventfd (0, EFD_CLOEXEC) };
 *   struct vhd_operation_progress p;
 *   vhd_disk *disk;
 *   int r = vhd_create_virtual_disk (&type, path, 0, NULL, flags, 0,
 *                                    &params, &ov, &disk);
 *   if (r == -EINPROGRESS) {
 *     while (poll (&(struct pollfd) { ov.event_fd, POLLIN }, 1, 200) == 0)
 *       if (vhd_get_operation_progress (&ov, &p) == 0)
 *         show (p.current, p.completion);
 *     r = vhd_get_overlapped_result (&ov, true);
 *   }
 *   close (ov.event_fd);
 *   if (r == 0) ... use disk, then vhd_close (disk) ...
 */
struct vhd_operation;           /* the library's, opaque */

struct vhd_overlapped {
  int event_fd;                 /* in: an eventfd, or -1 */
  struct vhd_operation *internal; /* the library's: NULL when idle */
};

/* VIRTUAL_DISK_PROGRESS */
struct vhd_operation_progress {
  int status;                   /* -EINPROGRESS while it runs, then 0 or
                                 * -errno (-ECANCELED once cancelled) */
  uint64_t current;             /* bytes of the new disk done; rises */
  uint64_t completion;          /* bytes in all: the new disk's size */
};

/* Progress of the operation that overlapped started.  Returns 0 and fills
 * *progress, or -EINVAL when overlapped holds no operation (it was never
 * started, or was released).  Thread-safe: any thread may ask.
 */
int vhd_get_operation_progress (const struct vhd_overlapped *overlapped,
                                struct vhd_operation_progress *progress);

/* Ask the operation to stop.  Returns 0 when it will: it ends soon with
 * -ECANCELED, its partial disk removed (wait for it as usual).  Returns
 * -ENOENT when it is too late (the operation has ended, or is already
 * linking its finished disk into place: its result stands), and -EINVAL
 * when overlapped holds no operation.  Does not wait.
 */
int vhd_cancel_operation (struct vhd_overlapped *overlapped);

/* The result of the operation: with wait, block until it has ended; without,
 * return -EINPROGRESS at once if it is still running (nothing released).
 * Otherwise release the operation (overlapped->internal becomes NULL) and
 * return its status: 0 (*handle holds the new disk), or -errno with
 * vhd_last_error() set, in the calling thread, to the operation's message.
 * -EINVAL when overlapped holds no operation.
 */
int vhd_get_overlapped_result (struct vhd_overlapped *overlapped, bool wait);

/* OPEN_VIRTUAL_DISK_FLAG subset that applies to the handle that create
 * returns (version 2 open_flags) and to vhd_open().
 */
enum {
  VHD_OPEN_FLAG_NONE = 0x0,
  VHD_OPEN_FLAG_NO_PARENTS = 0x1,
  /* vhd_open() only, read-only only (as qemu-img's -U): take no lock on
   * the image and its parents, so that it opens while another process
   * (vhdkit or qemu) has it open for writing.  What is read may then be
   * inconsistent: at the caller's own risk.
   */
  VHD_OPEN_FLAG_FORCE_SHARE = 0x2,
};

/* Text for a terminal or a log: copy in to out (out_size > 0; always
 * NUL-terminated, truncated on a character boundary) with every control
 * character (C0, DEL, C1) and every byte that is not part of valid UTF-8
 * escaped as \n, \r, \t, \xHH or (C1) \u0080..\u009f.  Backslashes
 * are kept as they are, so that escaping twice changes nothing and
 * Windows paths stay readable.  Names and paths that come from an image
 * are untrusted: vhd_last_error() is already escaped this way, and a
 * caller printing vhd_get_image_info()'s strings as text should escape
 * them.  Returns out.  (4 * strlen (in) + 1 bytes always suffice.)
 */
char *vhd_escape_text (const char *in, char *out, size_t out_size);

/* An opened image (and, for a differencing disk, its chain). */
typedef struct vhd_disk vhd_disk;

/* Create a VHD with the CreateVirtualDisk contract.  On success returns 0
 * and an open read-write handle to the new disk in *handle (handle must
 * not be NULL, as on Windows; close it with vhd_close).  On failure
 * returns -errno, leaves no file at path, and vhd_last_error() says which
 * rule failed.  With overlapped, returns -EINPROGRESS once the arguments
 * are checked and the work runs in the background (see struct
 * vhd_overlapped); without, it blocks until the disk is complete.
 *
 * provider_specific_flags must be 0 (as on Windows for the VHD provider).
 *
 * source_path pre-populates the new disk (fixed or dynamic, never
 * differencing: a parent and a source together are -EINVAL) with the
 * data of a source disk: a raw disk in a regular file, a block device, or
 * any VHD that vhd_open opens (a differencing chain is read through, so
 * the new disk holds the chain's view; its parents are looked for as
 * vhd_open does, in the source's own folder and, with version
 * VHD_CREATE_VERSION_VHDKIT_1, in its parent_dirs).  A file or device with a valid
 * VHD footer is read as a VHD; version 2's source_virtual_storage_type
 * may say VHD to insist on one (UNKNOWN detects).  maximum_size 0 takes
 * the source's size; a larger size extends the disk with zeros; a smaller
 * one is -EINVAL.  As on Windows, the source's size must be a whole
 * number of 512-byte sectors (-EINVAL otherwise), and the resulting size
 * obeys the same 3 MiB to 2040 GiB rule as any new disk.  Ranges that the
 * source stores as holes, and blocks that are all zero, are not
 * allocated in a dynamic disk.  PREVENT_WRITES_TO_SOURCE_DISK makes the
 * call fail with -EBUSY if a writer (vhdkit or qemu) has the source open,
 * and locks writers out until the copy has ended.
 */
int vhd_create_virtual_disk (const struct vhd_storage_type *storage_type,
                             const char *path,
                             uint32_t access_mask,
                             const struct vhd_security_descriptor *security,
                             uint32_t flags,
                             uint32_t provider_specific_flags,
                             const struct vhd_create_parameters *parameters,
                             struct vhd_overlapped *overlapped,
                             vhd_disk **handle);

/* Limits of vhd_open_options, defined here once for the library and its
 * callers (the plugin's parent-dir= and max-chain-depth=, vhdtool's
 * --parent-dir).
 *
 * VHD_MAX_PARENT_DIRS: the most parent_dirs entries (besides the child's
 * own folder, always allowed); more is -EINVAL.
 * VHD_DEFAULT_MAX_CHAIN_DEPTH: images in a chain, the top one included,
 * when max_chain_depth is 0; VHD_MAX_CHAIN_DEPTH: the largest
 * max_chain_depth accepted (each level costs stack and an open file).
 * VHD_DEFAULT_MAX_METADATA_BYTES: max_metadata_bytes when it is 0.
 */
#define VHD_MAX_PARENT_DIRS             32
#define VHD_DEFAULT_MAX_CHAIN_DEPTH     32
#define VHD_MAX_CHAIN_DEPTH             256
#define VHD_DEFAULT_MAX_METADATA_BYTES  (UINT64_C (1) << 30)  /* 1 GiB */

/* How the public structs grow.  vhd_open_options, vhd_check_result and
 * vhd_image_info gain fields only at their end, and every call passes the
 * size of the struct as the caller's header knew it (the macros below do
 * that: a program calls vhd_open() and gets vhd_open_sized() with
 * sizeof (struct vhd_open_options) from the header it was built with).
 * The library reads only the bytes of an options struct that the
 * caller's size covers (the fields past it take their defaults), refuses
 * a larger struct whose unknown tail is not all zeros (a newer program
 * asking for something this library cannot do), and writes only the
 * bytes of a result struct that the caller's size covers.  The structs
 * that carry a version field instead (vhd_create_virtual_disk's) grow by
 * new versions, as Windows' own do.
 */

/* Options for vhd_open(); NULL means all defaults. */
struct vhd_open_options {
  bool readonly;                /* parents are always opened read-only */
  uint32_t flags;               /* VHD_OPEN_FLAG_* */
  /* Folders (besides the child's own) where parents may be opened; a
   * NULL-terminated array of at most VHD_MAX_PARENT_DIRS, or NULL for none.
   */
  const char *const *parent_dirs;
  unsigned max_chain_depth;     /* 0 means VHD_DEFAULT_MAX_CHAIN_DEPTH;
                                 * at most VHD_MAX_CHAIN_DEPTH */
  bool ignore_parent_id_mismatch;
  /* The most memory that one image's block table and per-block state may
   * take (each image of a chain is held to it); an image that needs more
   * is refused with -EFBIG before anything is allocated.  0 means the
   * default, VHD_DEFAULT_MAX_METADATA_BYTES (1 GiB): a 2040 GiB VHD in 512 KiB blocks (what Windows
   * creates) needs about 55 MiB, and a 64 TiB VHDX in 1 MiB blocks about
   * 600 MiB (512 MiB of BAT), while a 2040 GiB VHD in 4 KiB blocks would
   * need 7 GiB.  Sector bitmaps are cached apart, within a fixed 8 MiB
   * per image (plus those with unflushed changes).
   */
  uint64_t max_metadata_bytes;
};

int vhd_open_sized (const char *path, const struct vhd_open_options *options,
                    size_t options_size, vhd_disk **disk_out);
#define vhd_open(path, options, disk_out) \
  vhd_open_sized ((path), (options), sizeof (struct vhd_open_options), \
                  (disk_out))
/* The entry point of programs built against vhdkit 0.1 (its struct). */
int (vhd_open) (const char *path, const struct vhd_open_options *options,
                vhd_disk **disk_out);
void vhd_close (vhd_disk *disk);

/* Opening an image whose storage the caller reaches: every byte of I/O
 * goes through these callbacks (the nbdkit filter passes the plugin
 * below it).  Each returns 0 or a negative errno.  pread and pwrite move
 * exactly count bytes; get_size returns the storage's size in bytes or a
 * negative errno.  zero may be NULL (zeros are then written): it makes
 * the range read as zeros, with VHD_BACKEND_ZERO_MAY_TRIM allowed to give
 * the space back, and with VHD_BACKEND_ZERO_FAST returning -ENOTSUP
 * unless it is cheap.  pwrite and flush may be NULL for a read-only open.
 * Set size to sizeof (struct vhd_backend_callbacks): the struct grows at
 * its end, and the library reads only the fields that size covers.
 */
struct vhd_backend_callbacks {
  size_t size;
  int (*pread) (void *opaque, void *buf, size_t count, uint64_t offset);
  int (*pwrite) (void *opaque, const void *buf, size_t count,
                 uint64_t offset);
  int (*flush) (void *opaque);
  int (*zero) (void *opaque, size_t count, uint64_t offset, unsigned flags);
  int64_t (*get_size) (void *opaque);
};
#define VHD_BACKEND_ZERO_MAY_TRIM 1
#define VHD_BACKEND_ZERO_FAST 2

/* Open the image that the callbacks reach, as vhd_open opens a path.
 * name stands for the path in messages.  The storage cannot grow: a
 * fixed image is fully writable, a dynamic or differencing one only in
 * the blocks it has already (a write that needs a new block fails with
 * -ENOSPC).  No lock is taken: keeping a second writer out is the
 * caller's.  A differencing image finds its parents only in
 * options->parent_dirs, the first folder standing in for the image's
 * own (the same confinement as vhd_open), and is refused when there are
 * none.  The callbacks and opaque must stay valid until vhd_close.
 */
int vhd_open_with_backend_sized (const struct vhd_backend_callbacks *cb,
                                 void *opaque, const char *name,
                                 const struct vhd_open_options *options,
                                 size_t options_size, vhd_disk **disk_out);
#define vhd_open_with_backend(cb, opaque, name, options, disk_out) \
  vhd_open_with_backend_sized ((cb), (opaque), (name), (options), \
                               sizeof (struct vhd_open_options), (disk_out))

/* The disk's virtual size in bytes (the footer's current size). */
uint64_t vhd_get_size (const vhd_disk *disk);

/* Reads and writes: count bytes at offset, any alignment (sub-sector
 * writes are read-modify-write); thread-safe, many callers at once.  A
 * range past the disk's size is -EINVAL.  Writes are not durable until
 * vhd_flush() (or VHD_IO_FUA) returns, as NBD's contract says.
 */
enum {
  VHD_IO_FUA = 0x1,             /* write, trim, zero: flush before return */
  VHD_IO_MAY_TRIM = 0x2,        /* zero: may deallocate (punch) */
  VHD_IO_FAST_ZERO = 0x4,       /* zero: fail with -ENOTSUP unless cheap */
};
int vhd_pread (vhd_disk *disk, void *buf, size_t count, uint64_t offset);
int vhd_pwrite (vhd_disk *disk, const void *buf, size_t count,
                uint64_t offset, uint32_t flags);
int vhd_flush (vhd_disk *disk);
/* Trim: advisory.  On a dynamic disk the whole sectors inside the range
 * read back as zeros afterwards (their bits are cleared and their space
 * punched; a dynamic VHDX's whole blocks become UNMAPPED, without file
 * space); partial sectors at the edges keep their data, as NBD allows.
 * Fixed disks punch the range.  A VHD child ignores trims; a VHDX child
 * writes zeros over the whole sectors, which then read as zeros.
 */
int vhd_trim (vhd_disk *disk, uint64_t count, uint64_t offset,
              uint32_t flags);
/* Zero: the range reads back as zeros afterwards.  With VHD_IO_MAY_TRIM
 * a dynamic VHDX's whole blocks become ZERO, without file space.
 */
int vhd_zero (vhd_disk *disk, uint64_t count, uint64_t offset,
              uint32_t flags);

/* Extents: calls fn for consecutive ranges covering [offset, offset+count)
 * (it may report less than asked, never more than the disk), each with
 * flags VHD_EXTENT_HOLE|VHD_EXTENT_ZERO for what holds no data (an
 * unallocated block, clear bitmap bits) or 0 for data.  fn returns 0 to go
 * on, or a negative errno to stop and return that.
 */
enum {
  VHD_EXTENT_HOLE = 0x1,
  VHD_EXTENT_ZERO = 0x2,
};
typedef int (*vhd_extent_fn) (void *opaque, uint64_t offset, uint64_t length,
                              uint32_t flags);
int vhd_extents (vhd_disk *disk, uint64_t count, uint64_t offset,
                 vhd_extent_fn fn, void *opaque);

/* Which I/O backend this thread uses: "io_uring" or "pread" (the fallback,
 * also forced by the environment variable VHDKIT_IO=pread).
 */
const char *vhd_io_backend (void);

/* Check an image's structure (and its parent chain) without trusting
 * it; with VHD_CHECK_REPAIR, fix what can be fixed without losing data:
 * a lost trailing footer is restored from the copy at offset 0, and space
 * that no block owns at the end of the file is truncated.  fn is called
 * once per finding, except that a kind of problem that can repeat once per
 * BAT entry is shown for its first 100 only, followed by one finding "...
 * and N more problems of this kind (...) not shown" (the counts in
 * *result include them all, and not that closing finding).  Returns 0 when the check ran (the findings are in
 * *result), or -errno when it could not (the file cannot be opened, or is
 * in use by a writer when repairing; -ENOENT when the image is sound as
 * far as it was checked but its parent is not found: a missing parent is
 * no damage to the image, and nothing is repaired without it).
 */
enum {
  VHD_CHECK_REPAIR = 0x1,
};
enum {
  VHD_CHECK_CORRUPT = 1,        /* a structure is wrong */
  VHD_CHECK_LEAK = 2,           /* space that nothing uses */
  VHD_CHECK_REPAIRED = 3,       /* what --repair did */
  VHD_CHECK_RECOVERABLE = 4,    /* damage that loses nothing and that a
                                 * read-write open or --repair undoes (a
                                 * trailing footer a crash overwrote) */
};
struct vhd_check_result {
  uint32_t disk_type;
  unsigned corruptions;         /* left after any repair */
  unsigned leaks;               /* left after any repair */
  unsigned recoverable;         /* left after any repair */
  unsigned repaired;
  uint64_t leaked_bytes;
  uint32_t allocated_blocks;
};
typedef void (*vhd_check_fn) (void *opaque, int kind, const char *message);
int vhd_check_sized (const char *path,
                     const struct vhd_open_options *options,
                     size_t options_size, uint32_t flags,
                     vhd_check_fn fn, void *opaque,
                     struct vhd_check_result *result, size_t result_size);
#define vhd_check(path, options, flags, fn, opaque, result) \
  vhd_check_sized ((path), (options), sizeof (struct vhd_open_options), \
                   (flags), (fn), (opaque), (result), \
                   sizeof (struct vhd_check_result))
/* The entry point of programs built against vhdkit 0.1. */
int (vhd_check) (const char *path, const struct vhd_open_options *options,
                 uint32_t flags, vhd_check_fn fn, void *opaque,
                 struct vhd_check_result *result);

/* Image formats, as vhd_probe_format() tells them apart. */
enum {
  VHD_FORMAT_UNKNOWN = 0,       /* not an image that vhdkit knows */
  VHD_FORMAT_VHD = 1,           /* "conectix" footer (at the end, or its
                                 * copy at offset 0) */
  VHD_FORMAT_VHDX = 2,          /* "vhdxfile" at offset 0 */
};

/* Which format the file at path holds, from its signatures alone: cheap
 * (it reads 8 bytes at up to four places, never a header or a table) and
 * safe on any path (it opens as vhd_open does, so a FIFO or a device
 * cannot block it, and only regular files and block devices are read).
 * It says what a file claims to be, not that it is sound: vhd_open still
 * checks everything.  flags must be 0.  Returns VHD_FORMAT_*, 0 when the
 * file is no image that vhdkit knows (empty, short, raw...), or -errno
 * with vhd_last_error() set (-EINVAL for a directory, a FIFO, a socket or
 * a character device, naming what it is).
 */
int vhd_probe_format (const char *path, unsigned flags);

/* Footer disk types. */
enum {
  VHD_TYPE_FIXED = 2,
  VHD_TYPE_DYNAMIC = 3,
  VHD_TYPE_DIFFERENCING = 4,
};

/* What `vhdtool info` shows of one image. */
struct vhd_image_info {
  const char *path;             /* as opened; valid while the disk is open */
  uint32_t disk_type;           /* VHD_TYPE_* */
  uint64_t current_size;
  uint64_t original_size;
  uint64_t file_size;
  uint16_t cylinders;
  uint8_t heads;
  uint8_t sectors_per_track;
  char creator_application[5];  /* NUL-terminated, as stored (may hold NULs) */
  uint32_t creator_version;
  uint32_t creator_host_os;
  uint32_t timestamp;           /* seconds since 2000-01-01 00:00:00 UTC */
  struct vhd_guid unique_id;
  bool saved_state;
  bool footer_from_copy;        /* the trailing footer was bad; used offset 0 */
  bool readonly;
  /* Dynamic and differencing only: */
  uint32_t block_size;
  uint32_t max_table_entries;
  uint32_t allocated_blocks;
  uint64_t bat_offset;
  /* Differencing only: */
  struct vhd_guid parent_unique_id;
  uint32_t parent_timestamp;
  char parent_name[1024];       /* the header's parent name, UTF-8 */
  char parent_found_via[64];    /* how the opened parent was found, e.g.
                                 * "W2ru locator"; "" if not opened */
  unsigned n_locators;
  struct vhd_locator_info {
    char platform_code[5];      /* "W2ku", "W2ru", "MacX", ... */
    char path[1024];            /* decoded payload, UTF-8; "" if undecodable */
  } locators[8];

  /* vhdkit 0.2 (fields added at the end: a 0.1 program's smaller struct
   * stops before them).
   */
  uint32_t format;              /* VHD_FORMAT_VHD or VHD_FORMAT_VHDX */
  uint32_t logical_sector_size; /* bytes: 512 (every VHD) or 4096 */
  uint32_t physical_sector_size; /* bytes: 512 or 4096 */
  /* VHDX only (all zero for a VHD): */
  struct vhd_vhdx_info {
    uint64_t header_sequence;   /* the current header's SequenceNumber */
    int current_header;         /* 1 or 2: which header is current */
    struct vhd_guid file_write_guid;
    struct vhd_guid data_write_guid;
    struct vhd_guid log_guid;   /* all zero: the log is empty */
    uint64_t log_offset;        /* bytes */
    uint32_t log_length;        /* bytes */
    bool log_replayed;          /* an active log was found at open and
                                 * replayed (into the file when opened
                                 * read-write, else in memory only) */
    uint32_t log_entries_replayed;
    uint64_t bat_offset, metadata_offset;       /* regions, bytes */
    uint32_t bat_length, metadata_length;
    uint32_t chunk_ratio;       /* payload blocks per sector bitmap block */
    uint64_t block_states[8];   /* payload blocks per BAT state (0
                                 * NOT_PRESENT, 1 UNDEFINED, 2 ZERO, 3
                                 * UNMAPPED, 6 FULLY_PRESENT, 7
                                 * PARTIALLY_PRESENT; 4 and 5 reserved) */
    char creator[769];          /* the file type identifier's creator,
                                 * UTF-8 (untrusted: escape to print) */
    /* Differencing VHDX (vhdkit 0.3): the chunks' sector bitmap blocks
     * present, and the parent locator's keys (UTF-8, untrusted: escape
     * to print; "" when a key is absent).
     */
    uint64_t sector_bitmap_blocks;
    struct vhd_guid parent_linkage;
    bool has_parent_linkage2;
    struct vhd_guid parent_linkage2;
    char relative_path[1024];
    char volume_path[1024];
    char absolute_win32_path[1024];
  } vhdx;
};

int vhd_get_image_info_sized (const vhd_disk *disk,
                              struct vhd_image_info *info, size_t info_size);
#define vhd_get_image_info(disk, info) \
  vhd_get_image_info_sized ((disk), (info), sizeof (struct vhd_image_info))
/* The entry point of programs built against vhdkit 0.1. */
int (vhd_get_image_info) (const vhd_disk *disk, struct vhd_image_info *info);

/* The parent of a differencing disk opened with its chain, else NULL. */
const vhd_disk *vhd_get_parent (const vhd_disk *disk);

/* Format a GUID as 8-4-4-4-12 lower-case hex into buf (37 bytes). */
void vhd_guid_to_string (const struct vhd_guid *guid, char buf[37]);

/* The message for the last failure in this thread ("" if none). */
const char *vhd_last_error (void);

/* The version of the library in use, "MAJOR.MINOR.MICRO" (static; the
 * headers' own is VHDKIT_VERSION_STRING).
 */
const char *vhd_get_version (void);

#ifdef __cplusplus
}
#endif

#endif /* VHDKIT_H */
