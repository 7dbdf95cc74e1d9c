/* vhdkit: find and open the parent of a differencing disk.
 *
 * The format's driver offers the places the parent may be, in order
 * (VHD: its locators, then the header's parent name: see
 * formats/vhd/locator.c); a path may also be looked for by its file name
 * in the child's folder and in each allowed folder.  Locators are untrusted: a candidate is opened only if,
 * after resolving "..", and symlinks, it lies inside an allowed folder
 * (the top image's folder and the operator's parent_dirs), and the open
 * itself is done beneath that folder's fd so that nothing can swap a
 * symlink in between.  Every place tried is named in the error.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "chain.h"
#include "cleanup.h"
#include "backend/backend.h"
#include "backend/file.h"
#include "image.h"

#define MAX_CANDIDATES 64
#define MAX_WAYS 8              /* more than a driver has descriptions */

struct candidate {
  char path[PATH_MAX];
  /* The distinct ways (locator descriptions) that led here, in the order
   * offered; ways[0] is the one reported when the parent opens.  Drivers
   * pass string literals, which outlive the search.
   */
  const char *ways[MAX_WAYS];
  size_t n_ways;
  char via[128];                /* the ways joined, for the error */
};

struct search {
  const struct vhd_disk *child;
  char child_dir[PATH_MAX];
  /* Allowed folders, resolved; [0] is the top image's folder. */
  char *allowed[VHD_MAX_PARENT_DIRS + 1];
  size_t n_allowed;
  struct candidate cand[MAX_CANDIDATES];
  size_t n_cand;
  /* Files already looked at: locators often name one file in several
   * spellings ("dir/./p.vhd", "dir/p.vhd"), and each is opened once.
   */
  struct { dev_t dev; ino_t ino; } seen[MAX_CANDIDATES];
  size_t n_seen;
  char tried[3072];                     /* the error's list of attempts */
};

static void
free_search (struct search *s)
{
  for (size_t i = 0; i < s->n_allowed; i++)
    free (s->allowed[i]);
  free (s);
}

static void
cleanup_search (struct search **s)
{
  if (*s)
    free_search (*s);
}

/* Append "; PATH (via): why" to the list of attempts, truncating safely. */
static void
note_attempt (struct search *s, const char *path, const char *via,
              const char *why)
{
  size_t len = strlen (s->tried);
  snprintf (s->tried + len, sizeof s->tried - len, "%s%s (%s): %s",
            len ? "; " : "", path, via, why);
}

/* A path is tried once, but every locator that named it is reported,
 * each once.  Compared whole, not by substring: "W2ku locator" is a
 * distinct way from "W2ku locator, by file name", and is not already
 * listed because the longer one is.
 */
static void
add_way (struct candidate *c, const char *via)
{
  size_t len = strlen (c->via);

  for (size_t w = 0; w < c->n_ways; w++)
    if (strcmp (c->ways[w], via) == 0)
      return;
  if (c->n_ways == MAX_WAYS)
    return;
  c->ways[c->n_ways++] = via;
  snprintf (c->via + len, sizeof c->via - len, "%s%s",
            len ? " and " : "", via);
}

static void
add_candidate (struct search *s, const char *dir, const char *name,
               const char *via)
{
  char path[PATH_MAX];
  int n;

  if (*name == '\0')
    return;
  if (dir && name[0] != '/')
    n = snprintf (path, sizeof path, "%s/%s", dir, name);
  else
    n = snprintf (path, sizeof path, "%s", name);
  if (n < 0 || (size_t) n >= sizeof path) {
    note_attempt (s, "(a path)", via, "longer than PATH_MAX: not tried");
    return;
  }
  /* "dir/./p.vhd" is "dir/p.vhd": one spelling, one attempt, one name in
   * the error.  (".." is left for realpath and the confinement check.)
   */
  for (char *dot; (dot = strstr (path, "/./")) != NULL; )
    memmove (dot, dot + 2, strlen (dot + 2) + 1);
  n = (int) strlen (path);
  for (size_t i = 0; i < s->n_cand; i++) {
    if (strcmp (s->cand[i].path, path) == 0) {
      add_way (&s->cand[i], via);
      return;
    }
  }
  if (s->n_cand == MAX_CANDIDATES)
    return;
  memcpy (s->cand[s->n_cand].path, path, (size_t) n + 1);
  s->cand[s->n_cand].n_ways = 0;
  s->cand[s->n_cand].via[0] = '\0';
  add_way (&s->cand[s->n_cand], via);
  s->n_cand++;
}

static const char *
base_name (const char *p)
{
  const char *slash = strrchr (p, '/');
  return slash ? slash + 1 : p;
}

/* Add a path by its file name in the child's folder and each allowed one. */
static void
add_by_file_name (struct search *s, const char *p, const char *via)
{
  const char *name = base_name (p);

  if (strcmp (name, ".") == 0 || strcmp (name, "..") == 0)
    return;
  add_candidate (s, s->child_dir, name, via);
  for (size_t i = 0; i < s->n_allowed; i++)
    add_candidate (s, s->allowed[i], name, via);
}

