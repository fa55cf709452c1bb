/*
 * dns-fast: the embedded resolver's native UDP fast path (node-api, no node-gyp).
 *
 * Build: gcc -O2 -shared -fPIC -I/usr/include/node -o dist/dns-fast.node native/dns-fast.c -lpthread
 *
 * It does not parse DNS. Per listener (one UDP socket that JS bound), a thread reads batches with
 * recvmmsg and looks each datagram up in a byte-exact reply cache:
 *   key   = client source address (family + address bytes, not the port) + the datagram after its id
 *   value = the reply bytes JS computed for exactly that key (only replies JS marked cacheable).
 * A hit is answered from here (id patched, sendmmsg). Anything else (a miss, which includes every
 * packet JS must judge: unknown clients, malformed packets, forwards) goes to JS through a
 * thread-safe function with a bounded queue (beyond it the datagram is dropped and counted); a
 * datagram shorter than a DNS header or longer than 4096 bytes is dropped and counted here. JS
 * sends its answer through reply(), which installs it into the cache when cacheable.
 *
 * clear() empties the cache under the same mutex the thread holds while it looks up, so once clear()
 * returns no reply of an older snapshot is served. stop() wakes the thread (eventfd), joins it and
 * aborts the thread-safe function; the socket itself belongs to JS (it closes it after stop()).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SLOT 4096             /* largest datagram handled; longer ones are dropped (MSG_TRUNC) */
#define KEY_MAX (1 + 16 + SLOT)
#define BUCKETS 8192          /* power of two */

typedef struct entry {
  struct entry *next;
  uint32_t hash;
  uint32_t klen;
  uint32_t rlen;
  uint8_t data[];             /* key bytes, then reply bytes */
} entry_t;

typedef struct miss {
  socklen_t salen;
  struct sockaddr_storage sa;
  uint32_t len;
  uint8_t data[];
} miss_t;

typedef struct {
  int fd;
  int efd;
  int running;                /* thread started and not yet joined */
  int stopped;                /* stop() called: never touch fd again */
  napi_env env;
  int hooked;                 /* an env cleanup hook is registered (see open()) */
  pthread_t thread;
  napi_threadsafe_function tsfn;
  /* the thread's batch buffers, allocated by open() so that a started thread cannot fail */
  uint8_t (*in)[SLOT], (*outbuf)[SLOT];
  struct sockaddr_storage *src;
  struct iovec *iov, *oiov;
  struct mmsghdr *msgs, *out;
  pthread_mutex_t mu;
  entry_t *buckets[BUCKETS];
  uint32_t entries, max_entries;
  uint64_t bytes, max_bytes;
  /* counters (relaxed atomics: written by the thread or JS, read by JS) */
  uint64_t hits, misses, queue_drops, ignored, send_errors, installed, clears;
} listener_t;

#define ADD(field, n) __atomic_fetch_add(&(field), (n), __ATOMIC_RELAXED)
#define GET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

static uint32_t fnv1a(const uint8_t *p, size_t n) {
  uint32_t h = 0x811c9dc5u;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x01000193u;
  }
  return h;
}

/* key = family byte + address bytes + datagram[2..]; returns its length, 0 if the family is unknown. */
static size_t make_key(uint8_t *key, const struct sockaddr_storage *sa, const uint8_t *dgram, size_t len) {
  size_t k;
  if (sa->ss_family == AF_INET) {
    key[0] = 4;
    memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    k = 5;
  } else if (sa->ss_family == AF_INET6) {
    key[0] = 6;
    memcpy(key + 1, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    k = 17;
  } else {
    return 0;
  }
  memcpy(key + k, dgram + 2, len - 2);
  return k + len - 2;
}

/* Caller holds mu. */
static entry_t *lookup(listener_t *l, const uint8_t *key, size_t klen, uint32_t h) {
  for (entry_t *e = l->buckets[h & (BUCKETS - 1)]; e != NULL; e = e->next) {
    if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0) return e;
  }
  return NULL;
}

