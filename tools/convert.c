/* vhdtool convert, and the create from a source that it shares with
 * `vhdtool create --source`: vhd_create_virtual_disk with an overlapped
 * argument, so that the main thread can draw a progress bar and turn a
 * signal into vhd_cancel_operation (which leaves no file behind).
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "vhdkit.h"
#include "vhdtool.h"

#define TICK_NS (200 * 1000 * 1000)     /* the bar is redrawn 5 times a second */

static volatile sig_atomic_t interrupted;

/* The first signal asks for a clean cancel; a second one, if the cancel
 * has not ended it yet (say a read that takes long to return), ends the
 * process at once, as the signal would have without vhdtool.
 */
static void
on_signal (int sig)
{
  if (interrupted) {
    signal (sig, SIG_DFL);
    raise (sig);
    return;
  }
  interrupted = sig;
}

static const int cancel_signals[] = { SIGINT, SIGTERM, SIGHUP };
#define N_CANCEL_SIGNALS (sizeof cancel_signals / sizeof cancel_signals[0])

/* The signals that cancel are caught from the start, without SA_RESTART,
 * so that a blocking call in the create's synchronous part (opening and
 * probing the source, where nothing that waits for ever may hold them
 * back) returns EINTR and the create fails.  Once the operation runs in
 * its worker thread (which blocks every signal), they are blocked in
 * this thread except inside ppoll, so that they interrupt it.
 */
struct signal_state {
  struct sigaction old_actions[N_CANCEL_SIGNALS];
  sigset_t old_mask;
  sigset_t block;               /* the cancel signals that were not blocked */
  sigset_t wait_mask;           /* for ppoll */
};

static void
catch_signals (struct signal_state *s)
{
  struct sigaction sa = { .sa_handler = on_signal };
  sigset_t block;

  sigemptyset (&sa.sa_mask);
  sigemptyset (&block);
  for (size_t i = 0; i < N_CANCEL_SIGNALS; i++) {
    sigaction (cancel_signals[i], &sa, &s->old_actions[i]);
    sigaddset (&block, cancel_signals[i]);
  }
  sigprocmask (SIG_SETMASK, NULL, &s->old_mask);
  /* Blocked inherited from the caller stays blocked. */
  for (size_t i = 0; i < N_CANCEL_SIGNALS; i++)
    if (sigismember (&s->old_mask, cancel_signals[i]))
      sigdelset (&block, cancel_signals[i]);
  s->block = block;
  s->wait_mask = s->old_mask;
}

/* The operation runs: from now on the signals reach this thread in
 * ppoll only.
 */
static void
block_signals (struct signal_state *s)
{
  sigprocmask (SIG_BLOCK, &s->block, NULL);
}

static void
restore_signals (struct signal_state *s)
{
  sigprocmask (SIG_SETMASK, &s->old_mask, NULL);
  for (size_t i = 0; i < N_CANCEL_SIGNALS; i++)
    sigaction (cancel_signals[i], &s->old_actions[i], NULL);
}