/* The driver's offers (struct vhd_parent_sink). */
static void
offer_path (void *opaque, const char *path, const char *via)
{
  struct search *s = opaque;
  add_candidate (s, s->child_dir, path, via);
}

static void
offer_file_name (void *opaque, const char *path, const char *via)
{
  add_by_file_name (opaque, path, via);
}

static void
offer_unreadable (void *opaque, const char *via, const char *why)
{
  note_attempt (opaque, "(locator)", via, why);
}

static int
set_up_search (struct search *s, const struct vhd_chain_context *ctx)
{
  char tmp[PATH_MAX];
  const char *const *dirs = ctx->options->parent_dirs;

  if (vhd_backend_file_fd (s->child->be) < 0 && ctx->top_dir == NULL) {
    /* The image asked for lives behind callbacks: it has no folder of
     * its own, so the first parent folder stands in for it.
     */
    if (dirs == NULL || *dirs == NULL)
      return vhd_error (ENOENT, "%s: a differencing image opened through"
                        " a backend finds its parent only in the parent"
                        " folders given (parent_dirs, parent-dir=), and"
                        " none were given", s->child->path);
    if (realpath (*dirs, s->child_dir) == NULL)
      return vhd_error (errno, "parent folder %s: %m", *dirs);
  }
  else {
    if (snprintf (tmp, sizeof tmp, "%s", s->child->path) >= (int) sizeof tmp)
      return vhd_error (ENAMETOOLONG, "%s: path too long", s->child->path);
    if (realpath (dirname (tmp), s->child_dir) == NULL)
      return vhd_error (errno, "%s: resolving its folder: %m",
                        s->child->path);
  }

  s->allowed[s->n_allowed++] = strdup (ctx->top_dir ? ctx->top_dir
                                                    : s->child_dir);
  for (; dirs && *dirs; dirs++) {
    if (s->n_allowed == sizeof s->allowed / sizeof s->allowed[0])
      return vhd_error (EINVAL, "too many parent folders (at most %d,"
                        " VHD_MAX_PARENT_DIRS)", VHD_MAX_PARENT_DIRS);
    s->allowed[s->n_allowed] = realpath (*dirs, NULL);
    if (s->allowed[s->n_allowed] == NULL)
      return vhd_error (errno, "parent folder %s: %m", *dirs);
    s->n_allowed++;
  }
  for (size_t i = 0; i < s->n_allowed; i++)
    if (s->allowed[i] == NULL)
      return vhd_error (ENOMEM, "out of memory");
  return 0;
}

/* Which allowed folder holds the resolved path; its index, or -1. */
static int
allowed_folder_of (const struct search *s, const char *real)
{
  for (size_t i = 0; i < s->n_allowed; i++) {
    size_t n = strlen (s->allowed[i]);
    if (strncmp (real, s->allowed[i], n) == 0 &&
        (real[n] == '/' || (n == 1 && real[0] == '/')))
      return (int) i;
  }
  return -1;
}

/* Open real (already resolved) beneath the allowed folder, so that a
 * symlink swapped in after realpath cannot lead outside it; with
 * O_NONBLOCK, so that a FIFO or a device that a locator names cannot
 * block, and then only a regular file or a block device is taken.
 */
