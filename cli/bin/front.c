/*
 * tsnet: the CLI's front end (the `tsnet` binary, dist/tsnet). Starting Node and loading the CLI
 * bundle is most of what a short command costs (`node -e 0` alone ~45 ms on an idle machine, the
 * bundle and the engine as much again), so when `tsnet daemon` runs, this small program hands the
 * command line to the daemon's CLI service (engine/cli-service.ts, RUN_DIR/cli.sock), which runs the
 * very same command code with its engine already built, and relays its output and exit code:
 *
 *   client -> daemon  frame REQUEST: "tsnet-cli 1" NUL, then KEY NUL VALUE NUL pairs (pid, pidns,
 *                     netns, mntns, cwd, env K=V repeated), then "argv" NUL and each argument NUL-ended
 *                     frame SIGNAL: the name of a signal this process got (SIGINT, SIGTERM, SIGHUP,
 *                     SIGQUIT, SIGUSR1, SIGUSR2), for a foreground `run` to forward to its container
 *   daemon -> client  frame STDOUT / STDERR: bytes; EXIT: the exit code in decimal; LOCAL: run it here
 *   frame: type (1 byte), three zero bytes, payload length (4 bytes, big endian), payload
 *
 * A `run`, `start` or `restart` that finds no daemon starts one first (startDaemonFor), as the
 * command would have anyway, and is then served by it.
 * When no daemon listens, or it answers LOCAL (a command that reads this terminal or stdin, another
 * state directory, another namespace), nothing has been done, and this program execs the Node CLI
 * beside it (tsnet.js), which behaves exactly as it does on its own. If the daemon goes away in the
 * middle of a command, that command may be half done: it is not run again here (exit 6, unavailable).
 *
 * The run directory is --run-dir (before the command), else TSNET_RUN_DIR, else /run/tsnet.
 * Built by scripts/build.mjs: cc -O2 -Wall -o dist/tsnet cli/bin/front.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define F_STDOUT 1
#define F_STDERR 2
#define F_REQUEST 16
#define F_SIGNAL 17
#define F_EXIT 18
#define F_LOCAL 19

extern char **environ;

static int sock = -1;
static sigset_t forwarded;

/* The Node CLI beside this binary: the standalone path (nothing was done by the daemon). */
static void runLocal(char **argv) {
  if (sock >= 0) close(sock);
  sigprocmask(SIG_UNBLOCK, &forwarded, NULL);
  char exe[PATH_MAX], path[PATH_MAX + 16];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) {
    fprintf(stderr, "Error: tsnet: cannot find its own directory (/proc/self/exe)\n");
    exit(1);
  }
  exe[n] = '\0';
  snprintf(path, sizeof path, "%s/tsnet.js", dirname(exe));
  execv(path, argv);
  fprintf(stderr, "Error: tsnet: cannot run %s: %s\n", path, strerror(errno));
  exit(1);
}

/* A growing buffer. */
struct Buf {
  char *p;
  size_t len, cap;
};

static void put(struct Buf *b, const void *data, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap == 0 ? 8192 : b->cap;
    while (cap < b->len + n) cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
      fprintf(stderr, "Error: tsnet: out of memory\n");
      exit(1);
    }
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
}

static void putz(struct Buf *b, const char *s) { put(b, s, strlen(s) + 1); }

static int writeAll(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

static int sendFrame(int type, const char *payload, size_t n) {
  unsigned char h[8] = {(unsigned char)type, 0, 0, 0, (unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8), (unsigned char)n};
  if (writeAll(sock, (const char *)h, 8) != 0) return -1;
  return writeAll(sock, payload, n);
}

/* The global options that take a value as the next argument (cli/main.ts GLOBAL). */
static int globalWithValue(const char *a) {
  static const char *const names[] = {"--state-dir", "--run-dir", "--firewall", "--log-level", "--cluster-store", "--cluster-advertise", "--cluster-store-opt"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(a, names[i]) == 0) return 1;
  return 0;
}

/* The index of the command (the first argument after the global options); argc if there is none. */
static int commandIndex(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (globalWithValue(argv[i])) {
      i++;
      continue;
    }
    if (argv[i][0] != '-') return i;
  }
  return argc;
}