/* Caller holds mu. */
static void clear_locked(listener_t *l) {
  for (size_t i = 0; i < BUCKETS; i++) {
    entry_t *e = l->buckets[i];
    while (e != NULL) {
      entry_t *n = e->next;
      free(e);
      e = n;
    }
    l->buckets[i] = NULL;
  }
  l->entries = 0;
  l->bytes = 0;
}

static void send_all(listener_t *l, struct mmsghdr *out, unsigned n) {
  unsigned done = 0;
  int retried = 0;
  while (done < n) {
    int r = sendmmsg(l->fd, out + done, n - done, MSG_DONTWAIT);
    if (r > 0) {
      done += (unsigned)r;
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !retried) {
      struct pollfd p = {.fd = l->fd, .events = POLLOUT};
      poll(&p, 1, 10);
      retried = 1;
      continue;
    }
    /* A failing datagram (EAGAIN twice, or an error for this destination): skip it. */
    ADD(l->send_errors, 1);
    done++;
  }
}

static int alloc_buffers(listener_t *l) {
  l->in = malloc((size_t)BATCH * SLOT);
  l->outbuf = malloc((size_t)BATCH * SLOT);
  l->src = calloc(BATCH, sizeof *l->src);
  l->iov = calloc(BATCH, sizeof *l->iov);
  l->oiov = calloc(BATCH, sizeof *l->oiov);
  l->msgs = calloc(BATCH, sizeof *l->msgs);
  l->out = calloc(BATCH, sizeof *l->out);
  return l->in && l->outbuf && l->src && l->iov && l->oiov && l->msgs && l->out;
}

static void free_buffers(listener_t *l) {
  free(l->in);
  free(l->outbuf);
  free(l->src);
  free(l->iov);
  free(l->oiov);
  free(l->msgs);
  free(l->out);
}

static void *serve(void *arg) {
  listener_t *l = arg;
  static __thread uint8_t key[KEY_MAX];
  uint8_t(*in)[SLOT] = l->in, (*outbuf)[SLOT] = l->outbuf;
  struct sockaddr_storage *src = l->src;
  struct iovec *iov = l->iov, *oiov = l->oiov;
  struct mmsghdr *msgs = l->msgs, *out = l->out;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL); /* signals stay with Node's threads */
  for (;;) {
    struct pollfd p[2] = {{.fd = l->fd, .events = POLLIN}, {.fd = l->efd, .events = POLLIN}};
    int pr = poll(p, 2, -1);
    if (pr < 0) {
      if (errno != EINTR) usleep(10000); /* ENOMEM: transient; never a silent dead listener */
      continue;
    }
    if (p[1].revents != 0) break;
    for (;;) {
      /* Under a flood this loop never returns to poll: stop() must still end it. */
      if (__atomic_load_n(&l->stopped, __ATOMIC_ACQUIRE)) return NULL;
      for (unsigned i = 0; i < BATCH; i++) {
        iov[i].iov_base = in[i];
        iov[i].iov_len = SLOT;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_name = &src[i];
        msgs[i].msg_hdr.msg_namelen = sizeof src[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
      }
      int n = recvmmsg(l->fd, msgs, BATCH, MSG_DONTWAIT, NULL);
      if (n <= 0) break; /* EAGAIN (drained) or an error: back to poll */
      unsigned nout = 0;
      int missed[BATCH];
      unsigned nmiss = 0;
      pthread_mutex_lock(&l->mu);
      for (int i = 0; i < n; i++) {
        size_t len = msgs[i].msg_len;
        if ((msgs[i].msg_hdr.msg_flags & MSG_TRUNC) || len < 12) {
          ADD(l->ignored, 1); /* too long for a slot, or shorter than a header: never answered */
          continue;
        }
        size_t klen = make_key(key, &src[i], in[i], len);
        entry_t *e = klen > 0 ? lookup(l, key, klen, fnv1a(key, klen)) : NULL;
        if (e == NULL) {
          missed[nmiss++] = i;
          continue;
        }
        memcpy(outbuf[nout], e->data + e->klen, e->rlen);
        outbuf[nout][0] = in[i][0];
        outbuf[nout][1] = in[i][1];
        oiov[nout].iov_base = outbuf[nout];
        oiov[nout].iov_len = e->rlen;
        memset(&out[nout].msg_hdr, 0, sizeof out[nout].msg_hdr);
        out[nout].msg_hdr.msg_name = &src[i];
        out[nout].msg_hdr.msg_namelen = msgs[i].msg_hdr.msg_namelen;
        out[nout].msg_hdr.msg_iov = &oiov[nout];
        out[nout].msg_hdr.msg_iovlen = 1;
        nout++;
      }
      pthread_mutex_unlock(&l->mu);
      if (nout > 0) {
        ADD(l->hits, nout);
        send_all(l, out, nout);
      }
      for (unsigned j = 0; j < nmiss; j++) {
        int i = missed[j];
        size_t len = msgs[i].msg_len;
        miss_t *m = malloc(sizeof *m + len);
        if (m == NULL) {
          ADD(l->queue_drops, 1);
          continue;
        }
        m->salen = msgs[i].msg_hdr.msg_namelen;
        memcpy(&m->sa, &src[i], sizeof m->sa);
        m->len = (uint32_t)len;
        memcpy(m->data, in[i], len);
        ADD(l->misses, 1);
        if (napi_call_threadsafe_function(l->tsfn, m, napi_tsfn_nonblocking) != napi_ok) {
          free(m);
          ADD(l->queue_drops, 1);
        }
      }
      if (n < BATCH) break;
    }
  }
  return NULL;
}

