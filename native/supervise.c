/*
 * tsnet-supervise: the container supervisor for containers without a terminal or open stdin (the
 * common case: `run -d`, `run --rm` of a batch command). One small process per container, started
 * detached by the runtime (runtime/container.ts) as `tsnet-supervise CONTAINER_DIR/spec.nul`:
 *
 *  1. unshare(CLONE_NEWPID), then fork: the child is PID 1 of a new PID namespace;
 *  2. the child joins the container's network namespace (setns), makes new mount, UTS and IPC
 *     namespaces (mount propagation private before any mount: nothing reaches the host), sets the
 *     host name, bind-mounts /etc/hosts, /etc/resolv.conf (and /dev for a rootfs), chroots into the
 *     rootfs, mounts its own /proc, enters the working directory, points stdout and stderr at the
 *     log files and execs the command with exactly the container's environment;
 *  3. the supervisor records each phase in state.json (temp file + rename, as sys/shim.ts does):
 *     starting -> running (the host PID of the container's PID 1 and its start time) -> exited
 *     (exit code, 128+n for signal n), or failed (why: a setup step's errno), then tells the daemon
 *     (`{"op":"exited"}` on its control socket), so the container's network is released at once.
 *
 * Why C: the Node supervisor (sys/shim.ts, still used for -i/-t, which need a pty and the attach
 * socket) costs a Node start (~50 ms, far more on a loaded machine) and ~45 MB of memory per
 * container, plus five helper processes (unshare, two nsenter, env, unshare) per start; this one
 * costs one fork and ~1 MB. A setup failure reaches the supervisor through a close-on-exec pipe:
 * nothing read means the exec happened.
 *
 * spec.nul is written by the runtime from the validated spec (runtime/shim-plan.ts nativeSpec): a
 * sequence of NUL-terminated strings, "tsnet-supervise 1", then KEY VALUE pairs (hostname, cwd,
 * rootfs, netns, state, stdout, stderr, notify, id; bind SOURCE TARGET; env K=V; arg A).
 *
 * Built by scripts/build.mjs: cc -O2 -Wall -o dist/tsnet-supervise native/supervise.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_ITEMS 4096

static const char *hostname, *cwd = "/", *rootfs, *netns, *statePath, *stdoutPath, *stderrPath, *notifyPath, *containerId;
static const char *bindSrc[256], *bindDst[256];
static int binds;
static char *envv[MAX_ITEMS + 1];
static int envc;
static char *argvv[MAX_ITEMS + 1];
static int argcc;

static long shimPid;
static char shimStart[32] = "0";

/* --- state.json ------------------------------------------------------------------------------ */

static void isoNow(char *out, size_t n) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char base[24];
  strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out, n, "%s.%03dZ", base, (int)(ts.tv_nsec / 1000000) % 1000);
}

/* A JSON string literal of s (or null). */
static void jsonString(FILE *f, const char *s) {
  if (s == NULL) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (*c == '"' || *c == '\\') fprintf(f, "\\%c", *c);
    else if (*c < 0x20) fprintf(f, "\\u%04x", *c);
    else fputc(*c, f);
  }
  fputc('"', f);
}

struct State {
  const char *phase;
  long pid; /* 0: null */
  const char *pidStart, *startedAt, *finishedAt, *error;
  int exitCode; /* -1: null */
};

static void writeState(const struct State *s) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.%ld.tmp", statePath, shimPid);
  FILE *f = fopen(tmp, "w");
  if (f == NULL) return;
  fchmod(fileno(f), 0600);
  fprintf(f, "{\"phase\":\"%s\",\"shimPid\":%ld,\"shimStartTime\":", s->phase, shimPid);
  jsonString(f, shimStart);
  fputs(",\"pid\":", f);
  if (s->pid > 0) fprintf(f, "%ld", s->pid);
  else fputs("null", f);
  fputs(",\"pidStartTime\":", f);
  jsonString(f, s->pidStart);
  fputs(",\"startedAt\":", f);
  jsonString(f, s->startedAt);
  fputs(",\"finishedAt\":", f);
  jsonString(f, s->finishedAt);
  fputs(",\"exitCode\":", f);
  if (s->exitCode >= 0) fprintf(f, "%d", s->exitCode);
  else fputs("null", f);
  fputs(",\"error\":", f);
  jsonString(f, s->error);
  fputs("}\n", f);
  if (fclose(f) == 0) rename(tmp, statePath);
  else unlink(tmp);
}

