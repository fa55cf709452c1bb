/*
 * tsnet-watchdog: keeps `tsnet daemon` running on a host without a service manager. The CLI starts
 * the daemon through it (engine/engine.ts startDaemon) as `tsnet-watchdog -- NODE TSNET_JS ... daemon`;
 * on a host with systemd, `tsnet daemon --install-unit` is the clean way and no watchdog is used.
 *
 * Design: the watchdog is the daemon's parent, so it learns of the daemon's death from waitpid at
 * once (no polling, no pid file races), and restarts it: DNS answers and the firewall watcher (which
 * repairs flushed rules at start) are back as soon as Node has started, well within 5 s. It holds no
 * state and does no I/O but fork, exec and wait, so it has nothing to crash on; at ~1 MB it is the
 * last process an OOM kill would choose, and it asks the kernel never to (oom_score_adj -1000; the
 * daemon it starts gets 0 back). Considered instead: each container's supervisor restarting the
 * daemon (N supervisors polling, and no daemon when no container runs), or the next CLI command
 * restarting it (not "with no command typed").
 *
 * The daemon's exit status says what to do: 0 (stopped: SIGTERM, `tsnet daemon --stop`, its run
 * directory removed) and 4 (another daemon already serves this state directory) end the watchdog;
 * any other end (killed by a signal, a crash) restarts it, after 100 ms, doubling up to 5 s while
 * it keeps dying within 10 s of its start. SIGTERM, SIGINT and SIGHUP to the watchdog are passed to
 * the daemon, which stops cleanly, and the watchdog ends with it.
 *
 * Built by scripts/build.mjs: cc -O2 -Wall -o dist/tsnet-watchdog native/watchdog.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static volatile pid_t daemonPid;

static void onStop(int sig) {
  stopping = 1;
  if (daemonPid > 0) kill(daemonPid, sig == SIGHUP ? SIGTERM : sig);
}

static void setOomScore(const char *v) {
  int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  if (write(fd, v, strlen(v)) < 0) {
    /* not allowed here: the default score stays */
  }
  close(fd);
}

static void logLine(const char *fmt, long a, long b) {
  char now[32];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(stderr, "{\"time\":\"%s\",\"level\":\"warn\",\"component\":\"watchdog\",\"msg\":\"", now);
  fprintf(stderr, fmt, a, b);
  fprintf(stderr, "\"}\n");
  fflush(stderr);
}

static double monotonic(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc < 3 || strcmp(argv[1], "--") != 0 || argv[2][0] != '/') {
    fprintf(stderr, "usage: tsnet-watchdog -- /PATH/TO/PROGRAM ARGS...\n");
    return 2;
  }
  setOomScore("-1000");
  struct sigaction sa = {.sa_handler = onStop};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  long delayMs = 100;
  for (;;) {
    double started = monotonic();
    pid_t pid = fork();
    if (pid < 0) {
      logLine("fork failed (errno %ld); retrying in %ld ms", errno, delayMs);
      usleep((useconds_t)delayMs * 1000);
      continue;
    }
    if (pid == 0) {
      setOomScore("0");
      struct sigaction dfl = {.sa_handler = SIG_DFL};
      sigemptyset(&dfl.sa_mask);
      sigaction(SIGTERM, &dfl, NULL);
      sigaction(SIGINT, &dfl, NULL);
      sigaction(SIGHUP, &dfl, NULL);
      signal(SIGPIPE, SIG_DFL);
      execv(argv[2], argv + 2);
      fprintf(stderr, "tsnet-watchdog: cannot run %s: %s\n", argv[2], strerror(errno));
      _exit(127);
    }
    daemonPid = pid;
    if (stopping) kill(pid, SIGTERM);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    daemonPid = 0;
    if (stopping) return 0;
    if (WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 4)) return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127) return 127; /* cannot be run: restarting will not help */
    double lived = monotonic() - started;
    delayMs = lived >= 10 ? 100 : delayMs;
    if (WIFSIGNALED(status)) logLine("the daemon was killed by signal %ld; restarting it in %ld ms", WTERMSIG(status), delayMs);
    else logLine("the daemon exited with %ld; restarting it in %ld ms", WEXITSTATUS(status), delayMs);
    usleep((useconds_t)delayMs * 1000);
    if (stopping) return 0;
    if (lived < 10) delayMs = delayMs * 2 > 5000 ? 5000 : delayMs * 2;
  }
}