/* Runs on the JS thread: hand one missed datagram to JS as (query, address, port, sockaddr). */
static void call_js(napi_env env, napi_value cb, void *ctx, void *data) {
  (void)ctx;
  miss_t *m = data;
  if (env == NULL || cb == NULL) {
    free(m);
    return;
  }
  char addr[INET6_ADDRSTRLEN] = "";
  unsigned port = 0;
  if (m->sa.ss_family == AF_INET) {
    const struct sockaddr_in *s = (const struct sockaddr_in *)&m->sa;
    inet_ntop(AF_INET, &s->sin_addr, addr, sizeof addr);
    port = ntohs(s->sin_port);
  } else if (m->sa.ss_family == AF_INET6) {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&m->sa;
    inet_ntop(AF_INET6, &s->sin6_addr, addr, sizeof addr);
    port = ntohs(s->sin6_port);
  }
  napi_value argv[4], undef;
  void *unused;
  if (napi_create_buffer_copy(env, m->len, m->data, &unused, &argv[0]) == napi_ok &&
      napi_create_string_utf8(env, addr, NAPI_AUTO_LENGTH, &argv[1]) == napi_ok &&
      napi_create_uint32(env, port, &argv[2]) == napi_ok &&
      napi_create_buffer_copy(env, m->salen, &m->sa, &unused, &argv[3]) == napi_ok &&
      napi_get_undefined(env, &undef) == napi_ok) {
    napi_call_function(env, undef, cb, 4, argv, NULL);
  }
  free(m);
}

static void cleanup_hook(void *arg);

static void stop_listener(listener_t *l) {
  if (l->hooked) {
    napi_remove_env_cleanup_hook(l->env, cleanup_hook, l);
    l->hooked = 0;
  }
  if (l->stopped) return;
  __atomic_store_n(&l->stopped, 1, __ATOMIC_RELEASE);
  if (l->running) {
    uint64_t one = 1;
    ssize_t w;
    do w = write(l->efd, &one, sizeof one);
    while (w < 0 && errno == EINTR);
    pthread_join(l->thread, NULL);
    l->running = 0;
  }
  if (l->tsfn != NULL) {
    napi_release_threadsafe_function(l->tsfn, napi_tsfn_abort);
    l->tsfn = NULL;
  }
  if (l->efd >= 0) close(l->efd);
  l->efd = -1;
  pthread_mutex_lock(&l->mu);
  clear_locked(l);
  pthread_mutex_unlock(&l->mu);
}

/* Node is tearing the environment down without stop(): join the thread before the thread-safe
 * function goes (this hook was registered after it, so it runs first). */
static void cleanup_hook(void *arg) {
  listener_t *l = arg;
  l->hooked = 0;
  stop_listener(l);
}