/* Field 22 of /proc/PID/stat (start time in clock ticks since boot), as sys/proc-stat.ts reads it. */
static int startTimeOf(long pid, char *out, size_t n) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%ld/stat", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t len = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (len <= 0) return -1;
  buf[len] = '\0';
  char *p = strrchr(buf, ')');
  if (p == NULL) return -1;
  p += 2; /* field 3 */
  for (int field = 3; field < 22 && p != NULL; field++) {
    p = strchr(p, ' ');
    if (p != NULL) p++;
  }
  if (p == NULL) return -1;
  size_t k = strcspn(p, " ");
  if (k == 0 || k >= n) return -1;
  memcpy(out, p, k);
  out[k] = '\0';
  return 0;
}

/* --- the spec -------------------------------------------------------------------------------- */

static void die(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (statePath != NULL) {
    char now[40];
    isoNow(now, sizeof now);
    struct State s = {.phase = "failed", .error = msg, .finishedAt = now, .exitCode = -1};
    writeState(&s);
  }
  fprintf(stderr, "tsnet-supervise: %s\n", msg);
  exit(1);
}

static char *readSpec(const char *path, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0 || st.st_size > (16 << 20)) {
    close(fd);
    return NULL;
  }
  char *buf = malloc((size_t)st.st_size + 1);
  size_t off = 0;
  while (buf != NULL && off < (size_t)st.st_size) {
    ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);
    if (n <= 0) break;
    off += (size_t)n;
  }
  close(fd);
  if (buf == NULL || off != (size_t)st.st_size) return NULL;
  buf[off] = '\0';
  *len = off;
  return buf;
}

static void parseSpec(char *buf, size_t len) {
  char *items[3 * MAX_ITEMS];
  int n = 0;
  for (size_t at = 0; at < len && n < 3 * MAX_ITEMS;) {
    items[n++] = buf + at;
    at += strlen(buf + at) + 1;
  }
  if (n == 0 || strcmp(items[0], "tsnet-supervise 1") != 0) die("spec: not a tsnet-supervise 1 spec");
  for (int i = 1; i < n;) {
    const char *k = items[i];
    if (i + 1 >= n) die("spec: %s without a value", k);
    char *v = items[i + 1];
    if (strcmp(k, "bind") == 0) {
      if (i + 2 >= n || binds >= 256) die("spec: bad bind");
      bindSrc[binds] = v;
      bindDst[binds++] = items[i + 2];
      i += 3;
      continue;
    }
    if (strcmp(k, "hostname") == 0) hostname = v;
    else if (strcmp(k, "cwd") == 0) cwd = v;
    else if (strcmp(k, "rootfs") == 0) rootfs = v;
    else if (strcmp(k, "netns") == 0) netns = v;
    else if (strcmp(k, "state") == 0) statePath = v;
    else if (strcmp(k, "stdout") == 0) stdoutPath = v;
    else if (strcmp(k, "stderr") == 0) stderrPath = v;
    else if (strcmp(k, "notify") == 0) notifyPath = v;
    else if (strcmp(k, "id") == 0) containerId = v;
    else if (strcmp(k, "env") == 0) {
      if (envc >= MAX_ITEMS) die("spec: too many variables");
      envv[envc++] = v;
    } else if (strcmp(k, "arg") == 0) {
      if (argcc >= MAX_ITEMS) die("spec: too many arguments");
      argvv[argcc++] = v;
    } else die("spec: unknown key %s", k);
    i += 2;
  }
  envv[envc] = NULL;
  argvv[argcc] = NULL;
  if (statePath == NULL || stdoutPath == NULL || stderrPath == NULL || hostname == NULL || argcc == 0) die("spec: incomplete");
}

/* --- inside the container -------------------------------------------------------------------- */

static int errPipe = -1;

/* A setup step failed: tell the supervisor ("S" + message) and end. */
static void setupFailed(const char *fmt, ...) {
  char msg[1100];
  msg[0] = 'S';
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg + 1, sizeof msg - 1, fmt, ap);
  va_end(ap);
  if (write(errPipe, msg, strlen(msg)) < 0) _exit(1);
  _exit(1);
}

