/*
 * The tsnet CNI plugins' front end (tsnet-bridge, tsnet-ipam, tsnet-portmap: one binary under
 * three names; the name picks the plugin). A CNI runtime starts a plugin process per operation, and
 * starting Node is most of a plugin's time, so when `tsnet daemon` runs, this small program hands
 * the request to the daemon's CNI service, which runs the very same plugin code with its helper
 * processes already running, and relays the answer:
 *
 *   request  (client -> daemon, then shutdown(SHUT_WR)):
 *            "tsnet-cni 1\n" PLUGIN "\n" { NAME "=" VALUE "\0" }* "\0" STDIN-BYTES
 *            (only the environment variables whose names start with CNI_ or TSNET_CNI_)
 *   reply    (daemon -> client, then close): EXIT-CODE "\n" STDOUT-BYTES
 *
 * If no daemon listens (the socket is missing or refuses the connection), nothing was sent, and
 * the request is run by the Node plugin itself: this program execs `tsnet-cni-node` (TSNET_CNI_NODE) from its own
 * directory with TSNET_CNI_PLUGIN naming the plugin, which behaves exactly as a standalone plugin.
 * If the daemon fails in the middle of a request, the operation may be half done, so it is not
 * retried here: the runtime gets CNI error 11 (try again later), and CNI operations are idempotent
 * for a retry.
 *
 * The socket path is TSNET_CNI_SOCKET, else the path compiled in (TSNET_CNI_DEFAULT_SOCKET, set by
 * `tsnet cni install` from its --run-dir).
 *
 * Built by `tsnet cni install` / scripts/build.mjs with the system C compiler:
 *   cc -O2 -o tsnet-cni-client client.c -DTSNET_CNI_DEFAULT_SOCKET='"/run/tsnet/cni.sock"'
 */
#define _GNU_SOURCE
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef TSNET_CNI_NODE
#define TSNET_CNI_NODE "tsnet-cni-node"
#endif
#ifndef TSNET_CNI_DEFAULT_SOCKET
#define TSNET_CNI_DEFAULT_SOCKET "/run/tsnet/cni.sock"
#endif

extern char **environ;

/* The cniVersion of error replies: the newest we speak (a runtime accepts any version's error). */
static void fail(int code, const char *msg, const char *raw) {
  char details[PATH_MAX + 128];
  size_t n = 0;
  for (const char *c = raw; *c != '\0' && n + 1 < sizeof details; c++) details[n++] = (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) ? '?' : *c;
  details[n] = '\0';
  printf("{\"cniVersion\":\"1.1.0\",\"code\":%d,\"msg\":\"%s\",\"details\":\"%s\"}\n", code, msg, details);
  fflush(stdout);
  exit(1);
}

/* Buffered writes to the socket. */
static char out[65536];
static size_t outLen;
static int sock = -1;

static void flushOut(void) {
  size_t off = 0;
  while (off < outLen) {
    ssize_t n = write(sock, out + off, outLen - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(11, "try again later", "tsnet daemon: lost the connection while sending the request");
    }
    off += (size_t)n;
  }
  outLen = 0;
}

static void put(const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    size_t k = sizeof out - outLen < n ? sizeof out - outLen : n;
    memcpy(out + outLen, c, k);
    outLen += k;
    c += k;
    n -= k;
    if (outLen == sizeof out) flushOut();
  }
}

/* The Node plugin, beside this binary: the standalone path. */
static void runStandalone(const char *self, const char *plugin) {
  char path[PATH_MAX];
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) fail(4, "invalid environment", "cannot find the plugin's own directory (/proc/self/exe)");
  exe[n] = '\0';
  snprintf(path, sizeof path, "%s/%s", dirname(exe), TSNET_CNI_NODE);
  setenv("TSNET_CNI_PLUGIN", plugin, 1);
  char *argv[] = {(char *)self, NULL};
  execv(path, argv);
  char details[PATH_MAX + 64];
  snprintf(details, sizeof details, "cannot run %s: %s", path, strerror(errno));
  fail(11, "try again later", details);
}

int main(int argc, char **argv) {
  (void)argc;
  signal(SIGPIPE, SIG_IGN);
  const char *self = argv[0] != NULL ? argv[0] : "tsnet-bridge";
  const char *base = strrchr(self, '/');
  base = base != NULL ? base + 1 : self;
  const char *plugin = strncmp(base, "tsnet-", 6) == 0 ? base + 6 : base;
  char kind[32];
  snprintf(kind, sizeof kind, "%s", plugin);
  char *dot = strchr(kind, '.');
  if (dot != NULL) *dot = '\0';

  const char *path = getenv("TSNET_CNI_SOCKET");
  if (path == NULL || path[0] == '\0') path = TSNET_CNI_DEFAULT_SOCKET;
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) runStandalone(self, kind);
  strcpy(addr.sun_path, path);
  sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
    if (sock >= 0) close(sock);
    runStandalone(self, kind);
  }

  put("tsnet-cni 1\n", 12);
  put(kind, strlen(kind));
  put("\n", 1);
  for (char **e = environ; *e != NULL; e++) {
    if (strncmp(*e, "CNI_", 4) == 0 || strncmp(*e, "TSNET_CNI_", 10) == 0) put(*e, strlen(*e) + 1);
  }
  put("", 1);
  char buf[65536];
  for (;;) {
    ssize_t n = read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    put(buf, (size_t)n);
  }
  flushOut();
  shutdown(sock, SHUT_WR);

  /* The reply: the exit code line, then stdout. */
  int code = -1;
  int haveCode = 0;
  char line[16];
  size_t lineLen = 0;
  for (;;) {
    ssize_t n = read(sock, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    size_t off = 0;
    while (!haveCode && off < (size_t)n) {
      char c = buf[off++];
      if (c == '\n') {
        line[lineLen] = '\0';
        char *end = NULL;
        long v = strtol(line, &end, 10);
        if (lineLen == 0 || *end != '\0' || v < 0 || v > 255) fail(11, "try again later", "tsnet daemon: malformed reply");
        code = (int)v;
        haveCode = 1;
      } else if (lineLen + 1 < sizeof line) {
        line[lineLen++] = c;
      } else {
        fail(11, "try again later", "tsnet daemon: malformed reply");
      }
    }
    for (size_t w = off; w < (size_t)n;) {
      ssize_t k = write(1, buf + w, (size_t)n - w);
      if (k < 0) {
        if (errno == EINTR) continue;
        return 1;
      }
      w += (size_t)k;
    }
  }
  if (!haveCode) fail(11, "try again later", "tsnet daemon: the connection ended before the reply (the operation may be half done; it is safe to retry)");
  return code;
}