static void finalize_listener(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  listener_t *l = data;
  stop_listener(l);
  free_buffers(l);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

/* ---- argument helpers ---- */

static napi_value throw_err(napi_env env, const char *msg) {
  napi_throw_error(env, NULL, msg);
  return NULL;
}

static listener_t *get_listener(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &p) != napi_ok) return NULL;
  return p;
}

/* The one argument of stop/clear/stats: the handle, or NULL with an exception pending. */
static listener_t *only_handle(napi_env env, napi_callback_info info, const char *usage) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  listener_t *l = argc == 1 ? get_listener(env, argv[0]) : NULL;
  if (l == NULL) napi_throw_error(env, NULL, usage);
  return l;
}

static int get_buffer(napi_env env, napi_value v, void **data, size_t *len) {
  bool is = false;
  return napi_is_buffer(env, v, &is) == napi_ok && is && napi_get_buffer_info(env, v, data, len) == napi_ok;
}

/* open(fd, onMiss, maxEntries, maxBytes, queueMax) → handle */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < 5) return throw_err(env, "open(fd, onMiss, maxEntries, maxBytes, queueMax): missing arguments");
  int32_t fd;
  uint32_t max_entries, queue_max;
  int64_t max_bytes;
  if (napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) return throw_err(env, "open: fd must be a non-negative integer");
  if (napi_get_value_uint32(env, argv[2], &max_entries) != napi_ok || max_entries == 0) return throw_err(env, "open: maxEntries must be a positive integer");
  if (napi_get_value_int64(env, argv[3], &max_bytes) != napi_ok || max_bytes <= 0) return throw_err(env, "open: maxBytes must be a positive integer");
  if (napi_get_value_uint32(env, argv[4], &queue_max) != napi_ok || queue_max == 0) return throw_err(env, "open: queueMax must be a positive integer");
  int type = 0;
  socklen_t tl = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_DGRAM) return throw_err(env, "open: fd is not a UDP socket");

  listener_t *l = calloc(1, sizeof *l);
  if (l == NULL) return throw_err(env, "open: out of memory");
  l->fd = fd;
  l->efd = eventfd(0, EFD_CLOEXEC);
  l->max_entries = max_entries;
  l->max_bytes = (uint64_t)max_bytes;
  pthread_mutex_init(&l->mu, NULL);
  if (l->efd < 0 || !alloc_buffers(l)) {
    if (l->efd >= 0) close(l->efd);
    free_buffers(l);
    pthread_mutex_destroy(&l->mu);
    free(l);
    return throw_err(env, "open: out of memory or eventfd failed");
  }
  napi_value name;
  napi_create_string_utf8(env, "dns-fast", NAPI_AUTO_LENGTH, &name);
  if (napi_create_threadsafe_function(env, argv[1], NULL, name, queue_max, 1, NULL, NULL, NULL, call_js, &l->tsfn) != napi_ok) {
    close(l->efd);
    free_buffers(l);
    pthread_mutex_destroy(&l->mu);
    free(l);
    return throw_err(env, "open: onMiss must be a function");
  }
  napi_value handle;
  if (napi_create_external(env, l, finalize_listener, NULL, &handle) != napi_ok) {
    napi_release_threadsafe_function(l->tsfn, napi_tsfn_abort);
    close(l->efd);
    free_buffers(l);
    pthread_mutex_destroy(&l->mu);
    free(l);
    return throw_err(env, "open: cannot create the handle");
  }
  /* From here the finalizer owns l. */
  l->env = env;
  if (pthread_create(&l->thread, NULL, serve, l) != 0) {
    stop_listener(l);
    return throw_err(env, "open: cannot start the thread");
  }
  l->running = 1;
  if (napi_add_env_cleanup_hook(env, cleanup_hook, l) == napi_ok) l->hooked = 1;
  return handle;
}

/* stop(handle): joins the thread; idempotent. */
static napi_value js_stop(napi_env env, napi_callback_info info) {
  listener_t *l = only_handle(env, info, "stop(handle): not a handle");
  if (l == NULL) return NULL;
  stop_listener(l);
  return NULL;
}