/* The mount point `path` inside the rootfs, created if missing; symlinks refused (they would resolve on the host). */
static void ensureMountPoint(const char *path, int file) {
  char cur[4096];
  size_t rootLen = strlen(rootfs);
  while (rootLen > 1 && rootfs[rootLen - 1] == '/') rootLen--;
  if (strlen(path) >= sizeof cur) setupFailed("rootfs: path too long: %s", path);
  snprintf(cur, sizeof cur, "%.*s", (int)rootLen, rootfs);
  const char *rest = path + rootLen;
  while (*rest != '\0') {
    while (*rest == '/') rest++;
    if (*rest == '\0') break;
    size_t k = strcspn(rest, "/");
    size_t used = strlen(cur);
    snprintf(cur + used, sizeof cur - used, "/%.*s", (int)k, rest);
    rest += k;
    int last = *rest == '\0' || rest[strspn(rest, "/")] == '\0';
    struct stat st;
    if (lstat(cur, &st) == 0) {
      if (S_ISLNK(st.st_mode)) setupFailed("rootfs: %s is a symlink; cannot mount over it safely", cur);
      continue;
    }
    if (last && file) {
      int fd = open(cur, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
      if (fd < 0) setupFailed("rootfs: create %s: %s", cur, strerror(errno));
      close(fd);
    } else if (mkdir(cur, 0755) != 0 && errno != EEXIST) {
      setupFailed("rootfs: mkdir %s: %s", cur, strerror(errno));
    }
  }
}

/* Where a container path is seen from the host before the chroot. */
static void hostView(const char *target, char *out, size_t n) {
  if (rootfs == NULL) snprintf(out, n, "%s", target);
  else {
    size_t rootLen = strlen(rootfs);
    while (rootLen > 1 && rootfs[rootLen - 1] == '/') rootLen--;
    snprintf(out, n, "%.*s%s", (int)rootLen, rootfs, target);
  }
}

static void container(int netnsFd, int outFd, int errFd) {
  if (netnsFd >= 0 && setns(netnsFd, CLONE_NEWNET) != 0) setupFailed("setns %s: %s", netns, strerror(errno));
  if (unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC) != 0) setupFailed("unshare mount, uts, ipc: %s", strerror(errno));
  /* Before any mount: private, so nothing done here propagates to the host. */
  if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) setupFailed("make / private: %s", strerror(errno));
  if (sethostname(hostname, strlen(hostname)) != 0) setupFailed("sethostname %s: %s", hostname, strerror(errno));
  char view[4096];
  if (rootfs != NULL) {
    struct stat st;
    if (stat(rootfs, &st) != 0 || !S_ISDIR(st.st_mode)) setupFailed("rootfs %s is not a directory", rootfs);
    hostView("/proc", view, sizeof view);
    ensureMountPoint(view, 0);
    hostView("/dev", view, sizeof view);
    ensureMountPoint(view, 0);
    for (int i = 0; i < binds; i++) {
      hostView(bindDst[i], view, sizeof view);
      ensureMountPoint(view, 1);
    }
    hostView("/dev", view, sizeof view);
    if (mount("/dev", view, NULL, MS_BIND, NULL) != 0) setupFailed("mount /dev on %s: %s", view, strerror(errno));
  }
  for (int i = 0; i < binds; i++) {
    hostView(bindDst[i], view, sizeof view);
    if (mount(bindSrc[i], view, NULL, MS_BIND, NULL) != 0) setupFailed("mount %s on %s: %s", bindSrc[i], view, strerror(errno));
  }
  int nullFd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (nullFd < 0) setupFailed("open /dev/null: %s", strerror(errno));
  if (rootfs != NULL) {
    if (chroot(rootfs) != 0) setupFailed("chroot %s: %s", rootfs, strerror(errno));
    if (chdir("/") != 0) setupFailed("chdir /: %s", strerror(errno));
  }
  if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL) != 0) setupFailed("mount /proc: %s", strerror(errno));
  if (chdir(cwd) != 0) setupFailed("cannot change directory to %s: %s", cwd, strerror(errno));
  if (dup2(nullFd, 0) < 0 || dup2(outFd, 1) < 0 || dup2(errFd, 2) < 0) setupFailed("stdio: %s", strerror(errno));
  signal(SIGPIPE, SIG_DFL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  environ = envv; /* execvp searches the container's PATH */
  execvp(argvv[0], argvv);
  int e = errno;
  /* The command's own fault, as Docker reports it: 127 not found, 126 not executable. */
  dprintf(2, "tsnet: failed to execute %s: %s\n", argvv[0], strerror(e));
  char msg[16];
  snprintf(msg, sizeof msg, "X%d", e == ENOENT ? 127 : 126);
  if (write(errPipe, msg, strlen(msg)) < 0) _exit(e == ENOENT ? 127 : 126);
  _exit(e == ENOENT ? 127 : 126);
}