/* --run-dir before the command, else TSNET_RUN_DIR, else /run/tsnet. */
static const char *runDirOf(int argc, char **argv) {
  int cmd = commandIndex(argc, argv);
  for (int i = 1; i < cmd; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--run-dir") == 0 && i + 1 < cmd) return argv[i + 1];
    if (strncmp(a, "--run-dir=", 10) == 0) return a + 10;
    if (globalWithValue(a)) i++;
  }
  const char *env = getenv("TSNET_RUN_DIR");
  return env != NULL && env[0] != '\0' ? env : "/run/tsnet";
}

static int connectTo(const struct sockaddr_un *addr) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (const struct sockaddr *)addr, sizeof *addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/*
 * A command that starts the daemon anyway (it connects a container: run, start, restart) finds
 * none answering: the daemon is started first (`tsnet.js GLOBALS daemon --start`, which returns once
 * it answers) and the command is then served by it. Without this, parallel first commands (a
 * script's 50 `tsnet run -d`) are each a Node CLI of their own, all starting at once on a host with
 * no daemon yet (measured: 50 in 20 s, and >60 s for one of them under CI load). One front end at a
 * time starts it (flock on RUN_DIR/daemon.start); the others wait there, then connect. Not with
 * cluster flags on the command line (the daemon takes those from the state directory, which that
 * command has not written yet) or --help. Returns the connected socket, or -1: run it locally.
 */
static int startDaemonFor(int argc, char **argv, const char *runDir, const struct sockaddr_un *addr) {
  int cmd = commandIndex(argc, argv);
  if (cmd >= argc) return -1;
  const char *c = argv[cmd];
  if (strcmp(c, "run") != 0 && strcmp(c, "start") != 0 && strcmp(c, "restart") != 0) return -1;
  for (int i = 1; i < argc; i++) {
    if (i < cmd && strncmp(argv[i], "--cluster-", 10) == 0) return -1;
    if (strcmp(argv[i], "--help") == 0) return -1;
    if (strcmp(argv[i], "--") == 0) break;
  }
  if (mkdir(runDir, 0755) != 0 && errno != EEXIST) return -1;
  char lockPath[PATH_MAX];
  if ((size_t)snprintf(lockPath, sizeof lockPath, "%s/daemon.start", runDir) >= sizeof lockPath) return -1;
  int lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0) return -1;
  /* At most 30 s for the front end ahead of this one. */
  int locked = 0;
  for (int i = 0; i < 3000 && !locked; i++) {
    if (flock(lock, LOCK_EX | LOCK_NB) == 0) locked = 1;
    else if (errno == EWOULDBLOCK || errno == EINTR) usleep(10000);
    else break;
  }
  int fd = locked ? connectTo(addr) : -1;
  if (locked && fd < 0) {
    char exe[PATH_MAX], js[PATH_MAX + 16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
      exe[n] = '\0';
      snprintf(js, sizeof js, "%s/tsnet.js", dirname(exe));
      char **args = calloc((size_t)cmd + 3, sizeof *args);
      pid_t pid = args == NULL ? -1 : fork();
      if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) dup2(null, 1); /* its "started daemon N" line is not this command's output */
        args[0] = js;
        for (int i = 1; i < cmd; i++) args[i] = argv[i];
        args[cmd] = "daemon";
        args[cmd + 1] = "--start";
        args[cmd + 2] = NULL;
        execv(js, args);
        _exit(127);
      }
      int status;
      if (pid > 0) while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
      free(args);
      fd = connectTo(addr);
    }
  }
  close(lock); /* releases the flock */
  return fd;
}