static double
seconds_now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (double) ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
format_duration (double seconds, char *out, size_t size)
{
  unsigned long s = seconds < 0 ? 0 : (unsigned long) (seconds + 0.5);

  if (s >= 3600)
    snprintf (out, size, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
  else
    snprintf (out, size, "%lu:%02lu", s / 60, s % 60);
}

static int
terminal_columns (void)
{
  struct winsize ws;

  if (ioctl (STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 40)
    return ws.ws_col > 200 ? 200 : ws.ws_col;
  return 80;
}

/* "[#######        ]  42.0%  812.3 MB/s  0:07 left" on one line of
 * stderr, redrawn in place.  The rate counts the disk's bytes, holes
 * included, per second since the start (MB = 10^6 bytes).
 */
static void
draw_bar (double start, const struct vhd_operation_progress *p, bool final)
{
  double elapsed = seconds_now () - start;
  double fraction = p->completion ? (double) p->current / p->completion : 1;
  double rate = elapsed > 0 ? p->current / elapsed : 0;
  char when[32], tail[96], bar[256];
  int width, filled;

  if (final)
    format_duration (elapsed, when, sizeof when);
  else if (rate > 0)
    format_duration ((p->completion - p->current) / rate, when, sizeof when);
  else
    snprintf (when, sizeof when, "-:--");
  snprintf (tail, sizeof tail, " %5.1f%%  %7.1f MB/s  %s %s",
            100 * fraction, rate / 1e6, when, final ? "total" : "left");

  width = terminal_columns () - (int) strlen (tail) - 3;
  if (width < 10)
    width = 10;
  filled = (int) (fraction * width);
  memset (bar, '#', (size_t) filled);
  memset (bar + filled, ' ', (size_t) (width - filled));
  bar[width] = '\0';
  fprintf (stderr, "\r[%s]%s", bar, tail);
  fflush (stderr);
}

/* Wait for the operation, cancelling it on a signal.  Returns its result. */
static int
wait_for_operation (struct vhd_overlapped *ov, int efd, bool show,
                    const sigset_t *wait_mask)
{
  struct vhd_operation_progress p = { .status = -EINPROGRESS };
  double start = seconds_now ();
  bool cancel_sent = false;
  int r;

  for (;;) {
    struct pollfd pfd = { .fd = efd, .events = POLLIN };
    struct timespec tick = { .tv_sec = 0, .tv_nsec = TICK_NS };
    int n = ppoll (&pfd, 1, &tick, wait_mask);

    if (interrupted && !cancel_sent) {
      /* -ENOENT: too late, the disk is complete; its result stands. */
      vhd_cancel_operation (ov);
      cancel_sent = true;
    }
    if (n > 0)
      break;
    if (show && !interrupted &&
        vhd_get_operation_progress (ov, &p) == 0)
      draw_bar (start, &p, false);
  }
  vhd_get_operation_progress (ov, &p);
  r = vhd_get_overlapped_result (ov, true);
  if (show) {
    if (r == 0)
      draw_bar (start, &p, true);
    fputc ('\n', stderr);
  }
  return r;
}

int
create_from_source (const char *verb, const char *path, uint32_t device_id,
                    uint32_t flags, const struct vhd_create_parameters *params,
                    bool progress)
{
  const struct vhd_storage_type storage = {
    .device_id = device_id, .vendor_id = VHD_VENDOR_MICROSOFT,
  };
  struct vhd_overlapped ov = { .event_fd = -1, .internal = NULL };
  struct signal_state signals;
  vhd_disk *disk = NULL;
  bool show = progress && isatty (STDOUT_FILENO) && isatty (STDERR_FILENO);
  int r;

  ov.event_fd = eventfd (0, EFD_CLOEXEC);
  if (ov.event_fd == -1) {
    fprintf (stderr, "%s: %s: eventfd: %s\n", program, verb,
             strerror (errno));
    return EXIT_FAILURE;
  }
  interrupted = 0;
  catch_signals (&signals);
  r = vhd_create_virtual_disk (&storage, path, VHD_ACCESS_NONE, NULL, flags,
                               0, params, &ov, &disk);
  if (r == -EINPROGRESS) {
    block_signals (&signals);
    r = wait_for_operation (&ov, ov.event_fd, show, &signals.wait_mask);
  }
  restore_signals (&signals);
  close (ov.event_fd);

  if (r == 0) {
    if (interrupted)
      fprintf (stderr, "%s: %s: interrupted too late to cancel: %s is"
               " complete\n", program, verb, path);
    vhd_close (disk);
    return EXIT_SUCCESS;
  }
  /* Cancelled while it ran, or stopped by the signal before it ran. */
  if (interrupted && r < 0) {
    fprintf (stderr, "%s: %s: interrupted by signal %d; %s was not"
             " created\n", program, verb, (int) interrupted, path);
    return EXIT_INTERRUPTED;
  }
  fprintf (stderr, "%s: %s: %s\n", program, verb, vhd_last_error ());
  if (r == -EINVAL && strstr (vhd_last_error (), "under the minimum"))
    fprintf (stderr, "%s: to convert a disk that small, give a size: "
             "vhdtool create --source %s 3M %s\n", program,
             params->version2.source_path, path);
  return EXIT_FAILURE;
}

int
cmd_convert (int argc, char **argv)
{
  enum { OPT_PARENT_DIR = 256 };
  static const struct option long_options[] = {
    LAYOUT_LONG_OPTIONS,
    { "parent-dir", required_argument, NULL, OPT_PARENT_DIR },
    { "progress", no_argument, NULL, 'p' },
    { "force-share", no_argument, NULL, 'U' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 }
  };
  struct vhd_create_parameters params = { .version = VHD_CREATE_VERSION_2 };
  const char *parent_dirs[VHD_MAX_PARENT_DIRS + 1] = { NULL };
  size_t n_dirs = 0;
  uint32_t flags = VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK;
  /* UNKNOWN: DST's extension picks the format (.vhdx, else VHD). */
  uint32_t device_id = VHD_STORAGE_DEVICE_UNKNOWN;
  bool progress = false;
  int c;

  while ((c = getopt_long (argc, argv, "O:pUh", long_options, NULL)) != -1) {
    switch (c) {
    case 'O':
      if (strcmp (optarg, "fixed") == 0)
        flags |= VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
      else if (strcmp (optarg, "dynamic") == 0)
        flags &= ~(uint32_t) VHD_CREATE_FLAG_FULL_PHYSICAL_ALLOCATION;
      else
        return usage_error ("-O: '%s' is not a VHD type (fixed or dynamic)",
                            optarg);
      break;
    case OPT_FORMAT: case OPT_BLOCK_SIZE: case OPT_SECTOR_SIZE:
    case OPT_PHYSICAL_SECTOR_SIZE:
      if (parse_layout_option (c, optarg, &device_id, &params) != 0)
        return EXIT_USAGE;
      break;
    case OPT_PARENT_DIR:
      if (!add_parent_dir (parent_dirs, &n_dirs, optarg))
        return EXIT_USAGE;
      break;
    case 'p': progress = true; break;
    case 'U': flags &= ~(uint32_t) VHD_CREATE_FLAG_PREVENT_WRITES_TO_SOURCE_DISK;
      break;
    case 'h': usage (stdout); return 0;
    default: return EXIT_USAGE;
    }
  }
  if (argc - optind != 2)
    return usage_error ("%s", "convert needs SRC and DST");
  params.version2.source_path = argv[optind];
  use_parent_dirs (&params, parent_dirs);
  return create_from_source ("convert", argv[optind + 1], device_id, flags,
                             &params, progress);
}