/* --- the supervisor -------------------------------------------------------------------------- */

/* Tells the daemon the container exited; best effort (no daemon: the next command observes it). */
static void notifyDaemon(void) {
  if (notifyPath == NULL || containerId == NULL) return;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(notifyPath) >= sizeof addr.sun_path) return;
  strcpy(addr.sun_path, notifyPath);
  int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (connect(s, (struct sockaddr *)&addr, sizeof addr) == 0) {
    char line[160];
    int n = snprintf(line, sizeof line, "{\"op\":\"exited\",\"container\":\"%s\"}\n", containerId);
    if (n > 0 && write(s, line, (size_t)n) == n) {
      char buf[512];
      while (read(s, buf, sizeof buf) > 0) {
      } /* the daemon has acted once it answers */
    }
  }
  close(s);
}

int main(int argc, char **argv) {
  if (argc != 2 || argv[1][0] != '/') {
    fprintf(stderr, "usage: tsnet-supervise /PATH/spec.nul\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  shimPid = (long)getpid();
  startTimeOf(shimPid, shimStart, sizeof shimStart);
  size_t len = 0;
  char *spec = readSpec(argv[1], &len);
  if (spec == NULL) {
    fprintf(stderr, "tsnet-supervise: cannot read %s: %s\n", argv[1], strerror(errno));
    return 1;
  }
  parseSpec(spec, len);
  struct State st = {.phase = "starting", .exitCode = -1};
  writeState(&st);

  int netnsFd = -1;
  if (netns != NULL && (netnsFd = open(netns, O_RDONLY | O_CLOEXEC)) < 0) die("open netns %s: %s", netns, strerror(errno));
  int outFd = open(stdoutPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int errFd = open(stderrPath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (outFd < 0 || errFd < 0) die("open log files: %s", strerror(errno));
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) die("pipe: %s", strerror(errno));
  if (unshare(CLONE_NEWPID) != 0) die("unshare pid: %s", strerror(errno));
  pid_t child = fork();
  if (child < 0) die("fork: %s", strerror(errno));
  if (child == 0) {
    close(p[0]);
    errPipe = p[1];
    container(netnsFd, outFd, errFd);
  }
  close(p[1]);
  if (netnsFd >= 0) close(netnsFd);
  close(outFd);
  close(errFd);

  char msg[1100];
  size_t got = 0;
  for (;;) {
    ssize_t n = read(p[0], msg + got, sizeof msg - 1 - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += (size_t)n;
    if (got >= sizeof msg - 1) break;
  }
  msg[got] = '\0';
  close(p[0]);

  char startedAt[40], pidStart[32] = "";
  isoNow(startedAt, sizeof startedAt);
  if (got == 0) {
    /* exec'd: the container runs */
    if (startTimeOf((long)child, pidStart, sizeof pidStart) == 0) {
      struct State r = {.phase = "running", .pid = (long)child, .pidStart = pidStart, .startedAt = startedAt, .exitCode = -1};
      writeState(&r);
    }
  }
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  char finishedAt[40];
  isoNow(finishedAt, sizeof finishedAt);
  if (got > 0 && msg[0] == 'S') {
    struct State f = {.phase = "failed", .error = msg + 1, .finishedAt = finishedAt, .exitCode = -1};
    writeState(&f);
  } else {
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 255;
    if (got > 0 && msg[0] == 'X') code = atoi(msg + 1);
    struct State e = {
      .phase = "exited", .pid = got == 0 && pidStart[0] != '\0' ? (long)child : 0, .pidStart = got == 0 && pidStart[0] != '\0' ? pidStart : NULL,
      .startedAt = startedAt, .finishedAt = finishedAt, .exitCode = code,
    };
    writeState(&e);
  }
  notifyDaemon();
  return 0;
}