static void nsLink(struct Buf *b, const char *key, const char *kind) {
  char path[64], target[128];
  snprintf(path, sizeof path, "/proc/self/ns/%s", kind);
  ssize_t n = readlink(path, target, sizeof target - 1);
  target[n > 0 ? n : 0] = '\0';
  putz(b, key);
  putz(b, target);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&forwarded);
  const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaddset(&forwarded, sigs[i]);

  const char *runDir = runDirOf(argc, argv);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if ((size_t)snprintf(addr.sun_path, sizeof addr.sun_path, "%s/cli.sock", runDir) >= sizeof addr.sun_path) runLocal(argv);
  char cwd[PATH_MAX];
  if (getcwd(cwd, sizeof cwd) == NULL) runLocal(argv);
  sock = connectTo(&addr);
  if (sock < 0) sock = startDaemonFor(argc, argv, runDir, &addr);
  if (sock < 0) runLocal(argv);

  /* From here on, signals are forwarded instead of ending this process. */
  sigprocmask(SIG_BLOCK, &forwarded, NULL);
  int sfd = signalfd(-1, &forwarded, SFD_CLOEXEC);

  struct Buf req = {0};
  char pid[24];
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  putz(&req, "tsnet-cli 1");
  putz(&req, "pid");
  putz(&req, pid);
  nsLink(&req, "pidns", "pid");
  nsLink(&req, "netns", "net");
  nsLink(&req, "mntns", "mnt");
  putz(&req, "cwd");
  putz(&req, cwd);
  for (char **e = environ; *e != NULL; e++) {
    putz(&req, "env");
    putz(&req, *e);
  }
  putz(&req, "argv");
  for (int i = 1; i < argc; i++) putz(&req, argv[i]);
  if (sendFrame(F_REQUEST, req.p, req.len) != 0) runLocal(argv); /* nothing was read: safe to run here */
  free(req.p);

  struct Buf in = {0};
  int answered = 0;
  for (;;) {
    struct pollfd fds[2] = {{.fd = sock, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
    int nfds = sfd >= 0 ? 2 : 1;
    if (poll(fds, (nfds_t)nfds, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (nfds == 2 && (fds[1].revents & POLLIN) != 0) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
        const char *name = si.ssi_signo == SIGINT ? "SIGINT" : si.ssi_signo == SIGTERM ? "SIGTERM" : si.ssi_signo == SIGHUP ? "SIGHUP"
          : si.ssi_signo == SIGQUIT ? "SIGQUIT" : si.ssi_signo == SIGUSR1 ? "SIGUSR1" : "SIGUSR2";
        sendFrame(F_SIGNAL, name, strlen(name));
      }
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
    char chunk[65536];
    ssize_t n = read(sock, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    put(&in, chunk, (size_t)n);
    size_t off = 0;
    while (in.len - off >= 8) {
      const unsigned char *h = (const unsigned char *)in.p + off;
      size_t len = ((size_t)h[4] << 24) | ((size_t)h[5] << 16) | ((size_t)h[6] << 8) | (size_t)h[7];
      if (in.len - off < 8 + len) break;
      const char *payload = in.p + off + 8;
      switch (h[0]) {
        case F_STDOUT:
          answered = 1;
          writeAll(1, payload, len);
          break;
        case F_STDERR:
          answered = 1;
          writeAll(2, payload, len);
          break;
        case F_EXIT: {
          char code[16];
          snprintf(code, sizeof code, "%.*s", (int)(len < 15 ? len : 15), payload);
          return atoi(code) & 255;
        }
        case F_LOCAL:
          if (!answered) runLocal(argv);
          break;
        default:
          break;
      }
      off += 8 + len;
    }
    memmove(in.p, in.p + off, in.len - off);
    in.len -= off;
  }
  fprintf(stderr, "Error: tsnet: the daemon closed the connection before the command ended (it may be half done; see tsnet ps / tsnet network ls)\n");
  return 6;
}