static int
open_beneath (const char *folder, const char *real, const char **why)
{
  struct open_how how = {
    .flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY,
    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
  };
  const char *rel = real + strlen (folder);
  CLEANUP_CLOSE int dirfd = -1;
  int fd;

  while (*rel == '/')
    rel++;
  dirfd = open (folder, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dirfd == -1) {
    *why = strerror (errno);
    return -1;
  }
  fd = (int) syscall (SYS_openat2, dirfd, rel, &how, sizeof how);
  if (fd == -1 && errno == ENOSYS)
    /* Kernels before 5.6: the realpath check is all we have; refuse any
     * symlink in the final component at least.
     */
    fd = openat (dirfd, rel,
                 O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  if (fd == -1) {
    struct stat st;
    /* A socket cannot be opened at all: say what it is. */
    if (errno == ENXIO && fstatat (dirfd, rel, &st, AT_SYMLINK_NOFOLLOW) == 0
        && S_ISSOCK (st.st_mode))
      *why = "refused: it is a socket, not an image (an image is a regular"
             " file or a block device)";
    else
      *why = errno == EXDEV ? "escapes the allowed folder"
                            : strerror (errno);
    return -1;
  }
  if (vhd_file_settle (fd, real) < 0) {
    *why = vhd_last_error ();
    close (fd);
    return -1;
  }
  return fd;
}

static bool
in_chain (const struct vhd_chain_link *link, const struct stat *st)
{
  for (; link; link = link->next)
    if (link->dev == st->st_dev && link->ino == st->st_ino)
      return true;
  return false;
}

static bool
seen_before (struct search *s, const struct stat *st)
{
  for (size_t i = 0; i < s->n_seen; i++)
    if (s->seen[i].dev == st->st_dev && s->seen[i].ino == st->st_ino)
      return true;
  if (s->n_seen < MAX_CANDIDATES) {
    s->seen[s->n_seen].dev = st->st_dev;
    s->seen[s->n_seen].ino = st->st_ino;
    s->n_seen++;
  }
  return false;
}

/* Try one candidate: 0 when it is the parent (child->parent is set), 1
 * to try the next one, or -errno when it is the parent but its own chain
 * failed: that error (which names what is missing further down) is the
 * answer, and no other spelling of the same file is worth a try.
 */
static int
try_candidate (struct search *s, const struct candidate *c,
               const struct vhd_chain_context *ctx,
               const struct vhd_chain_link *link)
{
  struct vhd_disk *child = (struct vhd_disk *) s->child;
  struct vhd_chain_context below = {
    .options = ctx->options, .depth = ctx->depth + 1, .children = link,
    .top_dir = s->allowed[0],
  };
  struct vhd_disk *parent;
  char real[PATH_MAX];
  const char *why = NULL;
  struct stat st;
  int folder, fd, r;
  char msg[1024];

  if (realpath (c->path, real) == NULL) {
    note_attempt (s, c->path, c->via, errno == ENOENT ? "not found"
                  : strerror (errno));
    return 1;
  }
  folder = allowed_folder_of (s, real);
  if (folder < 0) {
    note_attempt (s, c->path, c->via,
                  "refused: outside the allowed folders");
    return 1;
  }
  fd = open_beneath (s->allowed[folder], real, &why);
  if (fd == -1) {
    note_attempt (s, c->path, c->via, why);
    return 1;
  }
  if (fstat (fd, &st) == -1 || in_chain (link, &st)) {
    close (fd);
    note_attempt (s, c->path, c->via,
                  "refused: it is an image of this chain (a locator loop)");
    return 1;
  }
  if (seen_before (s, &st)) {
    close (fd);
    return 1;
  }

  /* The image alone first: its identity decides whether its chain is
   * worth resolving.
   */
  if (vhd_open_fd (fd, real, true, VHD_OPEN_FLAG_NO_PARENTS, &below,
                   &parent) < 0) {
    note_attempt (s, c->path, c->via, vhd_last_error ());
    return 1;
  }
  if (!child->ops->is_parent (child, parent,
                              ctx->options->ignore_parent_id_mismatch,
                              msg, sizeof msg)) {
    note_attempt (s, c->path, c->via, msg);
    vhd_close (parent);
    return 1;
  }
  if (parent->layout == VHD_LAYOUT_DIFFERENCING &&
      (r = vhd_chain_open_parent (parent, &below)) < 0) {
    vhd_close (parent);
    return r;
  }

  child->parent = parent;
  snprintf (child->parent_found_via, sizeof child->parent_found_via, "%s",
            c->ways[0]);
  return 0;
}

int
vhd_chain_open_parent (struct vhd_disk *child,
                       const struct vhd_chain_context *ctx)
{
  __attribute__ ((cleanup (cleanup_search))) struct search *s = NULL;
  unsigned max_depth = ctx->options->max_chain_depth
                       ? ctx->options->max_chain_depth
                       : VHD_DEFAULT_MAX_CHAIN_DEPTH;
  struct vhd_chain_link link;
  char parent[1100];
  struct stat st;
  int r;

  if (max_depth > VHD_MAX_CHAIN_DEPTH)
    return vhd_error (EINVAL, "%s: max_chain_depth %u is above the limit of"
                      " %d images (each level of a chain costs stack and an"
                      " open file)", child->path, max_depth, VHD_MAX_CHAIN_DEPTH);
  /* The child is image depth + 1 of the chain; its parent would be the
   * next one.
   */
  if (ctx->depth + 2 > max_depth)
    return vhd_error (ELOOP, "%s: the parent chain is deeper than %u images"
                      " (the limit; raise max_chain_depth)", child->path,
                      max_depth);
  /* A child on callback storage is no file that a locator could name
   * again: it has no identity to compare (inode 0 is no file's).
   */
  memset (&st, 0, sizeof st);
  if (vhd_backend_file_fd (child->be) >= 0 &&
      fstat (vhd_backend_file_fd (child->be), &st) == -1)
    return vhd_error (errno, "%s: fstat: %m", child->path);
  link = (struct vhd_chain_link) {
    .dev = st.st_dev, .ino = st.st_ino, .path = child->path,
    .next = ctx->children,
  };

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return vhd_error (ENOMEM, "%s: out of memory", child->path);
  s->child = child;
  r = set_up_search (s, ctx);
  if (r < 0)
    return r;

  child->ops->parent_candidates (child, &(struct vhd_parent_sink) {
                                   .opaque = s, .path = offer_path,
                                   .file_name = offer_file_name,
                                   .unreadable = offer_unreadable });

  for (size_t i = 0; i < s->n_cand; i++) {
    r = try_candidate (s, &s->cand[i], ctx, &link);
    if (r <= 0)
      return r;
  }

  child->ops->describe_parent (child, parent, sizeof parent);
  return vhd_error (ENOENT, "%s: parent %s could not be opened; tried: %s",
                    child->path, parent,
                    s->tried[0] ? s->tried : "no locator or parent name");
}