/* reply(handle, sockaddr, query, reply, cacheable) → sent: sends JS's answer, caching it when asked. */
static napi_value js_reply(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  listener_t *l = argc == 5 ? get_listener(env, argv[0]) : NULL;
  void *sa, *q, *r;
  size_t salen, qlen, rlen;
  bool cacheable = false;
  if (l == NULL || !get_buffer(env, argv[1], &sa, &salen) || !get_buffer(env, argv[2], &q, &qlen) || !get_buffer(env, argv[3], &r, &rlen) ||
      napi_get_value_bool(env, argv[4], &cacheable) != napi_ok || salen > sizeof(struct sockaddr_storage) || salen < sizeof(sa_family_t)) {
    return throw_err(env, "reply(handle, sockaddr, query, reply, cacheable): bad arguments");
  }
  napi_value result;
  if (l->stopped) {
    napi_get_boolean(env, false, &result);
    return result;
  }
  struct sockaddr_storage dst;
  memset(&dst, 0, sizeof dst);
  memcpy(&dst, sa, salen);
  ssize_t s;
  do s = sendto(l->fd, r, rlen, MSG_DONTWAIT, (struct sockaddr *)&dst, (socklen_t)salen);
  while (s < 0 && errno == EINTR);
  if (s < 0) ADD(l->send_errors, 1);
  if (cacheable && qlen >= 12 && qlen <= SLOT && rlen <= SLOT && rlen >= 2) {
    static uint8_t key[KEY_MAX];
    size_t klen = make_key(key, &dst, q, qlen);
    uint32_t h = klen > 0 ? fnv1a(key, klen) : 0;
    entry_t *e = klen > 0 ? malloc(sizeof *e + klen + rlen) : NULL;
    if (e != NULL) {
      e->hash = h;
      e->klen = (uint32_t)klen;
      e->rlen = (uint32_t)rlen;
      memcpy(e->data, key, klen);
      memcpy(e->data + klen, r, rlen);
      pthread_mutex_lock(&l->mu);
      if (lookup(l, key, klen, h) != NULL) {
        free(e);
      } else {
        if (l->entries >= l->max_entries || l->bytes + klen + rlen > l->max_bytes) {
          clear_locked(l);
          ADD(l->clears, 1);
        }
        entry_t **b = &l->buckets[h & (BUCKETS - 1)];
        e->next = *b;
        *b = e;
        l->entries++;
        l->bytes += klen + rlen;
        ADD(l->installed, 1);
      }
      pthread_mutex_unlock(&l->mu);
    }
  }
  napi_get_boolean(env, s >= 0, &result);
  return result;
}

/* clear(handle): forget every cached reply (a new snapshot). */
static napi_value js_clear(napi_env env, napi_callback_info info) {
  listener_t *l = only_handle(env, info, "clear(handle): not a handle");
  if (l == NULL) return NULL;
  pthread_mutex_lock(&l->mu);
  clear_locked(l);
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

static void set_num(napi_env env, napi_value obj, const char *k, double v) {
  napi_value n;
  napi_create_double(env, v, &n);
  napi_set_named_property(env, obj, k, n);
}

/* stats(handle) → counters */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  listener_t *l = only_handle(env, info, "stats(handle): not a handle");
  if (l == NULL) return NULL;
  napi_value o;
  napi_create_object(env, &o);
  pthread_mutex_lock(&l->mu);
  double entries = l->entries, bytes = (double)l->bytes;
  pthread_mutex_unlock(&l->mu);
  set_num(env, o, "hits", (double)GET(l->hits));
  set_num(env, o, "misses", (double)GET(l->misses));
  set_num(env, o, "queueDrops", (double)GET(l->queue_drops));
  set_num(env, o, "ignored", (double)GET(l->ignored));
  set_num(env, o, "sendErrors", (double)GET(l->send_errors));
  set_num(env, o, "installed", (double)GET(l->installed));
  set_num(env, o, "clears", (double)GET(l->clears));
  set_num(env, o, "entries", entries);
  set_num(env, o, "bytes", bytes);
  return o;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default_jsproperty, NULL},
      {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default_jsproperty, NULL},
      {"reply", NULL, js_reply, NULL, NULL, NULL, napi_default_jsproperty, NULL},
      {"clear", NULL, js_clear, NULL, NULL, NULL, napi_default_jsproperty, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default_jsproperty, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(dns_fast, init)
